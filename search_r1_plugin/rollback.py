"""``search_r1.health.mode=rollback`` carried out: restart ``main_ppo`` from the last checkpoint that passed
the health guard, with a lower learning rate, up to ``search_r1.health.max_rollbacks`` times.

The guard runs inside verl's trainer (:mod:`search_r1_plugin.health`) and can only end the run; a restart
needs a process around ``main_ppo``. When a rule fires in ``rollback`` mode the guard prints one
:data:`MARKER` line (the last step that passed it, the learning-rate factor) and stops the run;
:func:`run_supervised` (``search-r1 train`` in rollback mode) reads that line and restores the weights
that *produced* the last healthy rollouts: step N's rollouts come from the checkpoint of step N − 1, so
after a last good step N it picks the newest ``global_step_M`` (verl's layout in
``trainer.default_local_dir``) with M ≤ N − 1 and starts ``main_ppo`` again with
``trainer.resume_mode=resume_path``, ``trainer.resume_from_path``, the actor's weights only (verl would
restore the old learning rate with the optimizer and scheduler state) and ``actor_rollout_ref.actor.optim.lr``
× the factor; when no such checkpoint exists (N − 1 = 0: the initial model), it starts over from the
model without resuming. An explicit resume path is also what the run-identity
check accepts for a resumed run whose learning rate changed (:mod:`search_r1_plugin.run_identity`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional, Sequence

MARKER = "search_r1 rollback:"
_MARKER_RE = re.compile(re.escape(MARKER) + r" last_good_step=(-?\d+) lr_factor=([0-9.eE+-]+)")
# Weights only: verl 0.9.1 restores the optimizer's and the LR scheduler's learning rate with their state,
# which would silently undo the lower one (docs/upstream.md #9); Adam's moments start over, as does warm-up.
LOAD_WEIGHTS_ONLY = "actor_rollout_ref.actor.checkpoint.load_contents=[model]"
RESUME_KEYS = (
    "trainer.resume_mode",
    "trainer.resume_from_path",
    "actor_rollout_ref.actor.optim.lr",
    "actor_rollout_ref.actor.checkpoint.load_contents",
)

# launch(extra_overrides) -> (exit code, output lines of the run: at least those holding the guard's MARKER)
Launch = Callable[[list[str]], tuple[int, Sequence[str]]]


def rollback_marker(last_good_step: int, lr_factor: float) -> str:
    return f"{MARKER} last_good_step={last_good_step} lr_factor={lr_factor:g}"


def parse_marker(lines: Sequence[str]) -> Optional[tuple[int, float]]:
    """(last good step, learning-rate factor) of the last marker line in ``lines``, if any."""
    found = None
    for line in lines:
        m = _MARKER_RE.search(line)
        if m:
            found = (int(m.group(1)), float(m.group(2)))
    return found


def checkpoint_at_or_before(checkpoint_dir: str | Path, step: int) -> Optional[Path]:
    """The newest ``global_step_N`` folder with N ≤ ``step``."""
    best = None
    for path in Path(checkpoint_dir).glob("global_step_*"):
        m = re.fullmatch(r"global_step_(\d+)", path.name)
        if m and path.is_dir() and int(m.group(1)) <= step and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return best[1] if best else None


def without_resume_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides less the ones a rollback sets (Hydra refuses a key given twice)."""
    return [o for o in overrides if o.lstrip("+").split("=", 1)[0] not in RESUME_KEYS]


def run_supervised(launch: Launch, *, checkpoint_dir: str | Path, lr: float, max_rollbacks: int, log=print) -> int:
    """Run, and after each guard-triggered stop restart from the last good checkpoint with lr × factor."""
    extra: list[str] = []
    for attempt in range(max_rollbacks + 1):
        code, lines = launch(extra)
        marker = parse_marker(lines) if code != 0 else None
        if marker is None:
            return code
        step, factor = marker
        if attempt == max_rollbacks:
            log(f"search_r1 rollback: the guard fired again after {max_rollbacks} rollback(s) (search_r1.health.max_rollbacks); stopping")
            return code
        checkpoint = checkpoint_at_or_before(checkpoint_dir, step - 1)  # the weights behind step `step`'s rollouts
        lr *= factor
        if checkpoint is None:
            extra = ["trainer.resume_mode=disable", f"actor_rollout_ref.actor.optim.lr={lr:g}"]
            where = f"the initial model (no checkpoint at or before step {step - 1} in {checkpoint_dir})"
        else:
            extra = ["trainer.resume_mode=resume_path", f"trainer.resume_from_path={checkpoint}", LOAD_WEIGHTS_ONLY]
            extra.append(f"actor_rollout_ref.actor.optim.lr={lr:g}")
            where = str(checkpoint)
        log(f"search_r1 rollback {attempt + 1}/{max_rollbacks}: restarting from {where} with actor lr {lr:g}")
    return code
