"""One contract for whatever writes the model's turns: a *policy*.

    ids, logprobs = await policy(context_ids, max_tokens, stop)

``context_ids`` is the prompt plus the response so far (token ids), ``max_tokens`` caps this turn,
``stop`` lists the strings that end it; the policy returns the sampled ids (it may run a little past
a stop string; :func:`search_r1_plugin.rollout.run_trajectory` cuts) and their log-probs, or ``None``
when it has none. :func:`~search_r1_plugin.rollout.run_trajectory` drives any policy;
training reaches verl's server manager through :class:`~search_r1_plugin.agent_loop.SearchR1AgentLoop`,
evaluation uses the backends of :mod:`search_r1_plugin.evaluation.backends` (HF, vLLM), and
:class:`TextPolicy` turns a function of text into a policy (scripted readers, tests).

:class:`PolicyServer` is the one adapter the other way: it serves a policy behind verl's
``server_manager.generate`` contract, so verl's own ``AgentLoopWorker`` can run our loop with an HF
model or a scripted reader (demo, dry run, tests) and no inference engine.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Sequence


class Policy(Protocol):
    async def __call__(self, context_ids: list[int], max_tokens: int, stop: Sequence[str]) -> tuple[list[int], Optional[list[float]]]: ...


class TextPolicy:
    """``fn(context_text, stop) -> text`` as a policy; the text is tokenised once (it *is* the sample)."""

    def __init__(self, tokenizer: Any, fn: Callable[[str, Sequence[str]], str]) -> None:
        self.tokenizer = tokenizer
        self.fn = fn

    async def __call__(self, context_ids: list[int], max_tokens: int, stop: Sequence[str]):
        text = self.fn(self.tokenizer.decode(context_ids), stop)
        return self.tokenizer.encode(text, add_special_tokens=False)[:max_tokens], None


class PolicyServer:
    """A policy behind verl's ``LLMServerClient.generate(request_id, *, prompt_ids, sampling_params)``.

    Sampling parameters map onto the policy's arguments (``max_tokens``, ``stop``); a policy without
    log-probs gets distinct, position-dependent ones, so callers can check they are carried exactly.
    Every call is recorded in ``calls``.
    """

    def __init__(self, policy: Policy, logprob: float = -0.5) -> None:
        self.policy = policy
        self.logprob = logprob
        self.calls: list[dict[str, Any]] = []

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs: Any):
        from verl.workers.rollout.replica import TokenOutput

        max_tokens = int(sampling_params.get("max_tokens") or 10**9)
        ids, logprobs = await self.policy(list(prompt_ids), max_tokens, list(sampling_params.get("stop") or []))
        ids = list(ids)[:max_tokens]
        if logprobs is None:
            logprobs = [self.logprob - 0.001 * i for i in range(len(ids))]
        self.calls.append(
            {
                "request_id": request_id,
                "prompt_ids": list(prompt_ids),
                "sampling_params": dict(sampling_params),
                "output_ids": ids,
                "priority": kwargs.get("priority"),
            }
        )
        return TokenOutput(token_ids=ids, log_probs=list(logprobs)[: len(ids)], stop_reason="completed")
