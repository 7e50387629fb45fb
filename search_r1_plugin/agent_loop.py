"""verl agent loop ``search_r1``: the Search-R1 rollout inside stock verl.

Select it with ``actor_rollout_ref.rollout.agent.default_agent_loop=search_r1``
(our presets do) or a dataset column ``agent_name=search_r1``. verl makes one
instance per trajectory, so ``__init__`` only reads settings; the retrieval
client and the observation tokens are cached per process.

Settings come from the trainer config's ``search_r1:`` block (see
:class:`~search_r1_plugin.settings.SearchR1Config`); kwargs given in an
agent-loop YAML (``rollout.agent.agent_loop_config_path``) override them.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register
from verl.utils.profiler import simple_timer

from search_r1_plugin.retrieval_client import client_from_config
from search_r1_plugin.retrieval_record import Replay
from search_r1_plugin.reward import MODEL_TEXT_KEY
from search_r1_plugin.rollout import ObservationEncoder, run_trajectory
from search_r1_plugin.settings import SearchR1Config, check_rollout_logprobs

_CONFIG_FIELDS = set(SearchR1Config.__dataclass_fields__)
# verl builds one agent loop per trajectory; what depends only on the worker's tokenizer or trainer
# config is built once per process (keyed by object identity, the object kept to rule out id reuse).
_ENCODERS: dict[int, tuple[Any, ObservationEncoder]] = {}
_CONFIGS: dict[tuple, tuple[Any, SearchR1Config]] = {}


def _observation_encoder(tokenizer: Any) -> ObservationEncoder:
    hit = _ENCODERS.get(id(tokenizer))
    if hit is None or hit[0] is not tokenizer:
        hit = _ENCODERS[id(tokenizer)] = (tokenizer, ObservationEncoder(tokenizer))
    return hit[1]


def config_from_trainer(trainer_config: Any, **overrides: Any) -> SearchR1Config:
    """``search_r1:`` block of the trainer config (absent → paper defaults) + agent-loop kwargs."""
    key = (id(trainer_config), tuple(sorted(overrides.items())))
    hit = _CONFIGS.get(key)
    if hit is None or hit[0] is not trainer_config:
        block = trainer_config.get("search_r1") if trainer_config is not None else None
        values = OmegaConf.to_container(block, resolve=True) if block is not None else {}
        hit = _CONFIGS[key] = (trainer_config, SearchR1Config.from_mapping(values, **overrides))
    return hit[1]


# Per-trajectory weight versions verl's trainers read from AgentLoopOutput.extra_fields: the v1 trainer
# turns them into tags and casts them to int (trainer/ppo/v1/agent_loop_tq.py, trainer_base._compute_metrics),
# and off-policy staleness control filters on them. verl's LLMServerClient sets both on every generate output.
# Speculative-decoding counters are summed over turns, as verl's ToolAgentLoop does.
STEP_FIELDS = {
    "min_global_steps": min,
    "max_global_steps": max,
    "spec_num_draft_tokens": lambda a, b: int(a) + int(b),
    "spec_num_accepted_tokens": lambda a, b: int(a) + int(b),
    "spec_num_verify_steps": lambda a, b: int(a) + int(b),
}


def merge_engine_fields(acc: dict[str, Any], fields: dict[str, Any] | None) -> None:
    """Fold one ``generate`` call's ``extra_fields`` into the trajectory's: min/max of the weight versions
    over all turns, spec-decoding counters summed, every other key as the first call gave it."""
    for key, value in (fields or {}).items():
        combine = STEP_FIELDS.get(key)
        if combine is None:
            acc.setdefault(key, value)
        elif value is not None:
            acc[key] = value if acc.get(key) is None else combine(acc[key], value)
        else:
            acc.setdefault(key, None)


@register("search_r1")
class SearchR1AgentLoop(AgentLoopBase):
    """Multi-turn think/search/answer rollout with retrieved tokens masked out of the loss."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
        super().__init__(*args, **kwargs)
        self.search_config = config_from_trainer(self.config, **overrides)
        self.want_logprobs = bool(self.rollout_config.get("calculate_log_probs", False))
        check_rollout_logprobs(self.search_config, self.want_logprobs)
        self.response_length = int(self.rollout_config.response_length)
        self.retriever = client_from_config(self.search_config)
        self.retrieve = self.retriever.search
        if self.search_config.retrieval_replay:  # a record file answers (search-r1 eval --record)
            fallback = self.retriever.search if self.search_config.retrieval_replay_fallback else None
            self.retrieve = Replay(self.search_config.retrieval_replay, fallback)

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs: Any) -> AgentLoopOutput:
        messages = list(kwargs["raw_prompt"])
        prompt_ids = await self.ct_build_initial_tokens(messages)
        # One id per trajectory (sticky routing to the same replica); under rollout.full_determinism the
        # deterministic id and the scheduling priority verl's own loops use (priority: the sample's index).
        priority = int(priority)
        request_id = f"det-{priority}" if self.rollout_config.get("full_determinism", False) else uuid4().hex
        timing: dict[str, float] = {}
        engine_fields: dict[str, Any] = {}
        engine: dict[str, Any] = {"num_preempted": None, "routed_experts": None}

        async def policy(context_ids: list[int], max_tokens: int, stop: list[str]):
            """verl's server manager as a policy (search_r1_plugin.policy): one engine call per turn."""
            # Only keys every engine's SamplingParams takes (docs/engines.md): the returned token ids hold the
            # whole token that completed a stop string whatever the engine's text-side stop options say.
            params = dict(sampling_params, max_tokens=max_tokens, stop=list(stop))
            with simple_timer("generate_sequences", timing):
                out = await self.server_manager.generate(
                    request_id=request_id, prompt_ids=context_ids, sampling_params=params, priority=priority
                )
            merge_engine_fields(engine_fields, out.extra_fields)
            if out.num_preempted is not None:
                engine["num_preempted"] = (engine["num_preempted"] or 0) + out.num_preempted
            if out.routed_experts is not None:  # MoE routing replay: the last call covers the whole context
                engine["routed_experts"] = out.routed_experts
            return out.token_ids, out.log_probs

        obs_encoder = _observation_encoder(self.tokenizer)
        traj = await run_trajectory(
            prompt_ids,
            policy,
            self.retrieve,
            self.tokenizer,
            self.search_config,
            self.response_length,
            obs_encoder=obs_encoder,
        )
        stats = traj.metrics()
        metrics = AgentLoopMetrics(
            generate_sequences=timing.get("generate_sequences", 0.0),
            tool_calls=traj.retrieval_seconds,
            num_preempted=-1 if engine["num_preempted"] is None else engine["num_preempted"],
        )
        routed = engine["routed_experts"]
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=traj.response_ids,
            response_mask=traj.response_mask,
            response_logprobs=traj.response_logprobs if traj.has_logprobs and self.want_logprobs else None,
            num_turns=2 * traj.turns,
            routed_experts=None if routed is None else routed[: len(prompt_ids) + len(traj.response_ids)],
            metrics=metrics,
            # extra_fields reach compute_score's extra_info, which returns them to verl's logger.
            extra_fields={
                **engine_fields,
                "search_r1": stats,
                MODEL_TEXT_KEY: traj.model_text(obs_encoder.decode),
                "turn_scores": [],
                "tool_rewards": [],
            },
        )
