"""The pieces behind verl-on-CPU, one by one: platform, engines, rollout ``hf`` (generation, weights)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch


def run_python(code: str, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_cpu_pieces_register_only_with_verl_platform_cpu():
    code = (
        "import verl; from verl.plugin.platform import PlatformRegistry; "
        "from verl.workers.rollout.replica import RolloutReplicaRegistry; "
        "print('cpu' in PlatformRegistry.registered_names(), 'hf' in RolloutReplicaRegistry._registry)"
    )
    assert run_python(code) == "False False"  # a GPU machine never sees them
    assert run_python(code, VERL_PLATFORM="cpu") == "True True"


def test_platform_cpu_through_verl_device_helpers():
    code = (
        "import verl, torch; from verl.utils.device import get_device_name, get_device_id, get_torch_device, "
        "get_nccl_backend, get_resource_name, is_support_ipc; "
        "from verl.workers.engine import EngineRegistry; "
        "t = torch.ones(2).to(get_device_id()); get_torch_device().empty_cache(); get_torch_device().synchronize(); "
        "free, total = get_torch_device().mem_get_info(); "
        "print(get_device_name(), get_device_id(), t.device.type, get_nccl_backend(), get_resource_name(), "
        "is_support_ipc(), 0 < free <= total, "
        "EngineRegistry.get_engine_cls('language_model', 'fsdp2').__name__, "
        "EngineRegistry.get_engine_cls('value_model', 'fsdp2').__name__)"
    )
    assert run_python(code, VERL_PLATFORM="cpu").split() == [
        "cpu",
        "cpu",
        "cpu",
        "gloo",
        "GPU",
        "False",
        "True",
        "CPUFSDPEngineWithLMHead",
        "CPUFSDPEngineWithValueHead",
    ]


def test_verl_process_group_init_works_on_platform_cpu(tmp_path):
    """verl's own initialize_global_process_group_ray would build "cpu:gloo,cpu:gloo"; the platform's
    workaround (docs/upstream.md #1) leaves a working gloo group behind instead."""
    from search_r1_plugin.sandbox.server_process import free_port

    code = (
        "import verl, torch, torch.distributed as dist; "
        "from verl.utils.distributed import initialize_global_process_group_ray; "
        "initialize_global_process_group_ray(); x = torch.ones(1); dist.all_reduce(x); "
        "print(dist.get_backend(), dist.get_world_size(), float(x))"
    )
    out = run_python(code, VERL_PLATFORM="cpu", RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    assert out == "gloo 1 1.0"


@pytest.fixture(scope="module")
def generator(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from search_r1_plugin.cpu.hf_generation import HFGenerator

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    return HFGenerator(model, tiny_tokenizer, [tiny_tokenizer.eos_token_id], max_model_len=2048)


def full_forward_logprobs(model, ids: list[int], start: int, temperature: float = 1.0) -> list[float]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return [float(logp[i - 1, ids[i]]) for i in range(start, len(ids))]


def test_sampling_logprobs_match_a_full_forward_and_batching_changes_nothing(generator, tiny_tokenizer):
    from search_r1_plugin.cpu.hf_generation import SamplingRequest

    prompts = [tiny_tokenizer.encode(t) for t in ("Question: who was born", "the river of", "a b c d e f g h")]
    params = {"temperature": 0.7, "top_p": 0.9, "top_k": 50, "max_tokens": 12, "seed": 3}
    batch = generator.generate([SamplingRequest.from_params(p, params, 100) for p in prompts])
    for prompt, req in zip(prompts, batch):
        assert 0 < len(req.token_ids) <= 12 and len(req.log_probs) == len(req.token_ids)
        # left-padded batched decoding with a KV cache == one full forward at the sampling temperature
        ref = full_forward_logprobs(generator.model, prompt + req.token_ids, len(prompt), 0.7)
        assert req.log_probs == pytest.approx(ref, abs=1e-4)
        # the same seeded request alone gives the same tokens
        solo = generator.generate([SamplingRequest.from_params(prompt, params, 100)])[0]
        assert solo.token_ids == req.token_ids


def test_greedy_max_tokens_and_stop_strings(generator, tiny_tokenizer):
    from search_r1_plugin.cpu.hf_generation import SamplingRequest

    prompt = tiny_tokenizer.encode("Question: where")
    greedy = generator.generate([SamplingRequest.from_params(prompt, {"temperature": 0, "max_tokens": 20}, 100)])[0]
    again = generator.generate([SamplingRequest.from_params(prompt, {"temperature": 0, "max_tokens": 20}, 100)])[0]
    assert greedy.token_ids == again.token_ids and greedy.finish_reason in ("length", "stop")
    assert len(greedy.token_ids) == 20 or greedy.token_ids[-1] == tiny_tokenizer.eos_token_id
    # a stop string the greedy text contains: generation ends on the token that completes it, stop kept
    text = tiny_tokenizer.decode(greedy.token_ids)
    stop = next(text[i : i + 3] for i in range(len(text) // 2, len(text) - 2) if text[i : i + 3].strip())
    cut = generator.generate([SamplingRequest.from_params(prompt, {"temperature": 0, "max_tokens": 20, "stop": [stop]}, 100)])[0]
    assert cut.finish_reason == "stop" and stop in tiny_tokenizer.decode(cut.token_ids)
    assert stop not in tiny_tokenizer.decode(cut.token_ids[:-1])
    assert cut.token_ids == greedy.token_ids[: len(cut.token_ids)]


def test_server_weight_update_changes_logprobs_to_the_actors(tiny_model_dir, tiny_tokenizer):
    """update_weights: after loading an updated actor's state dict, the server's log-probs are the actor's."""
    import asyncio

    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM

    from search_r1_plugin.cpu.hf_rollout import HFRolloutServer

    rollout_cfg = OmegaConf.create(
        {"_target_": "verl.workers.config.RolloutConfig", "name": "hf", "prompt_length": 64, "response_length": 32}
    )
    model_cfg = OmegaConf.create({"_target_": "verl.workers.config.HFModelConfig", "path": tiny_model_dir})
    server = HFRolloutServer(rollout_cfg, model_cfg)
    actor = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():  # "an optimizer step"
        for p in actor.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ids = tiny_tokenizer.encode("Question: who founded the city of")
    before = server.compute_log_probs(ids, 3)
    expected = full_forward_logprobs(actor, ids, 3)
    assert max(abs(a - b) for a, b in zip(before, expected)) > 1e-2
    n = server.update_weights(dict(actor.state_dict()), global_steps=7)
    assert n == len(actor.state_dict())
    assert server.compute_log_probs(ids, 3) == pytest.approx(expected, abs=1e-5)
    out = asyncio.run(server.generate(prompt_ids=ids, sampling_params={"max_tokens": 4, "logprobs": True}, request_id="r"))
    assert out.extra_fields["global_steps"] == 7 and len(out.token_ids) == len(out.log_probs) <= 4
    with pytest.raises(KeyError, match="not in the rollout model"):
        server.update_weights({"no.such.weight": torch.zeros(1)})


def test_server_applies_lora_adapters_as_peft_merges_them(tiny_model_dir, tiny_tokenizer):
    """The adapter path verl takes with lora_rank > 0: adapters only, twice (the base must not drift); the
    server's log-probs are those of peft's own merge_and_unload. A base sync under LoRA names loads too."""
    from omegaconf import OmegaConf
    from peft import LoraConfig, get_peft_model
    from peft.utils.save_and_load import get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from search_r1_plugin.cpu.hf_rollout import HFRolloutServer

    rollout_cfg = OmegaConf.create(
        {"_target_": "verl.workers.config.RolloutConfig", "name": "hf", "prompt_length": 64, "response_length": 32}
    )
    server = HFRolloutServer(rollout_cfg, OmegaConf.create({"_target_": "verl.workers.config.HFModelConfig", "path": tiny_model_dir}))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    peft_config = peft_model.peft_config["default"].to_dict()
    ids = tiny_tokenizer.encode("Question: who founded the city of")
    for _ in range(2):  # two updates: each merge starts from the base weights, not the last merge
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_" in name:
                    p.copy_(0.2 * torch.randn_like(p))
        adapters = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
        assert all(k.startswith("base_model.model.") and ".lora_" in k for k in adapters)
        server.update_weights(adapters, global_steps=1, peft_config=peft_config)
        merged = copy.deepcopy(peft_model).merge_and_unload()
        assert server.compute_log_probs(ids, 3) == pytest.approx(full_forward_logprobs(merged, ids, 3), abs=1e-5)
    # a base sync (verl sends it when the rollout started from dummy weights) names adapted layers .base_layer
    q = "model.layers.0.self_attn.q_proj"
    new_base = {f"base_model.model.{q}.base_layer.weight": torch.zeros_like(server.model.state_dict()[f"{q}.weight"])}
    server.update_weights(new_base, peft_config=peft_config)
    assert not server.model.state_dict()[f"{q}.weight"].any()
    server.update_weights(adapters, peft_config=peft_config)
    module = peft_model.base_model.model.get_submodule(q)
    expected = 2.0 * module.lora_B["default"].weight @ module.lora_A["default"].weight  # alpha / r = 2, over a zero base
    assert torch.allclose(server.model.state_dict()[f"{q}.weight"], expected, atol=1e-6)
    with pytest.raises(KeyError, match="lacks lora_B"):
        server.update_weights({f"base_model.model.{q}.lora_A.weight": torch.zeros(4, 64)}, peft_config=peft_config)


def test_trajectory_weight_versions_are_min_and_max_over_turns():
    from search_r1_plugin.agent_loop import merge_engine_fields

    acc: dict = {}
    for step in (4, 3, 5):  # weights updated while the trajectory was in flight (async trainers)
        merge_engine_fields(acc, {"global_steps": step, "min_global_steps": step, "max_global_steps": step, "spec_num_draft_tokens": 2})
    assert acc == {"global_steps": 4, "min_global_steps": 3, "max_global_steps": 5, "spec_num_draft_tokens": 6}


def test_a_python_path_with_a_space_is_refused_before_ray_starts():
    """Ray's raylet starts workers through a shell with the Python path unquoted: a venv under a folder with a
    space fails late and obscurely (ray-project/ray#5288). Our main_ppo launcher says so first; so does the
    README's main command (recipes/train_cpu.sh) before it installs anything."""
    import pytest

    from search_r1_plugin.errors import ConfigError
    from search_r1_plugin.sandbox.trainer_run import check_ray_can_start_workers

    with pytest.raises(ConfigError, match="path has a space"):
        check_ray_can_start_workers("/home/a user/repo/.venv/bin/python")
    check_ray_can_start_workers("/home/user/repo/.venv/bin/python")


def test_the_readme_main_command_refuses_a_checkout_path_with_a_space(tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spaced = tmp_path / "a folder" / "recipes"
    spaced.mkdir(parents=True)
    shutil.copy(root / "recipes" / "train_cpu.sh", spaced / "train_cpu.sh")
    run = subprocess.run(["bash", str(spaced / "train_cpu.sh")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "path has a space" in run.stderr and not (spaced.parent / ".venv").exists()
