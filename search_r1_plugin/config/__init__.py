"""Hydra config groups for ``main_ppo`` (``hydra.searchpath=[pkg://search_r1_plugin.config]``).

Hydra imports this package to read the presets, and the verl plugin entry point
imports it in every process that imports verl (Ray's TaskRunner resolves the config
again), so the resolvers the presets use are registered here:

* ``${search_r1_div:total,gpus,nodes}`` turns the paper's global micro-batch sizes into
  per-GPU values for whatever GPU count is configured;
* ``${search_r1_check:${search_r1},<rollout keys>}`` validates the ``search_r1`` block (and its fit
  with rollout log-probs and the rollout engine) when the trainer resolves its config
  (TaskRunner start, or ``--cfg job --resolve``), so a bad value stops the run before any model loads
  instead of at the first rollout;
* ``${search_r1_response_budget:turns,turn_tokens,obs_tokens}`` sizes the response from the turn caps;
* ``${search_r1_experiment:…}`` names the run (``trainer.experiment_name``, hence its checkpoint folder);
* ``${search_r1_run_identity:dir,resume_mode}`` refuses to auto-resume another run's checkpoints.

Layout: ``+search_r1_algo=<ppo|grpo|rloo|reinforce_pp>`` chooses an algorithm and brings
``search_r1_common.yaml``; the algorithm's tree has two slots, ``search_r1_model=<file>`` and
``search_r1_variant=[<file>…]`` (cpu, learn, smoke, no_mask, r1, sglang, stable), applied after it. One-value changes are
plain overrides (``search_r1.topk=5``, ``search_r1.max_turns=2``, ``actor_rollout_ref.rollout.n=3``).
"""

from omegaconf import DictConfig, OmegaConf


def per_gpu(total: int, gpus_per_node: int, nnodes: int = 1) -> int:
    """``total`` spread over all GPUs, at least 1 per GPU."""
    return max(1, int(total) // (int(gpus_per_node) * int(nnodes)))


def check_settings(block: DictConfig, calculate_log_probs: bool = False, engine: str = "vllm", skip_tokenizer_init: bool = False) -> bool:
    """Raises ``ConfigError`` naming ``search_r1.<key>`` for a bad or unknown setting, or the rollout key
    that does not fit it."""
    from search_r1_plugin.settings import SearchR1Config, check_engine, check_rollout_logprobs

    config = SearchR1Config.from_mapping(OmegaConf.to_container(block, resolve=True))
    check_rollout_logprobs(config, bool(calculate_log_probs))
    check_engine(engine, bool(skip_tokenizer_init))
    return True


def response_budget(max_turns: int, max_turn_tokens: int, max_obs_length: int) -> int:
    """Tokens the response needs when every turn and observation is used to its cap.

    The prompt is the question only and every turn lives in the response:
    ``(max_turns + 1) * max_turn_tokens + max_turns * max_obs_length`` (paper: 5*500 + 4*500 = 4500).
    """
    return (int(max_turns) + 1) * int(max_turn_tokens) + int(max_turns) * int(max_obs_length)


def context_length(prompt_length: int, response_length: int) -> int:
    """``rollout.max_model_len``: the longest context a rollout can reach — the prompt plus the whole response
    budget (observations included) — and one token more, because verl's SGLang server allows a request
    only ``max_model_len - len(prompt) - 1`` new tokens (``async_sglang_server.py``), which would cut the
    last turn of a full budget by one. Left unset, vLLM sizes its KV cache for ``max_position_embeddings``
    (32k–128k for Qwen2.5) and refuses to start on cards where one such sequence does not fit."""
    return int(prompt_length) + int(response_length) + 1


# verl estimator -> the algorithm's name in a run name (the file name in search_r1_algo/)
_ALGORITHM_LABELS = {"gae": "ppo", "reinforce_plus_plus": "reinforce_pp"}

# search_r1 value -> how it reads in a run name when it differs from the paper's default
_RUN_DEFINING = {
    "topk": lambda v: f"topk{v}",
    "max_turns": lambda v: f"max_turns{v}",
    "max_turn_tokens": lambda v: f"turn_tokens{v}",
    "max_obs_length": lambda v: f"obs{v}",
    "mask_retrieved_tokens": lambda v: "mask" if v else "no_mask",
    "turn_cut": lambda v: f"cut_{v}",
}


# Folder names that say nothing about which model it is (verl's exports: …/global_step_100/actor/huggingface).
_GENERIC_MODEL_FOLDERS = {"huggingface", "hf", "actor", "model", "models", "checkpoint", "checkpoints", "hf_model", "merged"}


def _generic_folder(name: str) -> bool:
    import re

    return name.lower() in _GENERIC_MODEL_FOLDERS or re.fullmatch(r"global_step_\d+|checkpoint-\d+", name.lower()) is not None


def model_label(model_path: str) -> str:
    """A readable name for the model in a run name: its folder (or hub) name, lower-cased. A local path
    whose own folder name is generic gets the nearest telling folder above it plus a short hash of the
    whole path, so ``/ckpt/run_a/global_step_100/actor/huggingface`` and ``/ckpt/run_b/…`` differ."""
    import hashlib

    parts = [p for p in str(model_path).rstrip("/").split("/") if p]
    name = parts[-1].lower() if parts else str(model_path)
    if parts and _generic_folder(parts[-1]):
        telling = next((p for p in reversed(parts) if not _generic_folder(p)), parts[-1])
        digest = hashlib.sha1(str(model_path).rstrip("/").encode()).hexdigest()[:6]
        name = f"{telling.lower()}-{digest}"
    return name


def experiment_name(adv_estimator: str, model_path: str, group: int, run: DictConfig, block: DictConfig) -> str:
    """``search_r1-<algorithm>-<model>[-group<n>][-<variant>…]``: distinct for distinct runs.

    verl resumes from ``checkpoints/{project}/{experiment_name}`` by default, so two runs that differ
    only by a model, an ablation or a value must not share the name. The algorithm comes from the
    estimator and the model from its path (so a command-line override of either renames the run); the
    group size appears when it is not the algorithm's (``search_r1_run.group_size``); variants are the
    variant files' names (``search_r1_run.variants``) and every run-defining ``search_r1`` value that
    differs from the paper's, however it was set; sorted, so the order of overrides is irrelevant.
    """
    from search_r1_plugin.settings import SearchR1Config

    run = OmegaConf.to_container(run, resolve=True) if isinstance(run, DictConfig) else dict(run or {})
    algorithm = _ALGORITHM_LABELS.get(str(adv_estimator), str(adv_estimator))
    model = model_label(str(model_path))
    parts = {k for k, on in (run.get("variants") or {}).items() if on}
    if int(group) != int(run.get("group_size") or 1):
        parts.add(f"group{int(group)}")
    values = OmegaConf.to_container(block, resolve=True)
    defaults = SearchR1Config()
    for key, label in _RUN_DEFINING.items():
        if key in values and values[key] != getattr(defaults, key):
            parts.add(label(values[key]))
    return "-".join(["search_r1", algorithm, model, *sorted(parts)])


def checked_run_identity(directory: str, resume_mode: str, *, _root_: DictConfig) -> str:
    """The run's identity as JSON (handed to the trainer's sampler, which records it), after refusing to
    auto-resume a checkpoint folder of another run (:mod:`search_r1_plugin.run_identity`)."""
    import json

    from search_r1_plugin.run_identity import check_resume, identity_of_root

    identity = identity_of_root(_root_)
    check_resume(str(directory), str(resume_mode), identity)
    return json.dumps(identity, sort_keys=True)


def store_settings_node() -> None:
    """``search_r1_settings`` in Hydra's ConfigStore: the ``search_r1`` block of every preset, made from
    :class:`~search_r1_plugin.settings.SearchR1Config`'s defaults, so the presets never restate them
    (``search_r1_common.yaml`` places it with ``/search_r1_settings@search_r1``). A plain node, not the
    dataclass as a schema: ``retriever_url`` also takes a YAML list, and ``search_r1_check`` validates the
    block with the key named when the trainer resolves its config."""
    from hydra.core.config_store import ConfigStore

    from search_r1_plugin.settings import SearchR1Config

    ConfigStore.instance().store(name="search_r1_settings", node=SearchR1Config().as_dict())


# Hydra reads the presets through this package (pkg://search_r1_plugin.config), so importing it is what
# puts the node in the store before the presets' defaults lists ask for it.
store_settings_node()
_RESOLVERS = {
    "search_r1_run_identity": checked_run_identity,
    "search_r1_experiment": experiment_name,
    "search_r1_response_budget": response_budget,
    "search_r1_context_length": context_length,
    "search_r1_div": per_gpu,
    "search_r1_check": check_settings,
}
for _name, _resolver in _RESOLVERS.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)
