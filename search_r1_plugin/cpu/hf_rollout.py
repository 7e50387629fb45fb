"""verl rollout ``hf``: a token-in / token-out HF transformers server for verl's agent loops on CPU.

Three pieces, the same split as verl's vLLM rollout:

* :class:`HFRolloutServer` — a Ray actor holding the model; ``generate`` has the signature of
  ``vLLMHttpServer.generate`` and returns verl's ``TokenOutput`` (with ``global_steps`` in
  ``extra_fields``, like vLLM). Concurrent requests are batched (:mod:`.hf_generation`).
* :class:`HFReplica` — the ``RolloutReplica`` registered as ``hf`` in verl's
  ``RolloutReplicaRegistry``; it starts one server per replica next to the trainer workers.
* :class:`HFServerAdapter` — the ``BaseRollout`` that lives in the trainer worker and pushes the
  actor's weights into the server after every update (``update_weights``).

verl picks the worker-side class from a private dict with no ``register()``
(``verl.workers.rollout.base._ROLLOUT_REGISTRY``); :func:`register` adds ``("hf", "async")``
there — ``docs/upstream.md`` #2 is the hook that would replace it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Generator, Optional

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput

from search_r1_plugin.coalescer import Coalescer
from search_r1_plugin.cpu.hf_generation import HFGenerator, SamplingRequest
from search_r1_plugin.cpu.lora_weights import adapted_weights, base_names, is_adapter_update, merged_weights

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf"
SERVER_PREFIX = "hf_rollout_server"


def server_actor_name(replica_rank: int) -> str:
    return f"{SERVER_PREFIX}_{replica_rank}"


class HFRolloutServer:
    """Ray actor: one HF causal LM serving verl's ``generate`` (see module docstring)."""

    def __init__(self, config: Any, model_config: Any, replica_rank: int = 0, max_batch: int = 64, max_wait_s: float = 0.005) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig

        self.config = omega_conf_to_dataclass(config)
        config = self.config
        self.replica_rank = replica_rank
        model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        path = model_config.local_path
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model_config.trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, attn_implementation="sdpa", trust_remote_code=model_config.trust_remote_code
        ).eval()
        eos = self.model.generation_config.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.append(self.tokenizer.eos_token_id)
        max_len = int(getattr(config, "max_model_len", None) or (config.prompt_length + config.response_length))
        self.generator = HFGenerator(self.model, self.tokenizer, eos_ids, max_len)
        self.default_max_tokens = int(config.response_length)
        self.global_steps: Optional[int] = None
        # one model, one batch at a time: what arrives while a batch decodes makes up the next one
        self.batches = Coalescer(self._decode, max_batch=max_batch, max_wait_s=max_wait_s, one_at_a_time=True)
        self.weight_versions = 0
        self.lora_base: dict[str, torch.Tensor] = {}  # un-adapted weights of LoRA-adapted layers (lora_weights)
        self.lora_announced = False

    # --- generation -------------------------------------------------------------------------
    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str, **_: Any) -> TokenOutput:
        req = SamplingRequest.from_params(prompt_ids, dict(sampling_params), self.default_max_tokens)
        req = await self.batches.submit(req)
        return TokenOutput(
            token_ids=req.token_ids, log_probs=req.log_probs, stop_reason="completed", extra_fields={"global_steps": self.global_steps}
        )

    async def _decode(self, requests: list[SamplingRequest]) -> list[SamplingRequest]:
        """One batch, decoded together in a thread; a batch that fails fails its own requests, never the server."""
        try:
            return await asyncio.to_thread(self.generator.generate, requests)
        except Exception:
            logger.exception("hf rollout batch failed")
            raise

    # --- weights ----------------------------------------------------------------------------
    def update_weights(
        self, state: dict[str, torch.Tensor], global_steps: Optional[int] = None, peft_config: Optional[dict[str, Any]] = None
    ) -> int:
        """Load the actor's HF-named weights, or LoRA adapters over the base weights (``peft_config``,
        :mod:`.lora_weights`); returns how many tensors were written."""
        own = self.model.state_dict()
        if peft_config is not None:
            if is_adapter_update(state):
                for name in adapted_weights(state):
                    if name in own and name not in self.lora_base:  # the un-adapted weight, kept before the first merge
                        self.lora_base[name] = own[name].detach().clone()
                state = merged_weights(state, self.lora_base, peft_config)
                if not self.lora_announced:  # once, so a run's log says the adapters arrived
                    self.lora_announced = True
                    print(f"hf rollout: LoRA adapters applied to {len(state)} weights (rank {peft_config.get('r')})", flush=True)
            else:
                state = base_names(state)
                self.lora_base.update({k: v.detach().clone() for k, v in state.items() if k in self.lora_base})
        unknown = sorted(set(state) - set(own))
        if unknown:
            raise KeyError(f"weights not in the rollout model: {unknown[:5]}")
        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor.to(own[name].dtype))
        self.weight_versions += 1
        if global_steps is not None:
            self.global_steps = global_steps
        return len(state)

    def compute_log_probs(self, token_ids: list[int], response_start: int, temperature: float = 1.0) -> list[float]:
        """Log-probs of ``token_ids[response_start:]`` under the current weights (for checks)."""
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([token_ids])).logits[0].float()
        logp = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
        return [float(logp[i - 1, token_ids[i]]) for i in range(response_start, len(token_ids))]

    def get_weight_versions(self) -> int:
        return self.weight_versions

    # --- what verl's replica and trainer call on every server (nothing to free on CPU) -----------
    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def wake_up(self, tags: Optional[list[str]] = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def wait_for_requests_to_drain(self) -> None:
        return None

    async def abort_all_requests(self, reject_request: bool = False, **_: Any) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **_: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


class HFReplica(RolloutReplica):
    """One :class:`HFRolloutServer` per replica, on the node of its first trainer worker."""

    async def launch_servers(self) -> None:
        node_id = None
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id())
        options: dict[str, Any] = {
            "name": server_actor_name(self.replica_rank),
            "max_concurrency": self.max_concurrency,
            "num_cpus": 0,
            "runtime_env": {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("VERL_")}},
        }
        if node_id is not None:
            options["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        server = (
            ray.remote(HFRolloutServer)
            .options(**options)
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        )
        await server.get_weight_versions.remote()  # wait until the model is loaded
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"hf-replica-{self.replica_rank}"

    def rollout_worker_use_gpu(self) -> bool:
        return False


class HFServerAdapter(BaseRollout):
    """Worker-side half of rollout ``hf``: sends the actor's weights to the replica's server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1, **_: Any) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        world = self.config.tensor_model_parallel_size * self.config.data_parallel_size * self.config.pipeline_model_parallel_size
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.is_sender = rank % world == 0
        self.server_handle = None

    def _server(self):
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_actor_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        global_steps: Optional[int] = None,
        wire_format: str = "named_tensors",
        peft_config: Optional[dict[str, Any]] = None,
        **_: Any,
    ):
        if wire_format != "named_tensors":
            raise ValueError(f"rollout hf supports wire_format='named_tensors' only; got {wire_format!r}")
        # Every rank walks the generator (it may gather shards collectively); the replica's first rank sends.
        state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights}
        if self.is_sender:
            await self._server().update_weights.remote(state, global_steps, peft_config)


def register() -> None:
    """Make ``actor_rollout_ref.rollout.name=hf`` resolve on both sides (replica and worker)."""
    from verl.workers.rollout import base as rollout_base

    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: HFReplica)
    # No public hook for the worker-side class in verl 0.9.1 (docs/upstream.md #2).
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{HFServerAdapter.__module__}.HFServerAdapter"
