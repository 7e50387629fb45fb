"""Hydra presets for ``main_ppo`` (``hydra.searchpath=[pkg://search_r1_plugin.config]``).

Hydra imports this package to read the presets, and the verl plugin entry point
imports it in every process that imports verl (Ray's TaskRunner resolves the config
again), so the resolvers the presets use are registered here:

* ``${search_r1_div:total,gpus,nodes}`` turns the paper's global micro-batch sizes into
  per-GPU values for whatever GPU count is configured;
* ``${search_r1_check:${search_r1},${actor_rollout_ref.rollout.calculate_log_probs}}`` validates
  the ``search_r1`` block (and its fit with rollout log-probs) when the trainer resolves its config
  (TaskRunner start, or ``--cfg job --resolve``), so a bad value stops the run before any model loads
  instead of at the first rollout;
* ``${search_r1_experiment:…}`` names the run (``trainer.experiment_name``, hence its checkpoint folder).
"""

from omegaconf import DictConfig, OmegaConf


def per_gpu(total: int, gpus_per_node: int, nnodes: int = 1) -> int:
    """``total`` spread over all GPUs, at least 1 per GPU."""
    return max(1, int(total) // (int(gpus_per_node) * int(nnodes)))


def check_settings(block: DictConfig, calculate_log_probs: bool = False) -> bool:
    """Raises ``ConfigError`` naming ``search_r1.<key>`` for a bad or unknown setting."""
    from search_r1_plugin.settings import SearchR1Config, check_rollout_logprobs

    config = SearchR1Config.from_mapping(OmegaConf.to_container(block, resolve=True))
    check_rollout_logprobs(config, bool(calculate_log_probs))
    return True


# search_r1 value -> how it reads in a run name when it differs from the paper's default
_RUN_DEFINING = {
    "topk": lambda v: f"topk{v}",
    "max_turns": lambda v: f"max_turns{v}",
    "max_turn_tokens": lambda v: f"turn_tokens{v}",
    "max_obs_length": lambda v: f"obs{v}",
    "mask_retrieved_tokens": lambda v: "mask" if v else "no_mask",
    "turn_cut": lambda v: f"cut_{v}",
}


def experiment_name(run: DictConfig, adv_estimator: str, model_path: str, block: DictConfig) -> str:
    """``<preset or search_r1-<algorithm>-<model>>[-<variant>…]``: distinct for distinct runs.

    verl resumes from ``checkpoints/{project}/{experiment_name}`` by default, so two runs that differ
    only by an ablation must not share the name. Variants are the ablation files' names
    (``search_r1_run.variants``) and every run-defining ``search_r1`` value that differs from the
    paper's, however it was set (file or command line); sorted, so the order of overrides is irrelevant.
    """
    from search_r1_plugin.settings import SearchR1Config

    run = OmegaConf.to_container(run, resolve=True) if isinstance(run, DictConfig) else dict(run or {})
    name = run.get("name") or f"search_r1-{adv_estimator}-{str(model_path).rstrip('/').split('/')[-1].lower()}"
    parts = {k for k, on in (run.get("variants") or {}).items() if on}
    values = OmegaConf.to_container(block, resolve=True)
    defaults = SearchR1Config()
    for key, label in _RUN_DEFINING.items():
        if key in values and values[key] != getattr(defaults, key):
            parts.add(label(values[key]))
    return "-".join([name, *sorted(parts)])


if not OmegaConf.has_resolver("search_r1_experiment"):
    OmegaConf.register_new_resolver("search_r1_experiment", experiment_name)
if not OmegaConf.has_resolver("search_r1_div"):
    OmegaConf.register_new_resolver("search_r1_div", per_gpu)
if not OmegaConf.has_resolver("search_r1_check"):
    OmegaConf.register_new_resolver("search_r1_check", check_settings)
