"""Search behaviour in verl's *training* step metrics (and a token-level trajectory dump).

verl 0.9.1 logs only ``num_turns`` and ``tool_call_counts`` from rollouts, and adds reward extra
info to validation metrics, not to training steps. Its v1 trainer does offer one supported hook
on the path of every training batch: a custom replay-buffer sampler
(``trainer.v1.sampler.custom_sampler.{path,name}``), whose ``sample()`` returns the batch *and*
a dict of metrics that the trainer merges into the step's metrics (console, tensorboard, wandb —
whatever ``trainer.logger`` names). :class:`SearchR1ReplayBuffer` is verl's own ``ReplayBuffer``
plus that dict, computed from the per-trajectory stats the agent loop stores in
``extra_fields["search_r1"]`` and the reward's extra info (EM, F1):

    search_r1/searches_per_trajectory   search_r1/valid_action_rate   search_r1/invalid_action_rate
    search_r1/answered_rate             search_r1/obs_truncations     search_r1/retrieval_latency_s
    search_r1/masked_token_share        search_r1/budget_exhausted    search_r1/em   search_r1/f1
    search_r1/answer_read               share of answers that are words of a passage the model was shown

It also runs the training health guard (:mod:`search_r1_plugin.health`, ``search_r1.health``) and adds
its rollout-side signals to every step:

    search_r1/health/zero_variance_groups   share of GRPO groups whose rewards are all equal (no signal)
    search_r1/health/format_failure         share of trajectories without a valid answer
    search_r1/health/budget_exhausted       share cut by the response budget
    search_r1/health/nonfinite_rewards      rewards that are NaN or infinite
    search_r1/health/alarms                 rules that fired on the previous step's metrics

Our presets select it (``search_r1_common.yaml``). With ``sampler_kwargs.token_dump_dir`` set
(the presets use ``trainer.rollout_data_dir``), every sampled batch is also written as
``{dir}/search_r1_tokens/{step}.jsonl``: response ids, loss mask and token-level reward of each
trajectory — what verl's own text dump cannot show (which tokens were trained on).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterable, Mapping

import numpy as np
import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from search_r1_plugin.health import HealthConfig, HealthGuard

logger = logging.getLogger(__name__)

# extra_fields["search_r1"] key → metric name
ROLLOUT_STATS = {
    "searches": "searches_per_trajectory",
    "answered": "answered_rate",
    "obs_truncations": "obs_truncations",
    "budget_exhausted": "budget_exhausted",
    "retrieval_latency_s": "retrieval_latency_s",
    "masked_token_share": "masked_token_share",
}
REWARD_STATS = ("em", "f1", "answer_read")
PREFIX = "search_r1/"


def search_metrics(extra_fields: Iterable[Mapping[str, Any] | None]) -> dict[str, float]:
    """Batch means of the agent loop's per-trajectory stats and the reward's EM/F1."""
    rows = [e for e in extra_fields if isinstance(e, Mapping)]
    stats = [r["search_r1"] for r in rows if isinstance(r.get("search_r1"), Mapping)]
    out: dict[str, float] = {}
    if stats:
        for key, name in ROLLOUT_STATS.items():
            out[PREFIX + name] = float(np.mean([s.get(key, 0.0) for s in stats]))
        out[PREFIX + "searches_per_trajectory_max"] = float(max(s.get("searches", 0.0) for s in stats))
        valid = sum(s.get("valid_actions", 0.0) for s in stats)
        invalid = sum(s.get("invalid_actions", 0.0) for s in stats)
        actions = valid + invalid
        out[PREFIX + "valid_action_rate"] = valid / actions if actions else 0.0
        out[PREFIX + "invalid_action_rate"] = invalid / actions if actions else 0.0
    infos = [r.get("reward_extra_info") for r in rows]
    for key in REWARD_STATS:
        values = [float(i[key]) for i in infos if isinstance(i, Mapping) and i.get(key) is not None]
        if values:
            out[PREFIX + key] = float(np.mean(values))
    return out


def health_metrics(keys: list[str], rewards: list[float], extra_fields: Iterable[Mapping[str, Any] | None]) -> dict[str, float]:
    """Rollout-side health signals of one batch; ``keys`` are verl's ``{uid}_{session}_{i}`` (group = uid)."""
    groups: dict[str, list[float]] = {}
    for key, reward in zip(keys, rewards):
        groups.setdefault(str(key).rsplit("_", 2)[0], []).append(reward)
    multi = [g for g in groups.values() if len(g) > 1]
    stats = [e["search_r1"] for e in extra_fields if isinstance(e, Mapping) and isinstance(e.get("search_r1"), Mapping)]
    out = {
        PREFIX + "health/nonfinite_rewards": float(sum(not np.isfinite(r) for r in rewards)),
        PREFIX + "health/zero_variance_groups": float(np.mean([max(g) == min(g) for g in multi])) if multi else 0.0,
    }
    if stats:
        out[PREFIX + "health/format_failure"] = float(np.mean([not s.get("answered", 0) for s in stats]))
        out[PREFIX + "health/budget_exhausted"] = float(np.mean([bool(s.get("budget_exhausted", 0)) for s in stats]))
    return out


def metrics_file_path(project_name: str | None, experiment_name: str | None) -> str | None:
    """Where verl's ``file`` logger writes (its own rule in ``verl.utils.tracking.FileLogger``)."""
    if os.getenv("VERL_FILE_LOGGER_PATH"):
        return os.environ["VERL_FILE_LOGGER_PATH"]
    if not project_name or not experiment_name:
        return None
    root = os.path.expanduser(os.getenv("VERL_FILE_LOGGER_ROOT", "."))
    return os.path.join(root, project_name, f"{experiment_name}.jsonl")


def read_step_metrics(path: str | None, step: int) -> dict[str, float] | None:
    """The training metrics verl logged for ``step`` (validation-only rows skipped), or None."""
    if not path or not os.path.exists(path):
        return None
    found = None
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("step") == step and any(not k.startswith("val-") for k in row.get("data", {})):
                found = row["data"]
    return found


def _as_list(value: Any) -> list:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def filter_groups_options(filter_groups: Any) -> dict[str, Any]:
    """``algorithm.filter_groups`` (DAPO's dynamic sampling: groups whose rewards are all equal are dropped and
    replaced by fresh prompts) as the arguments verl's trainer gives its own replay buffer; verl does not
    give them to a custom sampler (``trainer/ppo/v1/trainer_base.py``), so ours takes them through
    ``sampler_kwargs`` (docs/upstream.md)."""
    if not filter_groups or not filter_groups.get("enable", False):
        return {}
    metric = filter_groups.get("metric")
    if not metric:
        raise ValueError("algorithm.filter_groups.metric must be set when group filtering is enabled")
    return {"filter_groups_metric": str(metric), "max_inflight_gen_batches": int(filter_groups.get("max_inflight_gen_batches", 1))}


class SearchR1ReplayBuffer(ReplayBuffer):
    """verl's synchronous ``ReplayBuffer`` + search metrics on every sampled training batch.

    verl hands a custom sampler only its generic arguments, so the batch sizes its built-in
    buffer receives from the trainer come through ``sampler_kwargs`` (set by our presets).
    """

    def __init__(self, trainer_mode: str, *args: Any, sampler_kwargs: Any = None, **kwargs: Any) -> None:
        if trainer_mode != "sync":
            raise ValueError(
                f"search_r1_plugin.training_metrics.SearchR1ReplayBuffer extends the synchronous replay buffer; "
                f"trainer.v1.trainer_mode={trainer_mode!r} needs trainer.v1.sampler.custom_sampler.path=null"
            )
        options = dict(sampler_kwargs or {})
        self.token_dump_dir = options.pop("token_dump_dir", None)
        health = options.pop("health", None)
        self.guard = HealthGuard(HealthConfig.from_mapping(dict(health) if health is not None else None))
        self.metrics_file = metrics_file_path(options.pop("project_name", None), options.pop("experiment_name", None))
        self._warned_no_metrics = False
        identity, run_dir = options.pop("run_identity", None), options.pop("run_dir", None)
        resume_mode = options.pop("resume_mode", "auto")
        if identity and run_dir:
            from search_r1_plugin.run_identity import record

            record(str(run_dir), str(resume_mode), json.loads(identity))
        train_batch_size = options.pop("train_batch_size", None)
        gen_batch_size = options.pop("gen_batch_size", None) or train_batch_size
        filtering = filter_groups_options(options.pop("filter_groups", None))
        if filtering:  # as verl's trainer sets up its own buffer: prompts are refilled one at a time
            gen_batch_size = 1
        super().__init__(
            trainer_mode,
            *args,
            sampler_kwargs=options,
            train_batch_size=train_batch_size,
            gen_batch_size=gen_batch_size,
            **filtering,
            **kwargs,
        )

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if partition_id == "val" or not batch.keys:
            return batch, metrics
        fields = ["extra_fields", "rm_scores"] + (["responses", "response_mask"] if self.token_dump_dir else [])
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        extra = _as_list(data["extra_fields"])
        metrics = dict(metrics or {})
        metrics.update(search_metrics(extra))
        rewards = [float(np.sum(_as_list(r))) for r in data["rm_scores"]]
        metrics.update(health_metrics(list(batch.keys), rewards, extra))
        metrics[PREFIX + "health/alarms"] = float(self._check_health(global_steps, metrics))
        if self.token_dump_dir:
            self._dump_tokens(global_steps, batch.keys, data, extra)
        return batch, metrics

    def _check_health(self, global_steps: int, current: dict[str, float]) -> int:
        """Run the guard on the previous step's full metrics (verl's file) and this batch's rewards."""
        if self.guard.config.mode == "off":
            return 0
        alarms = []
        previous = read_step_metrics(self.metrics_file, global_steps - 1) if global_steps > 1 else None
        if previous is not None:
            alarms += self.guard.observe(global_steps - 1, previous)
        elif global_steps > 1 and not self._warned_no_metrics:
            self._warned_no_metrics = True
            logger.warning(
                "search_r1 health: no metrics of step %d in %s; add 'file' to trainer.logger so the guard sees "
                "grad norm, entropy and KL (rollout signals are still checked)",
                global_steps - 1,
                self.metrics_file,
            )
        if current.get(PREFIX + "health/nonfinite_rewards", 0.0) > 0:
            alarms += self.guard.observe(global_steps, {"critic/score/mean": float("nan")})
        self.guard.act(alarms, lambda text: (logger.warning(text), print(text, flush=True)))
        return len(alarms)

    def _dump_tokens(self, global_steps: int, keys: list[str], data: Any, extra: list) -> None:
        out_dir = os.path.join(self.token_dump_dir, "search_r1_tokens")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"{global_steps}.jsonl")
        with open(path, "w") as f:
            for i, key in enumerate(keys):
                row = {
                    "key": key,
                    "step": global_steps,
                    "response_ids": _as_list(data["responses"][i]),
                    "response_mask": _as_list(data["response_mask"][i]),
                    "rm_scores": [float(x) for x in _as_list(data["rm_scores"][i])],
                    "search_r1": (extra[i] or {}).get("search_r1") if isinstance(extra[i], Mapping) else None,
                }
                f.write(json.dumps(row) + "\n")
        logger.info("search_r1 token dump: %s", path)
