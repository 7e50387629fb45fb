"""A tiny random Qwen2 checkpoint with a tokenizer trained on the spot.

verl and transformers load it like a real checkpoint (``save_pretrained``
layout, ChatML chat template, Qwen special tokens), so the agent loop, the
dataset and the evaluator run end to end without any download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _training_text() -> list[str]:
    from search_r1_plugin.protocol import INVALID_ACTION_MESSAGE, PROMPT_TEMPLATE

    words = (
        "Doc Title information search answer think the of a in is was who what where when which "
        "capital founded river city country born year mountain"
    ).split()
    lines = [
        PROMPT_TEMPLATE,
        INVALID_ACTION_MESSAGE,
        "<think> </think> <search> </search> <answer> </answer>",
        '<information> </information> Doc 1(Title: "x") text',
    ]
    lines += [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    return lines * 20


def build_tokenizer(out_dir: Path, extra_text: Iterable[str] = (), vocab_size: int = 1024, whole_words: Iterable[str] = ()):
    """Byte-level BPE trained on protocol text; saved as a ``PreTrainedTokenizerFast``.

    ``whole_words`` (entity names) become one token each wherever they stand as a word, so copying a
    name from a passage is choosing one token (the learning demo's world is built that way)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(_training_text()) + list(extra_text), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    words = list(whole_words)
    if words:
        fast.add_tokens([AddedToken(w, single_word=True, normalized=False) for w in words])
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_qwen2(
    out_dir: str | Path,
    seed: int = 0,
    extra_text: Iterable[str] = (),
    *,
    whole_words: Iterable[str] = (),
    hidden_size: int = 64,
    num_layers: int = 2,
    num_key_value_heads: int = 2,
    tokenizer: Any = None,
) -> Path:
    """Write tokenizer + a small random ``Qwen2ForCausalLM`` (2 layers of 64 by default) to ``out_dir``.

    The tokenizer is trained here unless one is given (e.g. Qwen2.5's real one, :mod:`.qwen_vocab`)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = build_tokenizer(out_dir, extra_text, whole_words=whole_words)
    else:
        tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    words = list(whole_words)
    if words:
        # Names start as one shared direction plus their own noise: "a name" is one feature from step 0, so
        # attending to and copying a name is easy to learn, while each name stays its own token.
        ids = tokenizer.convert_tokens_to_ids(words)
        with torch.no_grad():
            emb = model.get_input_embeddings().weight
            common = torch.randn(hidden_size) * emb.std()
            emb[ids] = (common + emb[ids]) / 2**0.5
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    return out_dir


# A demonstration: the user prompt and the response as (text, trained) segments; injected text is
# context only, as in RL where it is masked out of the loss.
Demonstration = tuple[str, list[tuple[str, bool]]]


def protocol_demonstrations(qa: Iterable[tuple[str, str]]) -> list[Demonstration]:
    """Search-R1-format demonstrations for :func:`warm_start`.

    Each question gets a search turn and, after a (made-up, untrained) ``<information>`` block, an
    answer turn, so a warm-started model searches and answers in the protocol's tags.
    """
    from search_r1_plugin.protocol import make_messages

    demos: list[Demonstration] = []
    for question, answer in qa:
        prompt = make_messages(question)[0]["content"]
        search = (f"<think> I need to search. </think>\n<search> {question.rstrip('?')} </search>", True)
        info = (f'\n\n<information>Doc 1(Title: "{answer}") {answer} is the answer.</information>\n\n', False)
        final = (f"<think> I found it. </think>\n<answer> {answer} </answer>", True)
        demos.append((prompt, [search]))
        demos.append((prompt, [search, info, final]))
    return demos


def warm_start(
    model_dir: str | Path,
    demonstrations: list[Demonstration],
    steps: int = 300,
    lr: float = 3e-3,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
    token_weights: Mapping[int, float] | None = None,
) -> dict[str, float]:
    """Supervised warm start of a checkpoint on protocol demonstrations, saved in place.

    A random tiny model never writes a tag, so every reward is 0 and every RL gradient vanishes;
    after a few hundred steps here it searches and answers in the protocol (with sampling noise),
    which gives RL tests and the CPU demo rewards that differ within a group. Loss on response
    segments only, averaged over tokens weighted by ``token_weights`` (token id → weight, default 1):
    the learning demo weights name tokens up, since copying a name is what the format needs most and
    they are a few tokens among many. Returns the first and last batch losses.
    """
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    examples = []
    for prompt, segments in demonstrations:
        p_ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        r_ids, r_labels = [], []
        for text, trained in segments:
            ids = tokenizer.encode(text, add_special_tokens=False)
            r_ids += ids
            r_labels += ids if trained else [-100] * len(ids)
        examples.append((list(p_ids), r_ids + [tokenizer.eos_token_id], r_labels + [tokenizer.eos_token_id]))
    rng = random.Random(seed)
    torch.manual_seed(seed)
    weight_table = None
    if token_weights:  # token id -> loss weight, looked up in one indexing op per batch
        weight_table = torch.ones(model.get_input_embeddings().weight.shape[0])
        for token, w in token_weights.items():
            weight_table[token] = w
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    # cosine decay to 10 % of lr: the last steps settle instead of bouncing at the peak rate
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr / 10)
    model.train()
    losses = []
    from tqdm import tqdm

    for _ in tqdm(range(steps), desc="warm start", unit="step", disable=not progress, mininterval=10):
        batch = rng.sample(examples, min(batch_size, len(examples)))
        width = max(len(p) + len(r) for p, r, _ in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, r, lab) in enumerate(batch):
            seq = p + r
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(p) : len(seq)] = torch.tensor(lab)
            attn[i, : len(seq)] = 1
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        target = labels[:, 1:]
        per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
        weights = (target != -100).float()
        if weight_table is not None:
            weights = weights * weight_table[target.clamp(min=0)]
        loss = (per_token * weights).sum() / weights.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.save_pretrained(model_dir)
    return {"first_loss": losses[0], "last_loss": losses[-1]}
