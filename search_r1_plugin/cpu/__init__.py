"""verl's own trainer on CPU: platform ``cpu``, FSDP engines for it, and rollout ``hf``.

Loaded by the plugin entry point only when ``VERL_PLATFORM=cpu``, so nothing here is ever
active on a GPU machine. ``search_r1_variant=[cpu]`` (config group ``search_r1_variant``) sets every override
the trainer needs; see ``docs/cpu_training.md``. The few places where verl 0.9.1 has no hook
are listed, each with the upstream patch it stands for, in ``docs/upstream.md``.
"""

# Order matters: verl's engine and rollout modules ask for the platform when they are imported, so
# platform "cpu" must be registered before anything below imports them.
from search_r1_plugin.cpu import platform  # noqa: F401  (registers platform "cpu")

# isort: split
from search_r1_plugin.cpu import engines  # noqa: F401  (registers the FSDP engines for device "cpu")
from search_r1_plugin.cpu.hf_rollout import register as _register_rollout

_register_rollout()
