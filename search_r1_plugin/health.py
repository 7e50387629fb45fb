"""Training health: see a collapse coming and warn, stop or roll back before it wastes a cluster.

Search-R1-style GRPO runs are known to collapse (Search-R1 #88/#89/#162: 7B GRPO explodes around step
160; Agent-R1 #8/#30: NaN on HotpotQA; ConvSearch-R1 #6: collapse at steps 270–300), and the signs show
before the reward falls: the gradient norm spikes, the entropy collapses, the model stops writing valid
actions or its responses shrink to nothing. :class:`HealthGuard` checks one step's metrics against
these rules (``search_r1.health``, :class:`HealthConfig`):

================  ==========================================================================  ==================
rule              fires when                                                                  default
================  ==========================================================================  ==================
``nan``           any loss, norm, entropy, KL or reward is NaN or infinite                   always on
``grad_spike``    ``actor/grad_norm`` > ``grad_spike_factor`` × its running median on          10 × (window 20),
                  ``grad_spike_steps`` steps in a row                                         2 steps
``entropy``       ``actor/entropy`` < ``entropy_floor_ratio`` × its median over the first     0.1 × (after 5 steps)
                  ``warmup_steps`` steps
``valid_actions`` the valid-action rate falls below ``valid_action_floor`` after having been   0.5
                  above it
``length``        mean response length < ``length_floor_ratio`` × its running median          0.25 ×
``format``        the share of trajectories without a valid answer rises above               0.9
                  ``format_failure_ceiling`` after having been below it
``clip``          the share of responses cut by the response budget (``search_r1/health/``     0.9
                  ``budget_exhausted``) rises above ``clip_ceiling`` after having been below
                  it (runaway generation)
================  ==========================================================================  ==================

Modes: ``off``; ``warn`` (log the alarm, default); ``stop`` (raise :class:`TrainingHealthError`, which
ends ``main_ppo`` with the rule, step and numbers); ``rollback`` (stop the same way; ``search-r1 train``
then restarts from the checkpoint behind the last healthy step with the learning rate ×
``rollback_lr_factor``, at most ``max_rollbacks`` times: :mod:`search_r1_plugin.rollback`). The guard
sees each step's rollout metrics when the batch is sampled and the actor's metrics
(grad norm, entropy, KL) of the step before, read from verl's own metrics file: verl 0.9.1 has no
step-end callback (``docs/upstream.md``).

Why a gradient spike must last two steps: a lone spike is what verl's gradient clipping
(``actor.grad_clip``) is for, and healthy runs have them — over 598 logged steps of the learning demo and
CI (26 runs), two lone spikes of 11× and 15× their running median, each back to about 1× the next step, on
runs whose validation EM went on rising; a run that is coming apart keeps its norm up.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

from search_r1_plugin.errors import SearchR1Error
from search_r1_plugin.rollback import rollback_marker

MODES = ("off", "warn", "stop", "rollback")
# metric keys whose non-finite value means the run is broken
FINITE_KEYS = ("actor/pg_loss", "actor/grad_norm", "actor/entropy", "actor/kl_loss", "critic/vf_loss", "critic/score/mean")
GRAD_NORM = "actor/grad_norm"
ENTROPY = "actor/entropy"
VALID = "search_r1/valid_action_rate"
LENGTH = "response_length/mean"
FORMAT_FAILURE = "search_r1/health/format_failure"
# Our loop's own count of responses cut by the budget. Not verl's response_length/clip_ratio: verl compares
# lengths with the width of the padded batch, so a batch whose responses all have one length (an R1 policy's
# fixed-format answers) reads 1.0 there (metric_utils.compute_data_metrics).
CLIP = "search_r1/health/budget_exhausted"


class TrainingHealthError(SearchR1Error):
    """A health rule fired in ``stop`` or ``rollback`` mode."""


@dataclass
class HealthConfig:
    mode: str = "warn"
    warmup_steps: int = 5
    grad_spike_factor: float = 10.0
    grad_spike_steps: int = 2
    grad_window: int = 20
    entropy_floor_ratio: float = 0.1
    valid_action_floor: float = 0.5
    length_floor_ratio: float = 0.25
    format_failure_ceiling: float = 0.9
    clip_ceiling: float = 0.9
    rollback_lr_factor: float = 0.5
    max_rollbacks: int = 2

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"search_r1.health.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("grad_spike_factor", "entropy_floor_ratio", "length_floor_ratio", "rollback_lr_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"search_r1.health.{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_rollbacks < 0:
            raise ValueError(f"search_r1.health.max_rollbacks must be >= 0, got {self.max_rollbacks!r}")
        if self.warmup_steps < 1 or self.grad_window < 1 or self.grad_spike_steps < 1:
            raise ValueError("search_r1.health.warmup_steps, grad_window and grad_spike_steps must be >= 1")

    @classmethod
    def from_mapping(cls, values: Optional[Mapping[str, Any]]) -> "HealthConfig":
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown search_r1.health setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class Alarm:
    rule: str
    step: int
    message: str

    def __str__(self) -> str:
        return f"search_r1 health: rule {self.rule!r} fired at step {self.step}: {self.message}"


@dataclass
class HealthGuard:
    """Feed it each step's metrics in order (:meth:`observe`); it returns the alarms of that step."""

    config: HealthConfig = field(default_factory=HealthConfig)
    history: dict[str, list[float]] = field(default_factory=dict)
    valid_was_above: bool = False
    format_was_below: bool = False
    clip_was_below: bool = False
    grad_spikes: list[float] = field(default_factory=list)  # grad norms of the current run of steps over the limit
    alarms: list[Alarm] = field(default_factory=list)
    last_good_step: Optional[int] = None

    def _series(self, key: str) -> list[float]:
        return self.history.setdefault(key, [])

    def observe(self, step: int, metrics: Mapping[str, float]) -> list[Alarm]:
        cfg = self.config
        if cfg.mode == "off":
            return []
        fired: list[Alarm] = []
        bad = {k: metrics[k] for k in FINITE_KEYS if k in metrics and not math.isfinite(float(metrics[k]))}
        if bad:
            fired.append(Alarm("nan", step, f"non-finite values {bad}"))
        grad = metrics.get(GRAD_NORM)
        past = self._series(GRAD_NORM)[-cfg.grad_window :]
        if grad is not None and len(past) >= cfg.warmup_steps and math.isfinite(grad):
            median = statistics.median(past)
            if median > 0 and grad > cfg.grad_spike_factor * median:
                self.grad_spikes.append(grad)
            else:
                self.grad_spikes.clear()
            if len(self.grad_spikes) >= cfg.grad_spike_steps:
                row = ", ".join(f"{g:.4g}" for g in self.grad_spikes)
                fired.append(
                    Alarm(
                        "grad_spike",
                        step,
                        f"{GRAD_NORM}={grad:.4g} > {cfg.grad_spike_factor:g} × running median {median:.4g}, "
                        f"over it {len(self.grad_spikes)} step(s) in a row ({row})",
                    )
                )
        entropy = metrics.get(ENTROPY)
        early = self._series(ENTROPY)[: cfg.warmup_steps]
        if entropy is not None and len(early) >= cfg.warmup_steps and math.isfinite(entropy):
            base = statistics.median(early)
            if base > 0 and entropy < cfg.entropy_floor_ratio * base:
                fired.append(Alarm("entropy", step, f"{ENTROPY}={entropy:.4g} < {cfg.entropy_floor_ratio:g} × its early median {base:.4g}"))
        valid = metrics.get(VALID)
        if valid is not None:
            if self.valid_was_above and valid < cfg.valid_action_floor:
                fired.append(
                    Alarm("valid_actions", step, f"{VALID}={valid:.3f} fell below {cfg.valid_action_floor:g} after being above it")
                )
            self.valid_was_above = self.valid_was_above or valid >= cfg.valid_action_floor
        length = metrics.get(LENGTH)
        lengths = self._series(LENGTH)
        if length is not None and len(lengths) >= cfg.warmup_steps:
            median = statistics.median(lengths)
            if median > 0 and length < cfg.length_floor_ratio * median:
                fired.append(Alarm("length", step, f"{LENGTH}={length:.4g} < {cfg.length_floor_ratio:g} × running median {median:.4g}"))
        failure = metrics.get(FORMAT_FAILURE)
        if failure is not None:
            if self.format_was_below and failure > cfg.format_failure_ceiling:
                fired.append(
                    Alarm("format", step, f"{FORMAT_FAILURE}={failure:.3f} rose above {cfg.format_failure_ceiling:g} after being below it")
                )
            self.format_was_below = self.format_was_below or failure <= cfg.format_failure_ceiling
        clip = metrics.get(CLIP)
        if clip is not None:
            if self.clip_was_below and clip > cfg.clip_ceiling:
                fired.append(Alarm("clip", step, f"{CLIP}={clip:.3f} rose above {cfg.clip_ceiling:g} after being below it"))
            self.clip_was_below = self.clip_was_below or clip <= cfg.clip_ceiling
        for key in (GRAD_NORM, ENTROPY, LENGTH):
            value = metrics.get(key)
            if value is not None and math.isfinite(float(value)):
                self._series(key).append(float(value))
        if not fired:
            self.last_good_step = step
        self.alarms += fired
        return fired

    def act(self, alarms: list[Alarm], log) -> None:
        """Warn about each alarm; in ``stop``/``rollback`` mode raise after the first."""
        for alarm in alarms:
            log(str(alarm))
        if alarms and self.config.mode in ("stop", "rollback"):
            text = "; ".join(str(a) for a in alarms)
            if self.config.mode == "rollback":
                log(rollback_marker(self.last_good_step, self.config.rollback_lr_factor))  # read by search-r1 train
                text += (
                    f". Last step that passed the guard: {self.last_good_step}; search-r1 train restarts from the checkpoint "
                    f"behind its rollouts (global_step_{self.last_good_step - 1}, or the initial model) with "
                    f"actor_rollout_ref.actor.optim.lr × {self.config.rollback_lr_factor:g} (search_r1_plugin.rollback)"
                )
            raise TrainingHealthError(text)
