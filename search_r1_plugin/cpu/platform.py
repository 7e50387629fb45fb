"""verl platform ``cpu``: verl's trainer on a machine without accelerators (CI, laptops).

Registered through verl's ``PlatformRegistry`` and selected only with ``VERL_PLATFORM=cpu``
(verl never auto-detects it, so a GPU machine is never affected). What it provides:

* ``device_name`` "cpu", collectives over gloo;
* ``current_device()`` returns the *string* ``"cpu"``: verl writes ``tensor.to(get_device_id())``,
  and an integer there means ``cuda:N``;
* a device module = ``torch.cpu`` plus no-op cache, synchronisation, memory and RNG calls that
  verl makes on ``torch.cuda``-like modules;
* Ray sees the processes' "GPUs" as ``GPU`` resources: the preset fakes them with
  ``ray_init.num_gpus`` so verl's resource pools (which count only accelerators) can be placed.

One gap has no hook in verl 0.9.1 (``docs/upstream.md`` #1): ``initialize_global_process_group_ray``
always builds the backend string ``cpu:gloo,{device}:{backend}``, which on this platform reads
``cpu:gloo,cpu:gloo`` and torch rejects it ("Duplicate device type cpu"). verl skips its own
initialisation when a process group exists, so :meth:`PlatformCPU.communication_backend_name` (the
call verl makes right before) first initialises the default group with plain ``gloo`` from the
worker's ``RANK``/``WORLD_SIZE``/``MASTER_*`` environment. That is the whole workaround.
"""

from __future__ import annotations

import os
import types
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Optional

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

PLATFORM_NAME = "cpu"


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


def _mem_get_info(*_args: Any, **_kwargs: Any) -> tuple[int, int]:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return free, pages


def _zero(*_args: Any, **_kwargs: Any) -> int:
    return 0


def _make_device_module() -> types.ModuleType:
    """``torch.cpu`` with the ``torch.cuda`` calls verl makes (cache, sync, memory stats, RNG)."""
    mod = types.ModuleType("search_r1_cpu_device")
    for name in dir(torch.cpu):
        if not name.startswith("__"):
            setattr(mod, name, getattr(torch.cpu, name))
    for name in (
        "empty_cache",
        "synchronize",
        "set_device",
        "reset_peak_memory_stats",
        "ipc_collect",
        "reset_max_memory_allocated",
        "manual_seed",
        "manual_seed_all",
    ):
        setattr(mod, name, _noop)
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved"):
        setattr(mod, name, _zero)
    mod.mem_get_info = _mem_get_info
    mod.memory_stats = lambda *a, **k: {}
    mod.is_available = lambda: True
    mod.device_count = lambda: 1
    mod.current_device = lambda: PLATFORM_NAME
    mod.get_rng_state = lambda *a, **k: torch.get_rng_state()
    mod.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    mod.get_device_name = lambda *a, **k: "cpu"
    return mod


def init_gloo_process_group_from_env() -> bool:
    """Initialise the default process group with gloo if this is a verl worker that has none yet.

    Returns True when it initialised the group. Outside a worker (no ``RANK``/``WORLD_SIZE``/
    ``MASTER_ADDR``) it does nothing, so the platform stays usable in drivers and tests.
    """
    if not torch.distributed.is_available() or torch.distributed.is_initialized():
        return False
    env = os.environ
    if not all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        return False
    torch.distributed.init_process_group(
        backend="gloo",
        rank=int(env["RANK"]),
        world_size=int(env["WORLD_SIZE"]),
        timeout=timedelta(seconds=int(env.get("SEARCH_R1_GLOO_TIMEOUT_S", "3600"))),
        init_method=env.get("DIST_INIT_METHOD") or None,
    )
    return True


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl on CPU cores only (see module docstring)."""

    _device_module: Optional[types.ModuleType] = None

    @property
    def device_name(self) -> str:
        return PLATFORM_NAME

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        if PlatformCPU._device_module is None:
            PlatformCPU._device_module = _make_device_module()
        return PlatformCPU._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: only VERL_PLATFORM=cpu selects it.
        return False

    def current_device(self) -> str:  # type: ignore[override]
        return PLATFORM_NAME

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        # verl calls this right before init_process_group("cpu:gloo,cpu:gloo"), which torch rejects;
        # an existing group makes verl skip that call (docs/upstream.md #1).
        init_gloo_process_group_from_env()
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        # The preset gives Ray fake "GPU"s (ray_init.num_gpus) so verl's resource pools place workers.
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None
