"""The installed package as a user meets it: entry point, Hydra presets, doctor."""

import os
import subprocess
import sys

import pytest

ENV = dict(os.environ, HF_HUB_OFFLINE="1")


def run(*args, timeout=180):
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=os.path.expanduser("~") if os.path.isdir(os.path.expanduser("~")) else "/",
    )


def test_plain_import_verl_registers_agent_loop():
    out = run(
        "-c",
        "import verl\nfrom verl.experimental.agent_loop.agent_loop import _agent_loop_registry as r\nprint(r['search_r1']['_target_'])",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("search_r1_plugin.agent_loop.SearchR1AgentLoop")


@pytest.mark.parametrize("preset", ["ppo", "grpo"])
def test_main_ppo_cfg_job_resolves_with_preset(preset):
    out = run(
        "-m",
        "verl.trainer.main_ppo",
        "hydra.searchpath=[pkg://search_r1_plugin.config]",
        f"+search_r1_algo={preset}",
        "search_r1_model=qwen2.5-3b-instruct",
        "search_r1.topk=5",
        "--cfg",
        "job",
        "--resolve",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import yaml

    cfg = yaml.safe_load(out.stdout)
    assert cfg["actor_rollout_ref"]["rollout"]["agent"]["default_agent_loop"] == "search_r1"
    assert cfg["reward"]["custom_reward_function"]["path"] == "pkg://search_r1_plugin.reward"
    assert cfg["search_r1"]["topk"] == 5 and cfg["search_r1"]["mask_retrieved_tokens"] is True
    assert cfg["algorithm"]["adv_estimator"] == {"ppo": "gae", "grpo": "grpo"}[preset]
    assert cfg["actor_rollout_ref"]["rollout"]["response_length"] == 4500
    assert cfg["actor_rollout_ref"]["model"]["path"] == "Qwen/Qwen2.5-3B-Instruct"
    assert cfg["trainer"]["experiment_name"] == f"search_r1-{preset}-qwen2.5-3b-instruct-topk5"


def test_search_r1_train_runs_main_ppo_with_the_presets():
    """``search-r1 train`` is main_ppo with the search path and groups filled in: verl resolves the same config,
    and a word that names nothing is a one-line error naming the choices."""
    import yaml

    out = run(
        "-m", "search_r1_plugin.cli", "train", "grpo", "qwen2.5-7b-base", "no_mask", "search_r1.max_turns=2", "--cfg", "job", "--resolve"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = yaml.safe_load(out.stdout.split("\n", 1)[1])  # first line: the command it ran
    assert cfg["trainer"]["experiment_name"] == "search_r1-grpo-qwen2.5-7b-max_turns2-no_mask"
    assert cfg["data"]["max_response_length"] == 3 * 500 + 2 * 500  # the budget follows the turns
    listed = run("-m", "search_r1_plugin.cli", "presets")
    assert listed.returncode == 0 and all(f"\n  {name} " in listed.stdout for name in ("ppo", "qwen2.5-7b-base", "no_mask"))
    bad = run("-m", "search_r1_plugin.cli", "train", "grpo", "qwen2.5-7b-bse")
    assert bad.returncode == 2 and bad.stderr.startswith("error: 'qwen2.5-7b-bse' is not a model"), bad.stderr


def test_config_path_form_resolves():
    from importlib.resources import files

    path = str(files("search_r1_plugin.config"))
    out = run(
        "-m",
        "verl.trainer.main_ppo",
        "--config-path",
        path,
        "--config-name",
        "search_r1_trainer",
        "+search_r1_algo=ppo",
        "search_r1_variant=[smoke]",
        "--cfg",
        "job",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "default_agent_loop: search_r1" in out.stdout and "total_training_steps: 3" in out.stdout


def test_doctor_reports_registration_and_dead_retriever(bm25_server):
    ok = run("-m", "search_r1_plugin.cli", "doctor", "--retriever-url", f"{bm25_server}/retrieve")
    assert ok.returncode == 0, ok.stdout + ok.stderr[-2000:]
    assert "agent loop 'search_r1' registered" in ok.stdout and "all good" in ok.stdout
    bad = run("-m", "search_r1_plugin.cli", "doctor", "--retriever-url", "http://127.0.0.1:9/retrieve")
    assert bad.returncode == 1 and "unreachable" in bad.stdout


def resolve_in_worker(cfg, tmp_path):
    """Pickle ``cfg`` and resolve it in a fresh process that only imported verl, as Ray's TaskRunner does."""
    import pickle

    (tmp_path / "cfg.pkl").write_bytes(pickle.dumps(cfg))
    return run(
        "-c",
        "import pickle, sys, verl\nfrom omegaconf import OmegaConf\n"
        f"cfg = pickle.loads(open({str(tmp_path / 'cfg.pkl')!r}, 'rb').read())\n"
        "c = OmegaConf.to_container(cfg, resolve=True)\n"
        "print(c['actor_rollout_ref']['actor']['ppo_micro_batch_size_per_gpu'])",
    )


@pytest.mark.parametrize("preset", [("ppo",), ("grpo", "qwen2.5-7b-base")])
def test_config_resolves_in_a_fresh_worker_process(preset, tmp_path):
    """main_ppo hands the composed config to Ray's TaskRunner, a process that never imported our Hydra
    package; it resolves the whole config at start (``OmegaConf.to_container(config, resolve=True)``).
    The presets' resolvers must be registered there by ``import verl`` alone (the plugin entry point)."""
    from search_r1_plugin.presets import compose

    out = resolve_in_worker(compose(*preset, overrides=["trainer.n_gpus_per_node=4"]), tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "16"  # the paper's global 64 over 4 GPUs


def test_bad_setting_stops_the_trainer_at_config_resolution(tmp_path):
    """A bad search_r1 value fails where the TaskRunner resolves the config, before any model loads."""
    from search_r1_plugin.presets import compose

    out = resolve_in_worker(compose("ppo", overrides=["search_r1.topk=0"]), tmp_path)
    assert out.returncode != 0 and "search_r1.topk must be > 0, got 0" in out.stderr, out.stderr[-3000:]
    cli = run(
        "-m",
        "verl.trainer.main_ppo",
        "hydra.searchpath=[pkg://search_r1_plugin.config]",
        "+search_r1_algo=ppo",
        "search_r1.retriever_url=localhost:8000",
        "--cfg",
        "job",
        "--resolve",
    )
    assert cli.returncode != 0 and "search_r1.retriever_url must be an http(s) URL" in cli.stderr, cli.stderr[-3000:]
