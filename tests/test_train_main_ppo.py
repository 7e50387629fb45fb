"""verl's own ``python -m verl.trainer.main_ppo`` trains Search-R1 end to end on CPU.

Real processes throughout: verl's TaskRunner on Ray (v1 trainer, TransferQueue), FSDP2 actor /
reference / critic over gloo (platform ``cpu``), rollout ``hf`` serving our ``search_r1`` agent
loop, the retrieval server as a process, our reward in verl's reward workers. The model is a tiny
Qwen2 warm-started on protocol demonstrations so that it searches and answers and rewards differ.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from search_r1_plugin.protocol import INVALID_ACTION_MESSAGE
from search_r1_plugin.sandbox.trainer_run import run_main_ppo

SEARCH_KEYS = [
    "search_r1/searches_per_trajectory",
    "search_r1/valid_action_rate",
    "search_r1/invalid_action_rate",
    "search_r1/answered_rate",
    "search_r1/obs_truncations",
    "search_r1/retrieval_latency_s",
    "search_r1/masked_token_share",
    "search_r1/em",
    "search_r1/f1",
    "search_r1/answer_read",
]
# the format reward gives well-formed and malformed answers different scores, so groups are not all equal
FORMAT_REWARD = "+reward.custom_reward_function.reward_kwargs.format_reward=true"


@pytest.fixture(scope="session")
def train_data(sample_world, tmp_path_factory):
    from search_r1_plugin.data_prep import prepare

    out = tmp_path_factory.mktemp("train_data")
    prepare(out, "sample_nq:train,sample_hotpotqa:train", "sample_nq:test", "search_r1", sample_world["corpus"].parent, False)
    return {"train": str(out / "train.parquet"), "test": str(out / "test.parquet")}


@pytest.fixture(scope="session")
def protocol_model(sample_world, tmp_path_factory):
    from search_r1_plugin.sandbox.tiny_model import build_tiny_qwen2, protocol_demonstrations, warm_start

    qa = []
    for key in ("sample_nq/train", "sample_hotpotqa/train"):
        for line in open(sample_world[key]):
            row = json.loads(line)
            qa.append((row["question"], row["golden_answers"][0]))
    path = build_tiny_qwen2(tmp_path_factory.mktemp("protocol_qwen2"))
    losses = warm_start(path, protocol_demonstrations(qa), steps=200)
    assert losses["last_loss"] < losses["first_loss"] / 4
    return str(path)


def launch(algo, workdir, protocol_model, train_data, bm25_server, *overrides, run_name="run", variants=("cpu",)):
    """``main_ppo`` on the sample with the format reward, whatever its exit (runs meant to fail use this)."""
    return run_main_ppo(
        algo,
        workdir,
        model=protocol_model,
        train_files=train_data["train"],
        val_files=train_data["test"],
        retriever_url=f"{bm25_server}/retrieve",
        overrides=[FORMAT_REWARD, *overrides],
        timeout_s=600,
        run_name=run_name,
        variants=variants,
    )


def train(algo, workdir, protocol_model, train_data, bm25_server, *overrides, run_name="run", variants=("cpu",)):
    run = launch(algo, workdir, protocol_model, train_data, bm25_server, *overrides, run_name=run_name, variants=variants)
    assert run.returncode == 0, run.tail()
    return run


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def check_token_dump(path: Path, tokenizer) -> tuple[int, int]:
    """Masks token by token and the reward's position, on every trajectory the trainer sampled: (trajectories,
    searches injected)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows
    searched = 0
    for row in rows:
        ids, mask, rm = row["response_ids"], row["response_mask"], row["rm_scores"]
        assert len(ids) == len(mask) == len(rm) > 0
        assert mask[-1] == 1  # ends on a model token, so GAE never drops the reward
        assert all(r == 0 for r in rm[:-1])  # the outcome reward sits on the last (model) token only
        # every injected span is exactly an <information> block or the invalid-action message
        spans, start = [], None
        for i, m in enumerate(mask + [1]):
            if m == 0 and start is None:
                start = i
            elif m == 1 and start is not None:
                spans.append(tokenizer.decode(ids[start:i]))
                start = None
        for text in spans:
            is_info = text.startswith("\n\n<information>") and text.endswith("</information>\n\n")
            assert is_info or text == INVALID_ACTION_MESSAGE, repr(text[:200])
            searched += is_info
    return len(rows), searched


def test_grpo_trains_validates_checkpoints_and_resumes(protocol_model, train_data, bm25_server, tmp_path):
    from transformers import AutoTokenizer

    dump = tmp_path / "rollouts"
    common = [f"trainer.rollout_data_dir={dump}", "trainer.save_freq=1", "trainer.test_freq=2"]
    first = train("grpo", tmp_path, protocol_model, train_data, bm25_server, *common, "trainer.total_training_steps=2", run_name="first")
    assert [r["step"] for r in first.metrics] == [1, 2]
    ckpt = tmp_path / "checkpoints"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert (ckpt / "global_step_2" / "actor").is_dir()

    second = train(
        "grpo",
        tmp_path,
        protocol_model,
        train_data,
        bm25_server,
        *common,
        "trainer.total_training_steps=3",
        "trainer.resume_mode=auto",
        run_name="second",
    )
    assert [r["step"] for r in second.metrics] == [3]  # resumed from step 2's checkpoint into step 3
    assert (ckpt / "global_step_3" / "actor").is_dir()

    steps = [first.step(1), first.step(2), second.step(3)]
    for m in steps:
        for key in ("actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/grad_norm", "critic/score/mean"):
            assert finite(m[key]), (key, m.get(key))
        for key in SEARCH_KEYS:
            assert finite(m[key]), (key, m.get(key))
        assert 0.0 < m["search_r1/masked_token_share"] < 1.0
        assert m["timing_s/ref"] > 0  # the reference policy ran (GRPO's KL loss)
        # weight sync: the rollout's log-probs of the sampled tokens equal the actor's
        assert m["training/rollout_probs_diff_max"] < 1e-3
    assert any(m["actor/grad_norm"] > 0 for m in steps), [m["actor/grad_norm"] for m in steps]
    assert "val-core/sample_nq/reward/mean@1" in first.step(2)

    tokenizer = AutoTokenizer.from_pretrained(protocol_model)
    searched = 0
    for step in (1, 2, 3):
        tokens = dump / "search_r1_tokens" / f"{step}.jsonl"
        trajectories, step_searches = check_token_dump(tokens, tokenizer)
        assert trajectories == 8  # 4 prompts x rollout.n=2
        searched += step_searches
        # verl's own rollout dump of the same step: same trajectories, same scores
        ours = {r["key"]: sum(r["rm_scores"]) for r in map(json.loads, tokens.read_text().splitlines())}
        verl_dump = [json.loads(line) for line in (dump / f"{step}.jsonl").read_text().splitlines()]
        assert {r["uid"]: r["score"] for r in verl_dump} == pytest.approx(ours)
    # The warm-started model searched, and retrieval was injected and masked. Counted over the run: the tiny
    # protocol model makes a valid action in only 17-39 % of its turns, and one step's 8 samples once held no
    # valid search (CI, step 3: valid actions 0.04).
    assert searched > 0
    for m in steps:  # the health guard's rollout signals are in every step; a healthy run raises no alarm
        assert 0.0 <= m["search_r1/health/zero_variance_groups"] <= 1.0 and m["search_r1/health/alarms"] == 0

    # The same checkpoint folder with another learning rate is another run: refused before any step.
    changed = launch(
        "grpo",
        tmp_path,
        protocol_model,
        train_data,
        bm25_server,
        *common,
        "trainer.total_training_steps=4",
        "actor_rollout_ref.actor.optim.lr=3e-4",
        run_name="changed",
    )
    assert changed.returncode != 0 and not changed.metrics
    assert "holds checkpoints of another run" in changed.log and "actor_rollout_ref.actor.optim.lr: 0.0001 -> 0.0003" in changed.log

    # search-r1 report renders this run: valid HTML, the curves embedded, trajectories escaped and told apart
    from html.parser import HTMLParser

    from search_r1_plugin.report import build_report

    page = build_report(tmp_path)
    HTMLParser().feed(page)
    assert page.startswith("<!DOCTYPE html>") and page.count('src="data:image/png;base64,') == 1
    assert page.count('<pre class="trajectory">') == 6 and '<span class="injected">' in page
    assert "&lt;information&gt;" in page and "<information>" not in page
    assert re.search(r"<p>Step [23]: EM \d\.\d{3}", page)  # the best of the validations at steps 2 and 3


def test_ppo_step_with_critic_and_kl_in_reward(protocol_model, train_data, bm25_server, tmp_path):
    run = train(
        "ppo",
        tmp_path,
        protocol_model,
        train_data,
        bm25_server,
        "trainer.total_training_steps=1",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
    )
    m = run.step(1)
    for key in (
        "critic/vf_loss",
        "critic/grad_norm",
        "critic/values/mean",
        "actor/pg_loss",
        "actor/grad_norm",
        "actor/reward_kl_penalty",
        "critic/advantages/mean",
        *SEARCH_KEYS,
    ):
        assert finite(m[key]), (key, m.get(key))
    assert m["critic/grad_norm"] > 0  # the critic learned (GAE over the masked response)
    assert m["actor/reward_kl_penalty_coeff"] == pytest.approx(0.001)  # KL in the reward, paper's coefficient
    assert m["timing_s/ref"] > 0 and m["timing_s/update_critic"] > 0
    assert m["training/rollout_probs_diff_max"] < 1e-3


def test_lora_grpo_steps_reach_the_rollout_as_adapters(protocol_model, train_data, bm25_server, tmp_path):
    """search_r1_variant=[cpu,lora]: verl's peft actor trains adapters only and sends them (not merged
    weights) to the rollout; after an update the rollout samples with the adapted weights, so its log-probs
    still match the actor's (the learning rate is raised so that ignoring the adapters would show)."""
    run = train(
        "grpo",
        tmp_path,
        protocol_model,
        train_data,
        bm25_server,
        "actor_rollout_ref.model.lora_rank=8",
        "actor_rollout_ref.actor.optim.lr=5e-2",
        "trainer.total_training_steps=2",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        variants=("cpu", "lora"),
    )
    assert re.search(r"hf rollout: LoRA adapters applied to \d+ weights \(rank 8\)", run.log), run.tail()
    first, second = run.step(1), run.step(2)
    assert finite(second["actor/grad_norm"]) and second["actor/grad_norm"] > 0
    assert first["training/rollout_probs_diff_max"] < 1e-3
    assert second["training/rollout_probs_diff_max"] < 1e-3, "the rollout did not sample with the updated adapters"


def test_v0_trainer_runs_a_step(protocol_model, train_data, bm25_server, tmp_path):
    """The deprecated v0 trainer (``trainer.use_v1=false``) reads the same agent-loop output."""
    run = train(
        "grpo",
        tmp_path,
        protocol_model,
        train_data,
        bm25_server,
        "trainer.use_v1=false",
        "trainer.total_training_steps=1",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
    )
    m = run.step(1)
    for key in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "critic/score/mean", "num_turns/mean"):
        assert finite(m[key]), (key, m.get(key))
    assert m["training/rollout_probs_diff_max"] < 1e-3


def test_health_guard_stops_a_run_made_to_collapse(protocol_model, train_data, bm25_server, tmp_path):
    """A learning rate of 1.0 wrecks the model in its first update (seen: no valid answer any more, every
    response runs to the length budget, entropy 1.1 -> 0.2): the guard (mode stop) names a rule at step 2,
    the first step whose rollouts come from the wrecked model, and ends main_ppo before step 3."""
    run = launch(
        "grpo",
        tmp_path,
        protocol_model,
        train_data,
        bm25_server,
        "trainer.total_training_steps=4",
        "trainer.save_freq=-1",
        "trainer.test_freq=-1",
        "actor_rollout_ref.actor.optim.lr=1.0",
        "search_r1.health.mode=stop",
        "search_r1.health.warmup_steps=1",
    )
    assert run.returncode != 0
    fired = re.findall(r"search_r1 health: rule '(\w+)' fired at step (\d+): ([^\n]*)", run.log)
    assert fired and {int(step) for _, step, _ in fired} == {2}, fired
    assert [r["step"] for r in run.metrics] == [1, 2]  # stopped when step 3 was sampled
    assert run.step(1)["search_r1/health/alarms"] == 0


def test_health_guard_rolls_back_with_a_lower_learning_rate(protocol_model, train_data, bm25_server, tmp_path):
    """mode rollback, through main_ppo three times. A healthy run (lr 1e-4) saves steps 1-2; the supervised run
    resumes it with lr 1.0 (weights only, so the new rate applies), update 3 wrecks the model, step 4's rollouts
    trip the guard, and the supervisor restarts from global_step_2 (the weights behind step 3, the last healthy
    rollouts) with half the rate. verl's own metrics of that run show 0.5, the new rate: it resumes the weights
    only, since verl would load global_step_2's optimizer and scheduler state (lr 1e-4) over it (docs/upstream.md #9)."""
    from search_r1_plugin.rollback import LOAD_WEIGHTS_ONLY, run_supervised

    common = ["trainer.save_freq=1", "trainer.test_freq=-1", "search_r1.health.mode=rollback", "search_r1.health.warmup_steps=1"]
    steps = "trainer.total_training_steps=2"
    healthy = launch("grpo", tmp_path, protocol_model, train_data, bm25_server, *common, steps, run_name="healthy")
    assert healthy.returncode == 0, healthy.tail()
    checkpoints = tmp_path / "checkpoints"
    wreck = ["trainer.resume_mode=resume_path", f"trainer.resume_from_path={checkpoints / 'global_step_2'}", LOAD_WEIGHTS_ONLY]
    runs, launches = [], []

    def attempt(extra):
        launches.append(extra)
        run = launch(
            "grpo", tmp_path, protocol_model, train_data, bm25_server, *common, "trainer.total_training_steps=5",
            *(extra or [*wreck, "actor_rollout_ref.actor.optim.lr=1.0"]), run_name=f"attempt{len(runs)}",
        )  # fmt: skip
        runs.append(run)
        return run.returncode, run.log.splitlines()

    run_supervised(attempt, checkpoint_dir=checkpoints, lr=1.0, max_rollbacks=1, log=lambda _: None)
    first = runs[0]
    assert first.metrics[0]["step"] == 3 and first.step(3)["actor/lr"] == pytest.approx(1.0), first.tail()
    assert re.search(r"search_r1 rollback: last_good_step=3 lr_factor=0.5", first.log), first.tail()
    assert len(runs) == 2 and launches[1][:3] == wreck and launches[1][-1] == "actor_rollout_ref.actor.optim.lr=0.5"
    resumed = runs[1]
    assert resumed.metrics and resumed.metrics[0]["step"] == 3  # resumed after step 2
    assert resumed.step(3)["actor/lr"] == pytest.approx(0.5)
