"""No run silently continues another: what defines a run is stored with its checkpoints and checked on resume.

verl resumes from ``trainer.default_local_dir`` whenever it holds a checkpoint (``resume_mode=auto``).
Run names (:func:`search_r1_plugin.config.experiment_name`) keep distinct paper rows apart, but no name
can hold every key: a learning-rate sweep would resume the default run. So the run's *identity* — the
resolved settings that change what is trained (algorithm, model, optimiser, losses, sampling, data,
reward, the ``search_r1`` rollout settings), without paths of logs, resources or retrieval plumbing — is
written to ``<default_local_dir>/search_r1_run.json`` when a run starts with no checkpoint, and compared
when one is there: a difference stops ``main_ppo`` before any model loads, naming the keys and the way
out (``trainer.experiment_name=…`` for a new run, or ``trainer.resume_mode=resume_path
trainer.resume_from_path=…`` to continue on purpose, e.g. a rollback with a lower learning rate).

The check runs from the ``search_r1_run_identity`` resolver our presets declare, where the ``search_r1``
block is checked too: verl resolves the config in its TaskRunner before it builds any worker. The record
is written by the trainer's replay-buffer sampler (:mod:`search_r1_plugin.training_metrics`), so
composing or printing a config never writes into a checkpoint folder.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from search_r1_plugin.errors import ConfigError

FILE_NAME = "search_r1_run.json"
# verl's marker of a saved checkpoint in default_local_dir
CHECKPOINT_MARKER = "latest_checkpointed_iteration.txt"

# Dotted prefixes of the resolved config that define what a run trains.
IDENTITY_KEYS = (
    "algorithm",
    "actor_rollout_ref.model.path",
    "actor_rollout_ref.actor.optim",
    "actor_rollout_ref.actor.policy_loss",
    "actor_rollout_ref.actor.clip_ratio",
    "actor_rollout_ref.actor.clip_ratio_low",
    "actor_rollout_ref.actor.clip_ratio_high",
    "actor_rollout_ref.actor.use_kl_loss",
    "actor_rollout_ref.actor.kl_loss_coef",
    "actor_rollout_ref.actor.kl_loss_type",
    "actor_rollout_ref.actor.entropy_coeff",
    "actor_rollout_ref.actor.loss_agg_mode",
    "actor_rollout_ref.actor.ppo_mini_batch_size",
    "actor_rollout_ref.actor.ppo_epochs",
    "actor_rollout_ref.rollout.n",
    "actor_rollout_ref.rollout.temperature",
    "actor_rollout_ref.rollout.top_p",
    "actor_rollout_ref.rollout.top_k",
    "critic.model.path",
    "critic.optim",
    "data.train_files",
    "data.train_batch_size",
    "data.max_prompt_length",
    "data.max_response_length",
    "reward.custom_reward_function",
    "search_r1",
)
# search_r1 settings that do not change what is trained (where the retriever is, how it is reached, the guard)
NOT_IDENTITY = ("search_r1.retriever_url", "search_r1.retrieval_", "search_r1.health")
# optimiser entries verl fills in at run time
VOLATILE = ("total_training_steps",)


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def run_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The identity of a resolved trainer config (a plain mapping): dotted key → value."""
    flat: dict[str, Any] = {}
    _flatten(config, "", flat)
    return {
        key: value
        for key, value in sorted(flat.items())
        if any(key == p or key.startswith(p + ".") for p in IDENTITY_KEYS)
        and not key.startswith(NOT_IDENTITY)
        and key.rsplit(".", 1)[-1] not in VOLATILE
    }


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(stored) | set(current))
    return [f"{k}: {stored.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}" for k in keys if stored.get(k) != current.get(k)]


def check_resume(directory: str, resume_mode: str, identity: Mapping[str, Any]) -> None:
    """Refuse to auto-resume a checkpoint folder recorded by a run with another identity (read-only)."""
    if resume_mode != "auto" or not directory:
        return  # disable: a fresh start; resume_path: the user chose the checkpoint on purpose
    path = os.path.join(directory, FILE_NAME)
    if os.path.exists(os.path.join(directory, CHECKPOINT_MARKER)) and os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        diff = differences(stored, identity)
        if diff:
            raise ConfigError(
                f"{directory} holds checkpoints of another run, and trainer.resume_mode=auto would continue it. "
                f"What differs: {'; '.join(diff)}. Start a new run with trainer.experiment_name=<new name> (or "
                "trainer.default_local_dir=<new folder>), or continue that checkpoint on purpose with "
                "trainer.resume_mode=resume_path trainer.resume_from_path=<its global_step_N folder>."
            )


def record(directory: str, resume_mode: str, identity: Mapping[str, Any]) -> None:
    """Write ``identity`` for a run that starts afresh or resumes on purpose (called by the trainer's
    sampler, so composing a config elsewhere never writes); an auto-resumed run was checked equal."""
    if not directory or (resume_mode == "auto" and os.path.exists(os.path.join(directory, CHECKPOINT_MARKER))):
        return
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, FILE_NAME)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(dict(identity), f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def identity_of_root(root: Any) -> dict[str, Any]:
    """Identity of an OmegaConf root, resolving only the subtrees that define it."""
    from omegaconf import DictConfig, OmegaConf

    parts: dict[str, Any] = {}
    for prefix in IDENTITY_KEYS:
        node = OmegaConf.select(root, prefix, default=None)
        value = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        if value is not None:
            current = parts
            keys = prefix.split(".")
            for k in keys[:-1]:
                current = current.setdefault(k, {})
            current[keys[-1]] = value
    return run_identity(parts)
