"""Model-backed policies (:mod:`search_r1_plugin.policy`): ``await policy(context_ids, max_tokens, stop)``.

* :class:`HFPolicy` — transformers ``generate`` (CPU or GPU), greedy by default, stop strings
  honoured by ``stop_strings``; requests are served one at a time on a worker thread.
* :class:`VLLMPolicy` — vLLM when installed: concurrent requests are coalesced into one
  ``LLM.generate`` call (token-in/token-out, per-request stop strings).
(:class:`search_r1_plugin.policy.TextPolicy` makes a policy of a function of text: tests, scripted readers.)

All of them return the sampled token ids unchanged; callers never re-tokenise model output.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from search_r1_plugin.coalescer import Coalescer
from search_r1_plugin.protocol import STOP_STRINGS


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Apply the chat template (as verl's agent loop does) and return plain token ids."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(out, "keys") and "input_ids" in out:
        out = out["input_ids"]
    return list(out)


class HFPolicy:
    def __init__(self, model_path: str, *, device: str | None = None, temperature: float = 0.0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.temperature = temperature
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-generate")

    def _generate(self, ids: list[int], max_tokens: int, stop: Sequence[str]) -> list[int]:
        torch = self.torch
        inp = torch.tensor([ids], device=self.device)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_tokens,
            stop_strings=list(stop),
            tokenizer=self.tokenizer,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature)
        else:
            kwargs.update(do_sample=False)
        with torch.no_grad():
            out = self.model.generate(inp, attention_mask=torch.ones_like(inp), **kwargs)
        gen = out[0, inp.shape[1] :].tolist()
        pad = self.tokenizer.pad_token_id
        while gen and pad is not None and gen[-1] == pad and pad != self.tokenizer.eos_token_id:
            gen.pop()
        return gen

    async def __call__(self, context_ids: list[int], max_tokens: int, stop: Sequence[str] = STOP_STRINGS):
        loop = asyncio.get_running_loop()
        ids = await loop.run_in_executor(self.executor, self._generate, list(context_ids), max_tokens, stop)
        return ids, None


class VLLMPolicy:
    """vLLM offline engine; concurrent calls within ``max_wait_ms`` become one batched ``generate``."""

    def __init__(
        self, model_path: str, *, temperature: float = 0.0, max_wait_ms: float = 20.0, max_batch: int = 1024, **engine_kwargs: Any
    ):
        from vllm import LLM

        self.llm = LLM(model=model_path, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.temperature = temperature
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm")
        self.batches = Coalescer(self._generate_batch, max_batch=max_batch, max_wait_s=max_wait_ms / 1000, one_at_a_time=True)

    def _run(self, batch):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids, _, _ in batch]
        params = [
            SamplingParams(max_tokens=n, temperature=self.temperature, stop=list(stop), include_stop_str_in_output=True)
            for _, n, stop in batch
        ]
        return [list(o.outputs[0].token_ids) for o in self.llm.generate(prompts, params, use_tqdm=False)]

    async def _generate_batch(self, batch: list[tuple[list[int], int, tuple[str, ...]]]) -> list[list[int]]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._run, batch)

    async def __call__(self, context_ids: list[int], max_tokens: int, stop: Sequence[str] = STOP_STRINGS):
        return await self.batches.submit((list(context_ids), max_tokens, tuple(stop))), None


def load_policy(model: str, backend: str = "auto", temperature: float = 0.0):
    """The policy serving ``model``: vLLM on a GPU machine with vLLM installed (``auto``), else HF."""
    if backend == "auto":
        try:
            import torch
            import vllm  # noqa: F401

            backend = "vllm" if torch.cuda.is_available() else "hf"
        except ImportError:
            backend = "hf"
    if backend == "vllm":
        return VLLMPolicy(model, temperature=temperature)
    if backend == "hf":
        return HFPolicy(model, temperature=temperature)
    raise ValueError(f"--backend must be auto, hf or vllm, got {backend!r}")
