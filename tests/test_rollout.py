"""The trajectory algorithm with a scripted policy and an in-memory retriever (no verl, no HTTP)."""

import asyncio
import random

import pytest

from search_r1_plugin.protocol import INVALID_ACTION_MESSAGE
from search_r1_plugin.rollout import ObservationEncoder, cut_at_stop, run_trajectory
from search_r1_plugin.settings import ConfigError, SearchR1Config

DOCS = [{"document": {"id": "0", "contents": '"Paris"\nParis is the capital of France.'}, "score": 1.0}]


class Script:
    """A policy that replays texts turn by turn (tokenised with the tiny tokenizer)."""

    def __init__(self, tokenizer, turns):
        self.tok, self.turns, self.i = tokenizer, list(turns), 0
        self.max_tokens_seen = []

    async def __call__(self, context_ids, max_tokens, stop):
        self.max_tokens_seen.append(max_tokens)
        text = self.turns[min(self.i, len(self.turns) - 1)]
        self.i += 1
        ids = self.tok.encode(text, add_special_tokens=False)
        return ids, [-0.1 * (k + 1) for k in range(len(ids))]


async def fake_retrieve(query, k):
    return DOCS[:k]


def run(tok, turns, response_length=2000, **cfg):
    script = Script(tok, turns)
    traj = asyncio.run(run_trajectory([1, 2, 3], script, fake_retrieve, tok, SearchR1Config(**cfg), response_length))
    return traj, script


def segments(tok, traj):
    """(text, is_model, mask) runs of the response."""
    out, start = [], 0
    for i in range(1, len(traj.response_ids) + 1):
        if i == len(traj.response_ids) or traj.is_model[i] != traj.is_model[start]:
            out.append((tok.decode(traj.response_ids[start:i]), traj.is_model[start], set(traj.response_mask[start:i])))
            start = i
    return out


def test_search_then_answer_masks_token_by_token(tiny_tokenizer):
    tok = tiny_tokenizer
    t1 = "<think>need</think><search> capital of France </search>"
    t2 = "<think>found</think><answer> Paris </answer>"
    traj, _ = run(tok, [t1, t2])
    segs = segments(tok, traj)
    assert [s[0] for s in segs] == [t1, '\n\n<information>Doc 1(Title: "Paris") Paris is the capital of France.</information>\n\n', t2]
    assert [(s[1], s[2]) for s in segs] == [(True, {1}), (False, {0}), (True, {1})]
    assert traj.searches == 1 and traj.answered and traj.turns == 2
    assert traj.queries == ["capital of France"]
    # model logprobs carried exactly, 0.0 on injected tokens
    n1 = len(tok.encode(t1, add_special_tokens=False))
    assert traj.response_logprobs[:n1] == [-0.1 * (k + 1) for k in range(n1)]
    assert all(lp == 0.0 for lp, m in zip(traj.response_logprobs, traj.is_model) if not m)


def test_no_masking_ablation_flips_only_observation_mask(tiny_tokenizer):
    turns = ["<search> q </search>", "<answer> Paris </answer>"]
    masked, _ = run(tiny_tokenizer, turns)
    unmasked, _ = run(tiny_tokenizer, turns, mask_retrieved_tokens=False)
    assert masked.response_ids == unmasked.response_ids
    assert set(unmasked.response_mask) == {1}
    assert [m for m, p in zip(masked.response_mask, masked.is_model) if not p] and all(
        m == 0 for m, p in zip(masked.response_mask, masked.is_model) if not p
    )


def test_invalid_action_message_injected(tiny_tokenizer):
    traj, _ = run(tiny_tokenizer, ["I think the answer is Paris", "<answer>Paris</answer>"])
    segs = segments(tiny_tokenizer, traj)
    assert segs[1] == (INVALID_ACTION_MESSAGE, False, {0})
    assert traj.invalid_actions == 1 and traj.valid_actions == 1


def test_generation_past_stop_is_cut(tiny_tokenizer):
    traj, _ = run(tiny_tokenizer, ["<search> q </search> and then I keep talking <answer>x</answer>", "<answer>y</answer>"])
    assert tiny_tokenizer.decode(traj.response_ids).startswith("<search> q </search>\n\n<information>")
    assert traj.answered and traj.searches == 1


def test_max_turns_then_final_turn_without_retrieval(tiny_tokenizer):
    traj, script = run(tiny_tokenizer, ["<search> q </search>"], max_turns=2)
    assert traj.turns == 3 and traj.searches == 2 and not traj.answered
    assert traj.is_model[-1]  # final turn appended no observation


def test_observation_truncated_keeps_closing_tag(tiny_tokenizer):
    long_docs = [{"document": {"id": "0", "contents": '"T"\n' + "word " * 400}}]

    async def retrieve(q, k):
        return long_docs

    cfg = SearchR1Config(max_obs_length=40)
    script = Script(tiny_tokenizer, ["<search> q </search>", "<answer>a</answer>"])
    traj = asyncio.run(run_trajectory([1], script, retrieve, tiny_tokenizer, cfg, 2000))
    obs = [i for i, m in zip(traj.response_ids, traj.is_model) if not m]
    assert len(obs) == 40 and traj.obs_truncations == 1
    assert tiny_tokenizer.decode(obs).endswith("</information>\n\n")


def test_response_budget_and_ends_on_model_token(tiny_tokenizer):
    for budget in range(1, 120, 7):
        traj, script = run(tiny_tokenizer, ["<search> a query </search>"], response_length=budget, max_turn_tokens=30)
        assert len(traj.response_ids) <= budget
        assert not traj.response_ids or traj.is_model[-1]
        assert all(m <= budget for m in script.max_tokens_seen)


def test_a_response_that_reaches_the_budget_counts_as_cut_by_it(tiny_tokenizer):
    """``budget_exhausted`` (the health guard's clip rule) means the response is as long as the budget allows,
    however the loop ended; an answer that fits is not cut."""
    answer = "<think> ok </think><answer> Paris </answer>"
    need = len(tiny_tokenizer.encode(answer, add_special_tokens=False))
    cut, _ = run(tiny_tokenizer, [answer], response_length=need - 2, max_turns=0, max_turn_tokens=200)
    fits, _ = run(tiny_tokenizer, [answer], response_length=need + 5, max_turns=0, max_turn_tokens=200)
    assert cut.budget_exhausted and len(cut.response_ids) == need - 2
    assert not fits.budget_exhausted and fits.answered


def test_cut_at_stop_minimal_prefix(tiny_tokenizer):
    ids = tiny_tokenizer.encode("<search>q</search> more text", add_special_tokens=False)
    n = cut_at_stop(ids, tiny_tokenizer.decode)
    assert "</search>" in tiny_tokenizer.decode(ids[:n]) and "</search>" not in tiny_tokenizer.decode(ids[: n - 1])


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="search_r1.topk"):
        SearchR1Config(topk=0)
    with pytest.raises(ConfigError, match="search_r1.retriever_url"):
        SearchR1Config(retriever_url="localhost:8000")
    with pytest.raises(ConfigError, match="unknown search_r1 key"):
        SearchR1Config.from_mapping({"top_k": 3})
    with pytest.raises(ConfigError, match="mask_retrieved_tokens"):
        SearchR1Config(mask_retrieved_tokens="yes")


FRAGMENTS = [
    "<think>",
    "</think>",
    "<search>",
    "</search>",
    "<answer>",
    "</answer>",
    "<information>",
    "</information>",
    " who ",
    " Paris ",
    "\n",
    "?",
    "é",
    "東京",
    " ",
    "<",
    ">",
    "/",
    "search",
    "answer",
    "<|im_end|>",
    "<|endoftext|>",
]


def test_property_random_outputs_never_break_invariants(tiny_tokenizer):
    """>= 10,000 random / malformed trajectories: no crash, every invariant holds."""
    tok = tiny_tokenizer
    rng = random.Random(1234)
    vocab = len(tok)
    enc = ObservationEncoder(tok)

    async def gen(context_ids, max_tokens, stop):
        if rng.random() < 0.5:
            text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 30)))
            ids = tok.encode(text, add_special_tokens=False)
        else:
            ids = [rng.randrange(vocab) for _ in range(rng.randint(0, 60))]
        ids = ids[: rng.choice([max_tokens, max_tokens + 5])]  # sometimes the engine overshoots
        return ids, ([-1.0] * len(ids) if rng.random() < 0.9 else None)

    async def retrieve(q, k):
        return [{"document": {"id": str(i), "contents": '"T"\n' + "x " * rng.randint(0, 300)}} for i in range(k)]

    async def many():
        n = 0
        for _ in range(10_000):
            cfg = SearchR1Config(
                max_turns=rng.randint(0, 4),
                max_turn_tokens=rng.randint(1, 60),
                max_obs_length=rng.randint(8, 80),
                mask_retrieved_tokens=rng.random() < 0.8,
            )
            budget = rng.randint(1, 300)
            t = await run_trajectory([5, 6], gen, retrieve, tok, cfg, budget, obs_encoder=enc)
            L = len(t.response_ids)
            assert L == len(t.response_mask) == len(t.response_logprobs) == len(t.is_model) <= budget
            assert not L or t.is_model[-1]
            assert t.turns <= cfg.max_turns + 1 and t.searches <= cfg.max_turns
            injected = [m for m, p in zip(t.response_mask, t.is_model) if not p]
            assert all(m == (0 if cfg.mask_retrieved_tokens else 1) for m in injected)
            assert all(m == 1 for m, p in zip(t.response_mask, t.is_model) if p)
            n += 1
        return n

    assert asyncio.run(many()) == 10_000


# Turns where the original's cut (first </search> if any, else first </answer>) and the earliest-tag cut
# differ: (generated text, original: (kept text, action, query/answer), earliest: (kept text, action)).
TURN_CUT_CASES = [
    (
        '</answer><search>"quoted" 1997 東京\r\n</search> tail',
        ('</answer><search>"quoted" 1997 東京\r\n</search>', "search", '"quoted" 1997 東京'),
        ("</answer>", None),
    ),
    (
        "<think>no </answer> yet</think><search> \n the\r\n</search> tail",
        ("<think>no </answer> yet</think><search> \n the\r\n</search>", "search", "the"),
        ("<think>no </answer>", None),
    ),
    (
        "<answer>Zürich\u3000</answer><search> where </search> tail",
        ("<answer>Zürich\u3000</answer><search> where </search>", "answer", "Zürich"),
        ("<answer>Zürich\u3000</answer>", "answer"),
    ),
]


@pytest.mark.parametrize("text, original, earliest", TURN_CUT_CASES)
def test_turn_cut_original_and_earliest(tiny_tokenizer, text, original, earliest):
    tok = tiny_tokenizer
    for mode, (kept, kind, *content) in (("original", original), ("earliest", earliest)):
        traj, _ = run(tok, [text, "<answer> done </answer>"], turn_cut=mode)
        first = segments(tok, traj)[0][0]
        assert first == kept, mode
        if kind == "search":
            assert traj.queries == content and traj.searches == 1
        elif kind == "answer":
            assert traj.answered and traj.turns == 1
        else:  # invalid: the message follows the kept text
            assert segments(tok, traj)[1][0] == INVALID_ACTION_MESSAGE and traj.invalid_actions == 1


def test_original_turn_cut_drops_eos_of_an_action_less_turn(tiny_tokenizer):
    """As the original's decode-without-special-tokens + re-encode did; kept tokens and logprobs unchanged."""
    tok = tiny_tokenizer
    eos = tok.eos_token
    traj, _ = run(tok, [f"<think> hmm </think>{eos}", "<answer> x </answer>"], turn_cut="original")
    segs = segments(tok, traj)
    assert segs[0][0] == "<think> hmm </think>" and segs[1][0] == INVALID_ACTION_MESSAGE
    n = len(tok.encode("<think> hmm </think>", add_special_tokens=False))
    assert traj.response_logprobs[:n] == pytest.approx([-0.1 * (k + 1) for k in range(n)])
    traj, _ = run(tok, [f"<think> hmm </think>{eos}", "<answer> x </answer>"], turn_cut="earliest")
    assert segments(tok, traj)[0][0] == f"<think> hmm </think>{eos}"  # today's behaviour keeps it


def test_a_turn_of_only_eos_keeps_it_so_the_response_is_never_empty(tiny_tokenizer):
    """A barely trained model may end its first turn at once; dropping that EOS (the rule above) left an empty
    response, on which verl's reward placement fails the whole step (seen in the learning demo's PPO arm)."""
    tok = tiny_tokenizer
    for mode in ("original", "earliest"):
        traj, _ = run(tok, [tok.eos_token, tok.eos_token, tok.eos_token], turn_cut=mode)
        assert traj.response_ids and traj.response_mask[-1] == 1 and traj.response_ids[-1] == tok.eos_token_id
        assert traj.invalid_actions >= 1


def test_turn_cut_is_validated():
    with pytest.raises(ConfigError, match="search_r1.turn_cut"):
        SearchR1Config(turn_cut="latest")
