"""Entry point loaded by ``import verl`` (group ``verl.plugins``): registers our pieces.

verl swallows plugin import errors at DEBUG level, so this module keeps its
imports few and ``search-r1 doctor`` re-imports it to surface any failure.

Registered:
* agent loop ``search_r1`` (:mod:`search_r1_plugin.agent_loop`);
* the presets' OmegaConf resolvers (``search_r1_run_identity``, ``search_r1_experiment``,
  ``search_r1_response_budget``, ``search_r1_context_length``, ``search_r1_div``, ``search_r1_check``:
  :mod:`search_r1_plugin.config`). Hydra registers them in the driver when it reads the
  presets, but ``main_ppo`` resolves the config again in Ray's TaskRunner process, which only
  ran ``import verl``: without this import every preset run would stop there with
  "Unsupported interpolation type";
* only with ``VERL_PLATFORM=cpu``: verl's trainer on CPU (:mod:`search_r1_plugin.cpu`: platform
  ``cpu``, FSDP engines for it, rollout ``hf``). Never imported otherwise.
The reward is not registered but referenced as
``reward.custom_reward_function.path=pkg://search_r1_plugin.reward``; state
masking needs no hook on verl 0.9.1 (see ``docs/masking.md``).
"""

import os

from search_r1_plugin import (
    agent_loop,  # noqa: F401  (registers "search_r1")
    config,  # noqa: F401  (registers the presets' resolvers)
)

if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
    from search_r1_plugin import cpu  # noqa: F401  (platform, engines, rollout "hf")
