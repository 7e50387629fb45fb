"""Hydra presets for ``main_ppo`` (``hydra.searchpath=[pkg://search_r1_plugin.config]``).

Hydra imports this package to read the presets, so the resolver they use is
registered here: ``${search_r1_div:total,gpus,nodes}`` turns the paper's global
micro-batch sizes into per-GPU values for whatever GPU count is configured.
"""

from omegaconf import OmegaConf


def per_gpu(total: int, gpus_per_node: int, nnodes: int = 1) -> int:
    """``total`` spread over all GPUs, at least 1 per GPU."""
    return max(1, int(total) // (int(gpus_per_node) * int(nnodes)))


if not OmegaConf.has_resolver("search_r1_div"):
    OmegaConf.register_new_resolver("search_r1_div", per_gpu)
