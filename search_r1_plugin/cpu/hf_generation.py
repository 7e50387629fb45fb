"""Batched token-in / token-out sampling with HF transformers: the engine behind rollout ``hf``.

vLLM's contract, kept here so verl's agent loops cannot tell the difference on the tokens:
whole sampled tokens are returned (the last one may reach past a stop string), the stop string
is kept in the output (``include_stop_str_in_output``), EOS is returned as a token and ends the
sequence, ``max_tokens`` caps the turn, temperature 0 is greedy. Log-probabilities are those of
the sampled token under ``softmax(logits / temperature)`` (raw logits when greedy) — what verl's
actor computes for the same tokens, so importance ratios and rollout-correction metrics compare
like with like; top-k / top-p shape the sampling only.

Requests that arrive together are decoded as one left-padded batch with a KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch


@dataclass
class SamplingRequest:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop: Sequence[str] = ()
    ignore_eos: bool = False
    seed: Optional[int] = None
    token_ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    finish_reason: Optional[str] = None

    @classmethod
    def from_params(cls, prompt_ids: Sequence[int], params: dict[str, Any], default_max_tokens: int) -> "SamplingRequest":
        """From verl/vLLM-style sampling params (unknown keys such as ``logprobs`` are ignored)."""
        max_tokens = params.get("max_tokens", params.get("max_new_tokens", default_max_tokens))
        temperature = float(params.get("temperature", 1.0) or 0.0)
        top_k = params.get("top_k", -1)
        stop = params.get("stop") or ()
        return cls(
            prompt_ids=list(prompt_ids),
            max_tokens=max(1, int(max_tokens)),
            temperature=temperature,
            top_p=float(params.get("top_p", 1.0) or 1.0),
            top_k=-1 if top_k is None else int(top_k),
            stop=[stop] if isinstance(stop, str) else list(stop),
            ignore_eos=bool(params.get("ignore_eos", False)),
            seed=params.get("seed"),
        )


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


class HFGenerator:
    """Decodes batches of :class:`SamplingRequest` with a causal LM (see module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, eos_token_ids: Sequence[int], max_model_len: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = set(int(t) for t in eos_token_ids)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.max_model_len = max_model_len

    def _stopped_by_string(self, req: SamplingRequest) -> bool:
        if not req.stop:
            return False
        # Only the tail can complete a stop string; decode a window wide enough for the longest one
        # (a byte-level token may carry a fraction of a character: up to 4 tokens per character).
        window = 4 * max(len(s) for s in req.stop) + 8
        tail = self.tokenizer.decode(req.token_ids[-window:], skip_special_tokens=False)
        return any(s in tail for s in req.stop)

    @torch.no_grad()
    def generate(self, requests: list[SamplingRequest]) -> list[SamplingRequest]:
        device = next(self.model.parameters()).device
        for req in requests:
            room = self.max_model_len - len(req.prompt_ids)
            if room < 1:
                raise ValueError(f"prompt of {len(req.prompt_ids)} tokens leaves no room within max_model_len {self.max_model_len}")
            req.max_tokens = min(req.max_tokens, room)
        n = len(requests)
        width = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(requests):  # left padding: every row's next token is at the end
            input_ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            attention[i, width - len(r.prompt_ids) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        generators = [torch.Generator().manual_seed(int(r.seed)) if r.seed is not None else None for r in requests]
        temps = torch.tensor([r.temperature for r in requests], dtype=torch.float32)
        active = [True] * n
        past = None
        step_ids = input_ids
        for _ in range(max(r.max_tokens for r in requests)):
            positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
            out = self.model(input_ids=step_ids, attention_mask=attention, position_ids=positions, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float().cpu()
            greedy = temps <= 0
            scaled = logits / torch.where(greedy, torch.ones_like(temps), temps)[:, None]
            logprobs = torch.log_softmax(scaled, dim=-1)
            next_ids = torch.empty(n, dtype=torch.long)
            for i, r in enumerate(requests):
                if not active[i]:
                    next_ids[i] = self.pad_token_id
                    continue
                if greedy[i]:
                    next_ids[i] = int(torch.argmax(logits[i]))
                else:
                    probs = torch.softmax(_filter_top_k_top_p(scaled[i], r.top_k, r.top_p), dim=-1)
                    next_ids[i] = int(torch.multinomial(probs, 1, generator=generators[i]))
                tok = int(next_ids[i])
                r.token_ids.append(tok)
                r.log_probs.append(float(logprobs[i, tok]))
                if tok in self.eos_token_ids and not r.ignore_eos:
                    r.finish_reason = "stop"
                elif self._stopped_by_string(r):
                    r.finish_reason = "stop"
                elif len(r.token_ids) >= r.max_tokens:
                    r.finish_reason = "length"
                if r.finish_reason:
                    active[i] = False
            if not any(active):
                break
            step_ids = next_ids[:, None].to(device)
            attention = torch.cat([attention, torch.tensor(active, dtype=torch.long)[:, None].to(device)], dim=-1)
        return requests
