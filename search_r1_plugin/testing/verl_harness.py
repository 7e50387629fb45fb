"""Drive verl's real ``AgentLoopWorker`` + ``RewardLoopWorker`` without Ray or GPUs.

Used by the tests and by ``recipes/dry_run.py``: compose the trainer config from
verl's ``ppo_trainer`` + one of our presets, plug in any object with verl's
``generate(request_id, *, prompt_ids, sampling_params)`` contract (a scripted
policy, HF ``generate`` on a tiny model), and call ``generate_sequences`` to get
the padded batch verl would train on (``responses``, ``response_mask``, ``rm_scores``…).
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Sequence

import numpy as np

PRESET_SEARCHPATH = "pkg://search_r1_plugin.config"


def compose_trainer_config(preset: str = "ppo", overrides: Sequence[str] = ()) -> Any:
    """``ppo_trainer`` + ``+search_r1=<preset>`` + overrides, as ``main_ppo`` would compose it."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("search_r1_plugin.config", version_base=None):
        return compose("search_r1_trainer", overrides=[f"+search_r1={preset}", *overrides])


class LocalRewardHandle:
    """Looks like a Ray actor handle of ``RewardLoopWorker`` (``compute_score.remote``)."""

    def __init__(self, config: Any) -> None:
        from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

        self.worker = RewardLoopWorker(config)

        class _Remote:
            remote = self.worker.compute_score

        self.compute_score = _Remote()


def make_agent_loop_worker(config: Any, llm_client: Any, with_reward: bool = True) -> Any:
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    handles = [LocalRewardHandle(config)] if with_reward else None
    return AgentLoopWorker(config, llm_client, teacher_client=None, reward_loop_worker_handles=handles)


def run_agent_loop_batch(config: Any, llm_client: Any, rows: Sequence[dict[str, Any]], validate: bool = False) -> Any:
    """``generate_sequences`` on ``rows`` in a fresh event loop; verl's workers bind the running loop
    at construction, so they are built inside it, and the shared retrieval sessions are closed after."""
    import asyncio

    from search_r1_plugin.retrieval_client import close_shared_clients

    async def go() -> Any:
        worker = make_agent_loop_worker(config, llm_client)
        try:
            return await worker.generate_sequences(make_batch(rows, validate=validate))
        finally:
            await close_shared_clients()

    return asyncio.run(go())


def make_batch(rows: Sequence[dict[str, Any]], agent_name: str = "search_r1", validate: bool = False) -> Any:
    """A ``DataProto`` with the non-tensor columns ``RLHFDataset`` produces for our parquet rows."""
    from verl import DataProto

    n = len(rows)

    def col(values: list[Any]) -> np.ndarray:
        arr = np.empty(n, dtype=object)
        arr[:] = values
        return arr

    non_tensor = {
        "raw_prompt": col([list(r["prompt"]) for r in rows]),
        "data_source": col([r.get("data_source", "nq") for r in rows]),
        "reward_model": col([r["reward_model"] for r in rows]),
        "extra_info": col([dict(r.get("extra_info", {})) for r in rows]),
        "index": col([r.get("extra_info", {}).get("index", i) for i, r in enumerate(rows)]),
        "uid": col([str(uuid.uuid4()) for _ in rows]),
        "agent_name": col([agent_name] * n),
    }
    return DataProto.from_dict(non_tensors=non_tensor, meta_info={"validate": validate, "global_steps": 0})


class FunctionLLM:
    """verl ``LLMServerClient`` stand-in backed by ``policy(prompt_ids, sampling_params) -> ids``."""

    def __init__(self, policy: Callable[[list[int], dict[str, Any]], list[int]], logprob: float = -0.5) -> None:
        self.policy = policy
        self.logprob = logprob
        self.calls: list[dict[str, Any]] = []

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **_: Any):
        from verl.workers.rollout.replica import TokenOutput

        ids = list(self.policy(list(prompt_ids), sampling_params))[: sampling_params.get("max_tokens", 10**9)]
        self.calls.append({"request_id": request_id, "prompt_ids": list(prompt_ids),
                           "sampling_params": dict(sampling_params), "output_ids": ids})
        # Distinct, position-dependent logprobs let tests check they are carried through exactly.
        return TokenOutput(token_ids=ids, log_probs=[self.logprob - 0.001 * i for i in range(len(ids))], stop_reason="completed")
