"""Every shipped config group resolves against verl's own config and passes verl's validate_config;
every command of recipes/README.md resolves to its own checkpoint folder."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from search_r1_plugin.presets import choices, compose, split_preset_words

ALGOS, MODELS, VARIANTS = choices("search_r1_algo"), choices("search_r1_model"), choices("search_r1_variant")
RECIPES_README = Path(__file__).resolve().parents[1] / "recipes" / "README.md"
QWEN25_CONTEXT = 32768


def validate_offline(algo, model, tiny_model_dir, variants=(), overrides=()):
    """verl's validate_config loads the model's HF config; offline, a tiny local Qwen2 stands in for it."""
    cfg = compose(algo, model, variants, overrides)
    assert cfg.actor_rollout_ref.model.path  # the file's path, checked by the caller before it is replaced
    return validate(compose(algo, model, variants, [*overrides, f"actor_rollout_ref.model.path={tiny_model_dir}"]))


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
    assert r.response_length == d.max_response_length == needed, (r.response_length, needed)
    assert d.max_prompt_length + d.max_response_length <= QWEN25_CONTEXT
    # vLLM sizes its KV cache for the run's longest context, not the model's 32k-128k positions (+1: SGLang's
    # server keeps one token of headroom)
    assert r.max_model_len == d.max_prompt_length + d.max_response_length + 1
    return cfg


def test_the_groups_hold_the_paper_matrix():
    assert set(ALGOS) == {"ppo", "grpo", "rloo", "reinforce_pp"}
    assert {f"qwen2.5-{size}-{kind}" for size in ("3b", "7b", "14b") for kind in ("base", "instruct")} < set(MODELS)
    assert set(VARIANTS) == {"cpu", "learn", "smoke", "no_mask", "r1", "sglang", "stable", "lora"}
    assert {f"qwen3-{size}{kind}" for size in ("4b", "8b") for kind in ("", "-base")} < set(MODELS)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("model", MODELS)
def test_every_algorithm_and_model_validates(algo, model, tiny_model_dir):
    family, size, *kind = model.split("-")
    path = compose(algo, model).actor_rollout_ref.model.path
    suffix = {"instruct": "-Instruct", "base": "" if family == "qwen2.5" else "-Base"}[kind[0]] if kind else ""
    assert path == f"Qwen/{family.capitalize()}-{size.upper()}{suffix}"
    cfg = validate_offline(algo, model, tiny_model_dir)
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop == "search_r1"
    assert cfg.reward.custom_reward_function.path == "pkg://search_r1_plugin.reward"
    # the paper's hyper-parameters
    assert cfg.data.train_batch_size == 512 and cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 256
    assert cfg.actor_rollout_ref.actor.optim.lr == 1e-6 and cfg.algorithm.gamma == cfg.algorithm.lam == 1.0
    assert cfg.trainer.total_training_steps == 1005 and cfg.search_r1.topk == 3
    assert cfg.actor_rollout_ref.rollout.val_kwargs.temperature == 0 and cfg.data.max_response_length == 4500
    assert cfg.actor_rollout_ref.rollout.tensor_model_parallel_size == (2 if size == "14b" else 1)
    if algo == "ppo":
        assert cfg.algorithm.adv_estimator == "gae" and cfg.algorithm.use_kl_in_reward
        assert cfg.critic.optim.lr == 1e-5
    else:  # critic-free: KL as a loss
        assert cfg.actor_rollout_ref.actor.use_kl_loss and not cfg.algorithm.use_kl_in_reward
    if algo == "grpo":
        assert cfg.actor_rollout_ref.rollout.n == 5


def test_model_and_variant_win_whatever_the_command_line_order():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    def resolved(overrides):
        GlobalHydra.instance().clear()
        with initialize_config_module("search_r1_plugin.config", version_base=None):
            return OmegaConf.to_container(hydra_compose("search_r1_trainer", overrides=overrides), resolve=True)

    a = resolved(["+search_r1_algo=grpo", "search_r1_model=qwen2.5-3b-base", "search_r1_variant=[cpu]"])
    b = resolved(["search_r1_variant=[cpu]", "search_r1_model=qwen2.5-3b-base", "+search_r1_algo=grpo"])
    assert a == b and a["actor_rollout_ref"]["rollout"]["n"] == 2  # the variant's value, not the algorithm's 5


@pytest.mark.parametrize("gpus,nodes", [(8, 1), (4, 1), (8, 2), (16, 1)])
def test_per_gpu_values_are_derived_from_layout(gpus, nodes, tiny_model_dir):
    cfg = validate_offline(
        "ppo", "qwen2.5-7b-base", tiny_model_dir, overrides=[f"trainer.n_gpus_per_node={gpus}", f"trainer.nnodes={nodes}"]
    )
    assert cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 64 // (gpus * nodes)


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - {"cpu"}))
def test_variant_validates(variant, tiny_model_dir):
    model = "qwen2.5-0.5b-instruct" if variant == "smoke" else "qwen2.5-7b-base"
    # learn sizes the CPU run of cpu; verl validates a LoRA rank against the installed vLLM, which CPU lacks
    variants = ["cpu", variant] if variant in ("learn", "lora") else [variant]
    cfg = validate_offline("grpo" if variant == "smoke" else "ppo", model, tiny_model_dir, variants)
    if variant == "no_mask":
        assert cfg.search_r1.mask_retrieved_tokens is False
    if variant == "r1":
        assert cfg.search_r1.max_turns == 0 and cfg.data.max_response_length == 500
    if variant == "smoke":
        assert cfg.trainer.n_gpus_per_node == 1 and cfg.trainer.total_training_steps == 3
    if variant == "lora":
        gpu = compose("ppo", model, variants=["lora"])  # what a GPU run gets, vLLM's rank check aside
        assert gpu.actor_rollout_ref.model.lora_rank == 64 and gpu.actor_rollout_ref.rollout.load_format == "safetensors"
        assert gpu.actor_rollout_ref.actor.optim.lr == 1e-5 and cfg.actor_rollout_ref.model.target_modules == "all-linear"


@pytest.mark.parametrize("turns", [1, 2, 3, 5])
def test_response_budget_follows_the_turns(turns, tiny_model_dir):
    cfg = validate_offline("ppo", "qwen2.5-7b-base", tiny_model_dir, overrides=[f"search_r1.max_turns={turns}"])
    assert cfg.data.max_response_length == (turns + 1) * 500 + turns * 500
    assert cfg.actor_rollout_ref.rollout.max_model_len == 512 + (turns + 1) * 500 + turns * 500 + 1


def test_prepare_data_golden(sample_world, tmp_path):
    import shutil

    from search_r1_plugin.data_prep import prepare
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
    assert "None" not in json.dumps(
        [r["reward_model"] for r in pd.read_parquet(tmp_path / "train.parquet").to_dict("records")], default=str
    )


def test_prepare_data_missing_input_is_clear(tmp_path):
    from search_r1_plugin.data_prep import DataError, prepare

    with pytest.raises(DataError, match="nq/train.jsonl not found"):
        prepare(tmp_path / "out", "nq:train", "", "search_r1", tmp_path, False)


def test_parquet_through_verl_dataset_and_agent_loop_rows(sample_world, tmp_path, tiny_model_dir, tiny_tokenizer):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from search_r1_plugin.data_prep import prepare

    prepare(tmp_path, "sample_nq:train", "sample_nq:test", "search_r1", sample_world["corpus"].parent, False)
    cfg = compose("ppo", overrides=[f"actor_rollout_ref.model.path={tiny_model_dir}"])
    ds = RLHFDataset(data_files=[str(tmp_path / "train.parquet")], tokenizer=tiny_tokenizer, config=cfg.data)
    item = ds[0]
    assert item["agent_name"] == "search_r1"
    assert item["raw_prompt"][0]["content"].startswith("Answer the given question.")
    assert item["reward_model"]["ground_truth"]["target"]


def test_dry_run_grpo_prints_masks_and_advantages():
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "search_r1_plugin.cli", "dry-run", "--algo", "grpo", "--questions", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "adv_estimator=grpo, 5 trajectories" in out.stdout
    spans = [s for s in out.stdout.splitlines() if s.startswith("  0 |") or s.startswith("  1 |")]
    assert any(s.startswith("  0 | +0.000 | '\\n\\n<information>") for s in spans)  # GRPO: zero on observations
    assert spans[-1].startswith("  1 |") and "</answer>" in spans[-1]


def test_prepare_data_rag_template_puts_passages_in_prompt(sample_world, bm25_server, tmp_path):
    from search_r1_plugin.data_prep import prepare

    prepare(tmp_path, "sample_nq:train", "", "rag", sample_world["corpus"].parent, False, retriever_url=f"{bm25_server}/retrieve", topk=2)
    rows = pd.read_parquet(tmp_path / "train.parquet")
    first = json.loads(open(sample_world["corpus"].parent / "sample_nq" / "train.jsonl").readline())
    content = rows.iloc[0].prompt[0]["content"]
    assert "Documents:\nDoc 1(Title: " in content and "Doc 2(Title: " in content and "Doc 3(" not in content
    assert content.endswith(f"Question: {first['question']}?\n")


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_cpu_variant_composes_with_an_algorithm(algo, tiny_model_dir):
    cfg = validate_offline(algo, None, tiny_model_dir, ["cpu"])
    assert cfg.algorithm.adv_estimator == ("gae" if algo == "ppo" else "grpo")  # the algorithm is kept
    assert cfg.actor_rollout_ref.rollout.name == "hf" and cfg.trainer.device == "cpu"
    assert cfg.actor_rollout_ref.actor.strategy == cfg.critic.strategy == "fsdp2"
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"
    assert cfg.trainer.v1.sampler.custom_sampler.name == "SearchR1ReplayBuffer"


def test_no_mask_with_rollout_logprobs_fails_when_the_config_resolves():
    cfg = compose("ppo", None, ["no_mask"], ["actor_rollout_ref.rollout.calculate_log_probs=true"])
    with pytest.raises(Exception, match="calculate_log_probs=false"):
        OmegaConf.resolve(cfg)
    assert compose("ppo", None, ["no_mask"]).actor_rollout_ref.rollout.calculate_log_probs is False


def test_sglang_runs_only_with_the_tokenizer_its_stop_strings_need(tiny_model_dir):
    """SGLang refuses stop strings without its tokenizer, and verl's default skips it: the sglang variant turns
    it on, and sglang without it fails when the config resolves, naming the key."""
    cfg = validate_offline("grpo", "qwen2.5-3b-base", tiny_model_dir, variants=["sglang"])
    assert cfg.actor_rollout_ref.rollout.name == "sglang" and cfg.actor_rollout_ref.rollout.skip_tokenizer_init is False
    with pytest.raises(Exception, match="actor_rollout_ref.rollout.skip_tokenizer_init=true"):
        OmegaConf.resolve(compose("grpo", None, [], ["actor_rollout_ref.rollout.name=sglang"]))
    # vLLM ignores it: verl starts vLLM with its tokenizer
    assert compose("grpo", None, []).actor_rollout_ref.rollout.skip_tokenizer_init is True
    OmegaConf.resolve(compose("grpo", None, []))


def readme_runs() -> list[str]:
    """Every ``search-r1 train …`` command in recipes/README.md, as written."""
    return re.findall(r"`search-r1 train ([^`…]+)`", RECIPES_README.read_text())


def test_no_two_runs_share_a_checkpoint_folder():
    """verl resumes from checkpoints/{project}/{experiment_name}: every distinct run the recipes README lists,
    every algorithm x model x variant combination, and the README's ablation values must get their own folder."""
    # data paths do not name a run (the README says so): the smoke check on the sample is the smoke run
    runs = {tuple(w for w in cmd.split() if not w.startswith("data.")) for cmd in readme_runs()}
    assert len(runs) >= 18, runs  # the paper-row table and the ablation table
    for algo in ALGOS:
        for model in MODELS:
            for variants in ([], ["no_mask"], ["r1"], ["no_mask", "r1"], ["cpu"], ["smoke"]):
                runs.add((algo, model, *variants))
    for value in (1, 5):  # the paper's other top-k values, turns and group sizes (3 / 5 / 4 are the defaults)
        runs |= {
            ("ppo", "qwen2.5-7b-base", f"search_r1.topk={value}"),
            ("grpo", "qwen2.5-7b-base", f"actor_rollout_ref.rollout.n={value if value != 5 else 3}"),
        }
    runs |= {("ppo", "qwen2.5-7b-base", f"search_r1.max_turns={t}") for t in (1, 2, 3, 5)}
    folders = {}
    for words in sorted(runs):
        algo, model, variants, overrides = split_preset_words(words)
        cfg = compose(algo, model, variants, overrides)
        folder = OmegaConf.to_container(cfg.trainer, resolve=True)["default_local_dir"]
        assert folder not in folders, f"{words} and {folders[folder]} share {folder}"
        folders[folder] = words
    assert len(folders) == len(runs) >= 170
    # values restated at their defaults are the same run, and the order of words does not matter
    base = compose("ppo", "qwen2.5-7b-base").trainer.experiment_name
    assert base == "search_r1-ppo-qwen2.5-7b"
    assert compose("ppo", "qwen2.5-7b-base", overrides=["search_r1.topk=3"]).trainer.experiment_name == base
    assert (
        compose("ppo", "qwen2.5-7b-base", ["r1", "no_mask"]).trainer.experiment_name
        == compose("ppo", "qwen2.5-7b-base", ["no_mask", "r1"]).trainer.experiment_name
    )


def test_every_readme_command_is_a_valid_run():
    from search_r1_plugin.presets import main_ppo_command

    for cmd in readme_runs():
        algo, model, variants, overrides = split_preset_words(cmd.split())
        assert main_ppo_command(algo, model, variants, overrides)[4].startswith("+search_r1_algo=")


def test_preset_defaults_are_the_settings_defaults():
    """The presets' search_r1 block comes from SearchR1Config (Hydra's ConfigStore): the paper's values, and
    a default set in the dataclass reaches main_ppo's config; no preset file restates the block."""
    from dataclasses import asdict

    from search_r1_plugin.settings import SearchR1Config

    block = OmegaConf.to_container(compose("ppo").search_r1, resolve=True)
    assert block == asdict(SearchR1Config())
    config_dir = Path(__file__).parents[1] / "search_r1_plugin" / "config"
    restating = []
    for path in config_dir.rglob("*.yaml"):
        values = OmegaConf.to_container(OmegaConf.load(path).get("search_r1") or OmegaConf.create()) or {}
        # a preset sets the values it changes; one that lists every key (or re-declares a default) restates it
        restating += [f"{path.name}: search_r1.{k}" for k, v in values.items() if v == asdict(SearchR1Config()).get(k) and k != "health"]
    assert not restating, restating


def test_several_retrievers_on_the_command_line():
    """``search_r1.retriever_url`` takes a list (or a comma-separated string) of servers; a bad one stops the run."""
    from search_r1_plugin.retrieval_client import client_from_config
    from search_r1_plugin.settings import SearchR1Config

    cfg = compose("ppo", overrides=["search_r1.retriever_url=[http://node1:8000/retrieve,http://node2:8000/retrieve]"])
    OmegaConf.resolve(cfg)  # search_r1_check accepts it
    settings = SearchR1Config.from_mapping(OmegaConf.to_container(cfg.search_r1))
    assert [e.url for e in client_from_config(settings).endpoints] == ["http://node1:8000/retrieve", "http://node2:8000/retrieve"]
    bad = compose("ppo", overrides=["search_r1.retriever_url=[http://node1:8000/retrieve,node2:8000]"])
    with pytest.raises(Exception, match="comma-separated"):
        OmegaConf.resolve(bad)


def test_models_exported_by_verl_get_distinct_readable_run_names():
    """verl exports every run's model as …/global_step_N/actor/huggingface: the run name must still differ."""
    names = {
        compose("ppo", overrides=[f"actor_rollout_ref.model.path=/ckpt/{run}/global_step_100/actor/huggingface"]).trainer.experiment_name
        for run in ("run_a", "run_b")
    }
    assert len(names) == 2 and all(n.startswith("search_r1-ppo-run_") for n in names), names
    assert compose("ppo", "qwen2.5-7b-base").trainer.experiment_name == "search_r1-ppo-qwen2.5-7b"


def test_resume_refuses_another_runs_checkpoints(tmp_path):
    """The identity recorded with a checkpoint folder must match before verl's auto-resume continues it."""
    import json

    from search_r1_plugin.run_identity import CHECKPOINT_MARKER, FILE_NAME, record

    run_dir = tmp_path / "ckpt"
    base = [f"trainer.default_local_dir={run_dir}"]
    cfg = compose("grpo", overrides=base)
    OmegaConf.resolve(cfg)
    identity = json.loads(cfg.trainer.v1.sampler.sampler_kwargs.run_identity)
    assert identity["actor_rollout_ref.actor.optim.lr"] == 1e-6 and "search_r1.retriever_url" not in identity
    record(str(run_dir), "auto", identity)
    (run_dir / CHECKPOINT_MARKER).write_text("100")
    same = compose("grpo", overrides=[*base, "search_r1.retriever_url=http://elsewhere:1/retrieve", "trainer.logger=[console]"])
    OmegaConf.resolve(same)  # where the retriever is, and logging, are not what defines the run
    for change, key in (
        ("actor_rollout_ref.actor.optim.lr=3e-6", "actor_rollout_ref.actor.optim.lr"),
        ("search_r1.topk=5", "search_r1.topk"),
    ):
        other = compose("grpo", overrides=[*base, change, "trainer.experiment_name=pinned"])
        with pytest.raises(Exception, match=f"{key}.*trainer.experiment_name=<new name>"):
            OmegaConf.resolve(other)
        explicit = compose("grpo", overrides=[*base, change, "trainer.resume_mode=resume_path"])
        OmegaConf.resolve(explicit)  # continuing on purpose is allowed
    assert json.loads((run_dir / FILE_NAME).read_text()) == identity


def test_stable_variant_reaches_verls_group_filtering_through_our_sampler():
    """verl gives algorithm.filter_groups only to its own buffer; the presets hand it to ours, which gives verl's
    ReplayBuffer what verl's trainer would (one prompt at a time, the metric, the in-flight limit)."""
    from search_r1_plugin.training_metrics import filter_groups_options

    cfg = compose("grpo", None, ["stable"])
    OmegaConf.resolve(cfg)
    kwargs = cfg.trainer.v1.sampler.sampler_kwargs
    assert cfg.actor_rollout_ref.actor.clip_ratio_high == 0.28
    assert filter_groups_options(kwargs.filter_groups) == {"filter_groups_metric": "reward", "max_inflight_gen_batches": 1}
    plain = compose("grpo", None, [])
    OmegaConf.resolve(plain)
    assert filter_groups_options(plain.trainer.v1.sampler.sampler_kwargs.filter_groups) == {}
    with pytest.raises(ValueError, match="filter_groups.metric"):
        filter_groups_options({"enable": True, "metric": None})
