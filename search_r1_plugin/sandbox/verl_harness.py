"""Drive verl's real ``AgentLoopWorker`` + ``RewardLoopWorker`` without Ray or GPUs.

Used by the tests, the demo and the dry run: compose the trainer config with
:func:`search_r1_plugin.presets.compose`, serve any policy with
:class:`search_r1_plugin.policy.PolicyServer` (a scripted reader, HF ``generate`` on a tiny model),
and call ``generate_sequences`` to get the padded batch verl would train on
(``responses``, ``response_mask``, ``rm_scores``…).
"""

from __future__ import annotations

import uuid
from typing import Any, Sequence

import numpy as np


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
        "priority": np.arange(n, dtype=np.int64),  # what verl's AgentLoopManager adds before dispatch
    }
    return DataProto.from_dict(non_tensors=non_tensor, meta_info={"validate": validate, "global_steps": 0})
