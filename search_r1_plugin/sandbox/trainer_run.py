"""Run verl's own ``python -m verl.trainer.main_ppo`` with our presets on CPU, as a subprocess.

Used by the end-to-end tests and the README's CPU training run (``search_r1_plugin/demo/cpu_training.py``): the
trainer is verl's unmodified entry point; this module only builds the command line, the
environment (``VERL_PLATFORM=cpu``, verl's ``file`` logger path) and reads back what verl wrote:
the step metrics (one JSON object per step, written by verl's ``FileLogger``), the console log,
checkpoints, and the rollout dumps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from search_r1_plugin.errors import ConfigError
from search_r1_plugin.presets import main_ppo_command


@dataclass
class TrainerRun:
    returncode: int
    log_path: Path
    metrics_path: Path
    seconds: float
    metrics: list[dict] = field(default_factory=list)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = 6000) -> str:
        return self.log[-chars:]

    def step(self, n: int) -> dict:
        """Metrics verl logged for training step ``n``."""
        for row in self.metrics:
            if row["step"] == n:
                return row["data"]
        raise KeyError(f"no metrics for step {n}; steps logged: {[r['step'] for r in self.metrics]}")


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_ray_can_start_workers(python: str | None = None) -> None:
    """Ray's raylet starts every worker through a shell with this Python's path unquoted, so a path with a
    space fails only after Ray has started ("bash: line 1: /path/with: No such file or directory", then
    ``ActorUnschedulableError``; ray-project/ray#5288). Say so before anything starts."""
    python = python or sys.executable
    if any(c.isspace() for c in python):
        raise ConfigError(
            f"Ray cannot start workers from a Python whose path has a space ({python!r}): clone or create the "
            "virtual environment under a path without spaces"
        )


def run_main_ppo(
    algo: str,
    workdir: str | Path,
    *,
    model: str,
    train_files: str,
    val_files: str,
    variants: Sequence[str] = ("cpu",),
    retriever_url: str,
    overrides: Sequence[str] = (),
    timeout_s: float = 900,
    on_line: Optional[Callable[[str], None]] = None,
    run_name: str = "run",
) -> TrainerRun:
    """Train with verl's ``main_ppo`` on CPU (variant ``cpu`` first); checkpoints in ``workdir/checkpoints``
    (resumed if present)."""
    check_ray_can_start_workers()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    metrics_path = workdir / f"{run_name}_metrics.jsonl"
    log_path = workdir / f"{run_name}.log"
    metrics_path.unlink(missing_ok=True)
    overrides = [
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={train_files}",
        f"data.val_files={val_files}",
        f"search_r1.retriever_url={retriever_url}",
        f"trainer.default_local_dir={workdir / 'checkpoints'}",
        "trainer.logger=[console,file]",
        f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={metrics_path}",
        *overrides,
    ]
    env = dict(
        os.environ,
        VERL_PLATFORM="cpu",
        VERL_FILE_LOGGER_PATH=str(metrics_path),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        RAY_DEDUP_LOGS="1",
        PYTHONUNBUFFERED="1",
    )
    command = main_ppo_command(algo, None, variants, overrides)
    # what search-r1 report reads to decode the token dumps and show the command
    (workdir / "run.json").write_text(json.dumps({"model": model, "command": command}, indent=1))
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=workdir,
        )
        watchdog = threading.Timer(timeout_s, proc.kill)  # a hung trainer (silent or not) is stopped
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if on_line is not None:
                    on_line(line)
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if time.perf_counter() - start >= timeout_s:
            log.write(f"\n[search_r1] main_ppo stopped after the {timeout_s} s limit\n")
    return TrainerRun(proc.returncode, log_path, metrics_path, time.perf_counter() - start, read_metrics(metrics_path))
