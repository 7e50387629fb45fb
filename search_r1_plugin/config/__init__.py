"""Hydra presets for ``main_ppo`` (``hydra.searchpath=[pkg://search_r1_plugin.config]``).

Hydra imports this package to read the presets, and the verl plugin entry point
imports it in every process that imports verl (Ray's TaskRunner resolves the config
again), so the resolvers the presets use are registered here:

* ``${search_r1_div:total,gpus,nodes}`` turns the paper's global micro-batch sizes into
  per-GPU values for whatever GPU count is configured;
* ``${search_r1_check:${search_r1},${actor_rollout_ref.rollout.calculate_log_probs}}`` validates
  the ``search_r1`` block (and its fit with rollout log-probs) when the trainer resolves its config (TaskRunner start, or ``--cfg job --resolve``), so a bad value stops
  the run before any model loads instead of at the first rollout.
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


if not OmegaConf.has_resolver("search_r1_div"):
    OmegaConf.register_new_resolver("search_r1_div", per_gpu)
if not OmegaConf.has_resolver("search_r1_check"):
    OmegaConf.register_new_resolver("search_r1_check", check_settings)
