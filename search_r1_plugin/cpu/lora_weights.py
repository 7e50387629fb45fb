"""LoRA adapters into the ``hf`` rollout's plain model, the way vLLM serves them: base weights plus B·A.

With ``actor_rollout_ref.model.lora_rank > 0`` (and ``lora.merge`` false, verl's default) verl sends a
rollout the **adapters only** after every update — peft's state-dict names
(``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``) and the adapter config — and the
base weights once, when the rollout did not load them itself (names with ``.base_layer``). vLLM keeps the
base model and applies the adapter per request; the ``hf`` server has one model, so it keeps a copy of
each adapted base weight and writes ``W = W_base + scale · B @ A`` into the model, which is the function
peft's own ``merge_and_unload`` computes (``tests/test_cpu_platform.py`` compares them).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

_PEFT_PREFIX = "base_model.model."


def is_adapter_update(state: Mapping[str, torch.Tensor]) -> bool:
    return any(".lora_A." in name for name in state)


def _split(name: str) -> tuple[str, str]:
    """``base_model.model.<module>.lora_A.weight`` → (``<module>``, ``A.weight``); ("", "") if not an adapter."""
    module, sep, part = name.removeprefix(_PEFT_PREFIX).rpartition(".lora_")
    return (module, part) if sep else ("", "")


def adapted_weights(adapters: Mapping[str, torch.Tensor]) -> set[str]:
    """The model weights (``<module>.weight``) an adapter update changes."""
    return {f"{module}.weight" for module, _ in map(_split, adapters) if module}


def base_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A base-weight sync under LoRA names the adapted layers ``….base_layer.weight``: the model's own names."""
    return {name.removeprefix(_PEFT_PREFIX).replace(".base_layer.", "."): t for name, t in state.items()}


def lora_scale(peft_config: Mapping[str, Any]) -> float:
    rank, alpha = int(peft_config["r"]), float(peft_config["lora_alpha"])
    return alpha / rank**0.5 if peft_config.get("use_rslora") else alpha / rank


def merged_weights(
    adapters: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], peft_config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """``{module.weight: base + scale · B @ A}`` for every adapted module; ``base`` maps those names to the
    un-adapted weights. An adapter without its pair, or for a weight ``base`` lacks, is an error."""
    scale = lora_scale(peft_config)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in adapters.items():
        module, part = _split(name)
        if part not in ("A.weight", "B.weight"):
            raise KeyError(f"not a LoRA adapter weight: {name!r}")
        pairs.setdefault(module, {})[part[0]] = tensor
    out = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise KeyError(f"LoRA adapter of {module!r} lacks lora_{'B' if 'A' in ab else 'A'}")
        weight = f"{module}.weight"
        if weight not in base:
            raise KeyError(f"LoRA adapter for {weight!r}, which the rollout model does not have")
        w = base[weight]
        out[weight] = w + scale * (ab["B"].to(torch.float32) @ ab["A"].to(torch.float32)).to(w.dtype)
    return out
