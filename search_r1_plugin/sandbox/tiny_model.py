"""A tiny random Qwen2 checkpoint with a tokenizer trained on the spot.

verl and transformers load it like a real checkpoint (``save_pretrained``
layout, ChatML chat template, Qwen special tokens), so the agent loop, the
dataset and the evaluator run end to end without any download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

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


def build_tokenizer(out_dir: Path, extra_text: Iterable[str] = (), vocab_size: int = 1024):
    """Byte-level BPE trained on protocol text; saved as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
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
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_qwen2(out_dir: str | Path, seed: int = 0, extra_text: Iterable[str] = ()) -> Path:
    """Write tokenizer + a 2-layer random ``Qwen2ForCausalLM`` to ``out_dir`` and return it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir, extra_text)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
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
    model_dir: str | Path, demonstrations: list[Demonstration], steps: int = 300, lr: float = 3e-3, batch_size: int = 8, seed: int = 0
) -> dict[str, float]:
    """Supervised warm start of a checkpoint on protocol demonstrations, saved in place.

    A random tiny model never writes a tag, so every reward is 0 and every RL gradient vanishes;
    after a few hundred steps here it searches and answers in the protocol (with sampling noise),
    which gives RL tests and the CPU demo rewards that differ within a group. Loss on response
    segments only. Returns the first and last batch losses.
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
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
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
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.save_pretrained(model_dir)
    return {"first_loss": losses[0], "last_loss": losses[-1]}
