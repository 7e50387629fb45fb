"""Every shipped preset resolves against verl's own config and passes verl's validate_config."""

import json
from importlib.resources import files

import pandas as pd
import pytest
from omegaconf import OmegaConf

from search_r1_plugin.testing.verl_harness import compose_trainer_config

PRESET_DIR = files("search_r1_plugin.config").joinpath("search_r1")
# cpu.yaml adds CPU overrides to an algorithm preset (+search_r1=[grpo,cpu]); it is not a preset alone.
PRESETS = sorted(p.name[:-5] for p in PRESET_DIR.iterdir()
                 if p.name.endswith(".yaml") and p.name not in ("common.yaml", "cpu.yaml"))
ABLATIONS = sorted(p.name[:-5] for p in files("search_r1_plugin.config").joinpath("search_r1_ablation").iterdir()
                   if p.name.endswith(".yaml"))
QWEN25_CONTEXT = 32768


def validate_offline(preset, tiny_model_dir, overrides=()):
    """verl's validate_config loads the model's HF config; offline, a tiny local Qwen2 stands in for it."""
    return validate(compose_trainer_config(preset, [f"actor_rollout_ref.model.path={tiny_model_dir}", *overrides]))


def validate(cfg):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    OmegaConf.resolve(cfg)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    s, d, r, a = cfg.search_r1, cfg.data, cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.actor
    n_gpus = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
    # batch arithmetic: whole mini-batches, whole micro-batches on every GPU
    assert (d.train_batch_size * r.n) % (a.ppo_mini_batch_size * r.n) == 0
    assert (a.ppo_mini_batch_size * r.n) % (a.ppo_micro_batch_size_per_gpu * n_gpus) == 0
    # budgets: every turn and observation fits in the response; prompt + response fits the model
    needed = (s.max_turns + 1) * s.max_turn_tokens + s.max_turns * s.max_obs_length
    assert r.response_length >= needed, (r.response_length, needed)
    assert d.max_prompt_length + d.max_response_length <= QWEN25_CONTEXT
    return cfg


def test_preset_matrix_is_complete():
    for algo in ("ppo", "grpo", "rloo", "reinforce_pp"):
        for size in ("3b", "7b", "14b"):
            for variant in ("base", "instruct"):
                assert f"{algo}-qwen2.5-{size}-{variant}" in PRESETS
    assert "smoke" in PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_validates(preset, tiny_model_dir):
    model = compose_trainer_config(preset).actor_rollout_ref.model.path
    assert model.startswith("Qwen/Qwen2.5-")
    if "qwen2.5" in preset:
        size, variant = preset.split("qwen2.5-")[1].split("-")
        assert model == f"Qwen/Qwen2.5-{size.upper()}" + ("-Instruct" if variant == "instruct" else "")
    cfg = validate_offline(preset, tiny_model_dir)
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop == "search_r1"
    assert cfg.reward.custom_reward_function.path == "pkg://search_r1_plugin.reward"
    if preset.startswith(("ppo", "grpo")) and preset != "smoke":
        # the paper's hyper-parameters
        assert cfg.data.train_batch_size == 512 and cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 256
        assert cfg.actor_rollout_ref.actor.optim.lr == 1e-6 and cfg.algorithm.gamma == cfg.algorithm.lam == 1.0
        assert cfg.trainer.total_training_steps == 1005 and cfg.search_r1.topk == 3
        assert cfg.actor_rollout_ref.rollout.val_kwargs.temperature == 0
    if preset.startswith("ppo"):
        assert cfg.algorithm.adv_estimator == "gae" and cfg.algorithm.use_kl_in_reward
        assert cfg.critic.optim.lr == 1e-5
    if preset.startswith("grpo"):
        assert cfg.actor_rollout_ref.rollout.n == 5 and cfg.actor_rollout_ref.actor.use_kl_loss
        assert not cfg.algorithm.use_kl_in_reward


@pytest.mark.parametrize("gpus,nodes", [(8, 1), (4, 1), (8, 2), (16, 1)])
def test_per_gpu_values_are_derived_from_layout(gpus, nodes, tiny_model_dir):
    cfg = validate_offline("ppo-qwen2.5-7b-base", tiny_model_dir, [f"trainer.n_gpus_per_node={gpus}",
                                                                   f"trainer.nnodes={nodes}"])
    assert cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 64 // (gpus * nodes)


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_ablation_validates(ablation, tiny_model_dir):
    base = "grpo-qwen2.5-7b-base" if ablation.startswith("group") else "ppo-qwen2.5-7b-base"
    cfg = validate_offline(base, tiny_model_dir, [f"+search_r1_ablation={ablation}"])
    if ablation == "no_mask":
        assert cfg.search_r1.mask_retrieved_tokens is False
    if ablation == "r1":
        assert cfg.search_r1.max_turns == 0


def test_prepare_data_golden(sample_world, tmp_path):
    import shutil

    from recipes.prepare_data import prepare
    from search_r1_plugin.protocol import make_prompt

    root = tmp_path / "world"  # a private copy: the session's sample world is shared by other tests
    shutil.copytree(sample_world["corpus"].parent, root)
    tmp_path = tmp_path / "out"
    # a bad row must be reported, not dropped silently
    with open(root / "sample_nq" / "train.jsonl", "a") as f:
        f.write(json.dumps({"id": "bad1", "question": "  ", "golden_answers": ["x"]}) + "\n")
        f.write(json.dumps({"id": "bad2", "question": "Who?", "golden_answers": []}) + "\n")
        f.write(json.dumps({"id": "bad3", "question": 42, "golden_answers": ["x"]}) + "\n")
        f.write(json.dumps({"id": "bad4", "question": "Who?", "golden_answers": [None]}) + "\n")
    summary = prepare(tmp_path, "sample_nq:train,sample_hotpotqa:train", "sample_nq:test", "search_r1", root, False)
    train = pd.read_parquet(tmp_path / "train.parquet")
    assert list(train.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info", "agent_name"]
    first = json.loads(open(root / "sample_nq" / "train.jsonl").readline())
    row = train.iloc[0]
    assert row.data_source == "sample_nq" and row.agent_name == "search_r1"
    assert list(row.prompt) == [{"role": "user", "content": make_prompt(first["question"])}]
    assert list(row.reward_model["ground_truth"]["target"]) == first["golden_answers"]
    test = pd.read_parquet(tmp_path / "test.parquet")
    indices = [e["index"] for e in train.extra_info] + [e["index"] for e in test.extra_info]
    assert len(indices) == len(set(indices))  # unique across sources and splits
    assert sum(summary["bad"].values()) == 4
    assert (tmp_path / "bad_rows.jsonl").read_text().count("\n") == 4
    assert "None" not in json.dumps([r["reward_model"] for r in pd.read_parquet(tmp_path / "train.parquet")
                                     .to_dict("records")], default=str)


def test_prepare_data_missing_input_is_clear(tmp_path):
    from recipes.prepare_data import DataError, prepare

    with pytest.raises(DataError, match="nq/train.jsonl not found"):
        prepare(tmp_path / "out", "nq:train", "", "search_r1", tmp_path, False)


def test_parquet_through_verl_dataset_and_agent_loop_rows(sample_world, tmp_path, tiny_model_dir, tiny_tokenizer):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from recipes.prepare_data import prepare

    prepare(tmp_path, "sample_nq:train", "sample_nq:test", "search_r1", sample_world["corpus"].parent, False)
    cfg = compose_trainer_config("ppo", [f"actor_rollout_ref.model.path={tiny_model_dir}"])
    ds = RLHFDataset(data_files=[str(tmp_path / "train.parquet")], tokenizer=tiny_tokenizer, config=cfg.data)
    item = ds[0]
    assert item["agent_name"] == "search_r1"
    assert item["raw_prompt"][0]["content"].startswith("Answer the given question.")
    assert item["reward_model"]["ground_truth"]["target"]


def test_dry_run_grpo_prints_masks_and_advantages():
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "recipes.dry_run", "--preset", "grpo", "--questions", "1"],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "adv_estimator=grpo, 5 trajectories" in out.stdout
    spans = [s for s in out.stdout.splitlines() if s.startswith("  0 |") or s.startswith("  1 |")]
    assert any(s.startswith("  0 | +0.000 | '\\n\\n<information>") for s in spans)  # GRPO: zero on observations
    assert spans[-1].startswith("  1 |") and "</answer>" in spans[-1]


def test_prepare_data_rag_template_puts_passages_in_prompt(sample_world, bm25_server, tmp_path):
    from recipes.prepare_data import prepare

    prepare(tmp_path, "sample_nq:train", "", "rag", sample_world["corpus"].parent, False,
            retriever_url=f"{bm25_server}/retrieve", topk=2)
    rows = pd.read_parquet(tmp_path / "train.parquet")
    first = json.loads(open(sample_world["corpus"].parent / "sample_nq" / "train.jsonl").readline())
    content = rows.iloc[0].prompt[0]["content"]
    assert "Documents:\nDoc 1(Title: " in content and "Doc 2(Title: " in content and "Doc 3(" not in content
    assert content.endswith(f"Question: {first['question']}?\n")


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_cpu_preset_composes_with_an_algorithm(algo, tiny_model_dir):
    cfg = validate_offline(f"[{algo},cpu]", tiny_model_dir)
    assert cfg.algorithm.adv_estimator == ("gae" if algo == "ppo" else "grpo")  # the algorithm is kept
    assert cfg.actor_rollout_ref.rollout.name == "hf" and cfg.trainer.device == "cpu"
    assert cfg.actor_rollout_ref.actor.strategy == cfg.critic.strategy == "fsdp2"
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"
    assert cfg.trainer.v1.sampler.custom_sampler.name == "SearchR1ReplayBuffer"


def test_no_mask_with_rollout_logprobs_fails_when_the_config_resolves():
    cfg = compose_trainer_config("ppo", ["+search_r1_ablation=no_mask", "actor_rollout_ref.rollout.calculate_log_probs=true"])
    with pytest.raises(Exception, match="calculate_log_probs=false"):
        OmegaConf.resolve(cfg)
    assert compose_trainer_config("ppo", ["+search_r1_ablation=no_mask"]).actor_rollout_ref.rollout.calculate_log_probs is False


def test_no_two_runs_share_a_checkpoint_folder():
    """verl resumes from checkpoints/{project}/{experiment_name}: every run the recipes README lists,
    and every ablation on a PPO and a GRPO preset, must get its own folder."""
    import re

    readme = files("recipes").joinpath("README.md").read_text()
    runs = {(p, a) for p, a in re.findall(r"\+search_r1=([\w.\-]+)(?: \+search_r1_ablation=(\w+))?", readme)
            if p in PRESETS}
    assert len(runs) >= 15  # the README's table
    runs |= {(p, "") for p in PRESETS}
    for base in ("ppo-qwen2.5-7b-base", "grpo-qwen2.5-7b-base"):
        runs |= {(base, a) for a in ABLATIONS if not (a.startswith("group") and base.startswith("ppo"))}
    runs |= {("[grpo,cpu]", ""), ("[ppo,cpu]", "")}
    folders = {}
    for preset, ablation in sorted(runs):
        cfg = compose_trainer_config(preset, [f"+search_r1_ablation={ablation}"] if ablation else [])
        folder = OmegaConf.to_container(cfg.trainer, resolve=True)["default_local_dir"]
        assert folder not in folders, f"{preset} {ablation} and {folders[folder]} share {folder}"
        folders[folder] = (preset, ablation)
    assert len(folders) == len(runs) >= 50
    # a command-line value that changes the run changes the folder too
    base = compose_trainer_config("ppo-qwen2.5-7b-base").trainer.experiment_name
    assert compose_trainer_config("ppo-qwen2.5-7b-base", ["search_r1.topk=7"]).trainer.experiment_name == base + "-topk7"


def test_preset_defaults_are_the_settings_defaults():
    """common.yaml's search_r1 block restates SearchR1Config's defaults (the paper's): they must agree."""
    from dataclasses import asdict

    from search_r1_plugin.settings import SearchR1Config

    block = OmegaConf.to_container(compose_trainer_config("ppo").search_r1, resolve=True)
    assert block == asdict(SearchR1Config())
