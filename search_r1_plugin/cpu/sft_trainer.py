"""verl's SFT trainer on the ``cpu`` platform (the paper's SFT and rejection-sampling rows, in CI):

    VERL_PLATFORM=cpu torchrun --standalone --nproc_per_node 1 -m search_r1_plugin.cpu.sft_trainer data.train_files=… model.path=…

takes the config and overrides of ``torchrun -m verl.trainer.sft_trainer``, with :data:`CPU_OVERRIDES` put
first (yours win). Why it exists: verl 0.9.1's ``run_sft`` first calls
``initialize_global_process_group``, which builds the backend string ``cpu:gloo,cpu:gloo`` on a CPU platform
(torch refuses it), and our platform's workaround for that string (it opens the group with plain gloo when
verl asks for the backend name) then makes verl's own call the second one (``docs/upstream.md`` #11). This is
``run_sft`` with that one call made as the platform makes it; everything else (config, dataset, engine,
``SFTTrainer.fit``, checkpoints) is verl's. On GPUs, run verl's own ``verl.trainer.sft_trainer``.
"""

from __future__ import annotations

import sys

import hydra

# What the cpu platform needs of verl's SFT config; the cpu variant sets the same for main_ppo.
CPU_OVERRIDES = (
    "trainer.device=cpu",
    "trainer.logger=[console]",
    "+model.override_config.attn_implementation=sdpa",  # no flash-attention on CPU
    "model.use_remove_padding=false",
    "model.enable_gradient_checkpointing=false",
    "engine.strategy=fsdp2",
    "engine.dtype=float32",  # fp32 compute: CPUs gain nothing from bf16 (FSDP's default mixed precision)
    "+engine.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
    "engine.use_torch_compile=false",
    "data.use_dynamic_bsz=false",
)


@hydra.main(config_path="pkg://verl.trainer.config", config_name="sft_trainer_engine", version_base=None)
def main(config) -> None:
    import torch.distributed
    from verl.trainer.sft_trainer import SFTTrainer
    from verl.utils.device import auto_set_device, get_device_name

    from search_r1_plugin.cpu.platform import init_gloo_process_group_from_env

    auto_set_device(config)
    if get_device_name() != "cpu":
        raise RuntimeError("search_r1_plugin.cpu.sft_trainer needs VERL_PLATFORM=cpu; on GPUs run verl.trainer.sft_trainer")
    if not init_gloo_process_group_from_env():
        raise RuntimeError("no process group: start it with torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)")
    trainer = SFTTrainer(config=config)
    trainer.fit()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.argv[1:1] = CPU_OVERRIDES
    main()
