"""verl's FSDP training engines, registered for the ``cpu`` platform through ``EngineRegistry``.

verl 0.9.1 registers ``FSDPEngineWithLMHead`` (actor, reference) and ``FSDPEngineWithValueHead``
(critic) for ``cuda``/``npu`` only. The classes below are verl's own engines with two CPU
differences, each the narrowest override of a method that assumes a GPU
(``docs/upstream.md`` #3 and #4):

* forward-only engines (the reference policy) are not wrapped with FSDP2's
  ``CPUOffloadPolicy(pin_memory=True)``: on CPU there is nowhere to offload to, and pinning
  memory needs a CUDA runtime;
* the critic's value head is loaded with the attention implementation of the model config
  (``sdpa`` by the ``cpu`` preset) instead of the hard-coded ``flash_attention_2``.
"""

from __future__ import annotations

import warnings

import torch
from verl.workers.engine import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

from search_r1_plugin.cpu.platform import PLATFORM_NAME

BACKENDS = ["fsdp", "fsdp2"]


class _NoPinnedOffloadForForwardOnly:
    """Builds forward-only engines without FSDP2's pinned-memory CPU offload."""

    def _build_fsdp_module(self, module):
        forward_only = self.engine_config.forward_only
        if not forward_only:
            return super()._build_fsdp_module(module)
        self.engine_config.forward_only = False  # the only switch verl reads to force the offload policy
        try:
            module = super()._build_fsdp_module(module)
        finally:
            self.engine_config.forward_only = True
        self._is_offload_param = False  # as verl sets for forward-only engines
        self._is_offload_optimizer = False
        return module


@EngineRegistry.register(model_type="language_model", backend=BACKENDS, device=PLATFORM_NAME)
class CPUFSDPEngineWithLMHead(_NoPinnedOffloadForForwardOnly, FSDPEngineWithLMHead):
    """Actor and reference policy on CPU."""


def load_value_model(local_path: str, torch_dtype: torch.dtype, hf_config, trust_remote_code: bool):
    """``AutoModelForTokenClassification`` (one label = the value) with the config's attention."""
    from transformers import AutoModelForTokenClassification

    attn = getattr(hf_config, "_attn_implementation", None) or "sdpa"
    if attn.startswith("flash_attention"):
        attn = "sdpa"
    return AutoModelForTokenClassification.from_pretrained(
        pretrained_model_name_or_path=local_path,
        torch_dtype=torch_dtype,
        config=hf_config,
        attn_implementation=attn,
        trust_remote_code=trust_remote_code,
    )


@EngineRegistry.register(model_type="value_model", backend=BACKENDS, device=PLATFORM_NAME)
class CPUFSDPEngineWithValueHead(_NoPinnedOffloadForForwardOnly, FSDPEngineWithValueHead):
    """Critic on CPU: verl's value engine, with the value head loaded without flash attention."""

    def _build_module(self):
        from verl.models.transformers.monkey_patch import apply_monkey_patch
        from verl.utils.torch_dtypes import PrecisionType

        dtype = self.engine_config.model_dtype or ("float32" if not self.engine_config.forward_only else "bfloat16")
        torch_dtype = PrecisionType.to_dtype(dtype)
        hf_config = self.model_config.hf_config
        # as verl's value-model branch of FSDPEngine._build_module
        hf_config.num_labels = 1
        hf_config.classifier_dropout = 0.0
        hf_config.hidden_dropout = "0"
        hf_config.summary_dropout_prob = 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = load_value_model(self.model_config.local_path, torch_dtype, hf_config, self.model_config.trust_remote_code)
        apply_monkey_patch(
            model=module,
            use_remove_padding=self.use_remove_padding,
            ulysses_sp_size=self.ulysses_sequence_parallel_size,
            use_fused_kernels=self.model_config.use_fused_kernels,
        )
        module.to(torch_dtype)
        if self.model_config.enable_gradient_checkpointing:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return module
