"""The training health guard's rules on metric sequences, its settings, and the rollout-side signals."""

import math

import pytest

from search_r1_plugin.errors import ConfigError
from search_r1_plugin.health import HealthConfig, HealthGuard, TrainingHealthError
from search_r1_plugin.settings import SearchR1Config


def steady(step: int) -> dict:
    return {
        "actor/grad_norm": 1.0 + 0.1 * (step % 3),
        "actor/entropy": 2.0 - 0.005 * step,  # a slow, healthy decline
        "actor/pg_loss": 0.1,
        "search_r1/valid_action_rate": 0.8,
        "response_length/mean": 60.0 + step % 5,
        "response_length/clip_ratio": 0.05,
        "search_r1/health/budget_exhausted": 0.05,
        "search_r1/health/format_failure": 0.2,
    }


def run(guard: HealthGuard, rows: list[dict]) -> list:
    fired = []
    for step, row in enumerate(rows, start=1):
        fired += guard.observe(step, row)
    return fired


def test_a_steady_run_never_fires():
    assert run(HealthGuard(), [steady(s) for s in range(1, 200)]) == []


def test_a_batch_of_equal_lengths_is_not_a_runaway():
    """verl's response_length/clip_ratio compares lengths with the padded batch's width: a batch whose
    responses all have one length (an R1 policy's fixed-format answers) reads 1.0 there, though none is cut.
    The clip rule reads the loop's own count (the R1 arm of docs/learning.md had this false alarm)."""
    rows = [steady(s) for s in range(1, 31)]
    rows[19] = {**rows[19], "response_length/clip_ratio": 1.0}
    assert run(HealthGuard(), rows) == []


@pytest.mark.parametrize(
    "rule, change",
    [
        ("grad_spike", {"actor/grad_norm": 50.0}),
        ("entropy", {"actor/entropy": 0.05}),
        ("valid_actions", {"search_r1/valid_action_rate": 0.2}),
        ("length", {"response_length/mean": 5.0}),
        ("nan", {"actor/pg_loss": float("nan")}),
        ("format", {"search_r1/health/format_failure": 1.0}),
        ("clip", {"search_r1/health/budget_exhausted": 1.0}),
    ],
)
def test_each_rule_fires_at_the_step_with_its_numbers(rule, change):
    rows = [steady(s) for s in range(1, 31)]
    rows[19] = {**rows[19], **change}  # step 20
    if rule == "grad_spike":  # it must last grad_spike_steps (2) steps: 19 and 20
        rows[18] = {**rows[18], **change}
    fired = run(HealthGuard(), rows)
    assert [(a.rule, a.step) for a in fired] == [(rule, 20)]
    assert "step 20" in str(fired[0]) and rule in str(fired[0])
    key, value = next(iter(change.items()))
    assert key in fired[0].message and (rule == "nan" or f"{value:.4g}" in fired[0].message)


def test_a_lone_gradient_spike_is_not_an_alarm():
    """The learning demo's healthy runs had lone spikes (seed 2: 1.336 against a running median of 0.086 at
    step 54, back to 0.11 the next step) that gradient clipping absorbs; two steps in a row fire."""
    rows = [{**steady(s), "actor/grad_norm": 0.086} for s in range(1, 60)]
    rows[53] = {**rows[53], "actor/grad_norm": 1.336}
    assert run(HealthGuard(), rows) == []
    rows[54] = {**rows[54], "actor/grad_norm": 1.2}
    fired = run(HealthGuard(), rows)
    assert [(a.rule, a.step) for a in fired] == [("grad_spike", 55)]
    assert "2 step(s) in a row (1.336, 1.2)" in fired[0].message
    assert [a.step for a in run(HealthGuard(HealthConfig(grad_spike_steps=1)), rows)] == [54, 55]


def test_rules_wait_for_their_warmup():
    """A noisy first step is not a spike: the running median needs warmup_steps values first."""
    rows = [steady(1), {**steady(2), "actor/grad_norm": 100.0}, *[steady(s) for s in range(3, 10)]]
    assert run(HealthGuard(), rows) == []


def test_valid_action_floor_only_after_being_above_it():
    low_start = [{**steady(s), "search_r1/valid_action_rate": 0.1 + 0.02 * s} for s in range(1, 40)]
    assert [a.rule for a in run(HealthGuard(), low_start)] == []


def test_stop_and_rollback_raise_naming_the_rule_and_the_last_good_step():
    for mode in ("stop", "rollback"):
        guard = HealthGuard(HealthConfig(mode=mode))
        run(guard, [steady(s) for s in range(1, 11)])
        alarms = guard.observe(11, {**steady(11), "actor/grad_norm": math.inf})
        logged = []
        with pytest.raises(TrainingHealthError, match="'nan' fired at step 11") as err:
            guard.act(alarms, logged.append)
        if mode == "rollback":  # step 10 passed; its rollouts came from step 9's checkpoint
            assert "Last step that passed the guard: 10" in str(err.value) and "global_step_9" in str(err.value)
            assert "search_r1 rollback: last_good_step=10 lr_factor=0.5" in logged
    warn = HealthGuard(HealthConfig(mode="warn"))
    seen = []
    warn.act([*warn.observe(1, {"actor/pg_loss": math.nan})], seen.append)
    assert len(seen) == 1
    assert HealthGuard(HealthConfig(mode="off")).observe(1, {"actor/pg_loss": math.nan}) == []


def test_health_settings_are_checked_with_the_key_named():
    assert SearchR1Config().health["mode"] == "warn"
    assert SearchR1Config.from_mapping({"health": {"mode": "stop"}}).health["grad_spike_factor"] == 10.0
    with pytest.raises(ConfigError, match="search_r1.health.mode"):
        SearchR1Config.from_mapping({"health": {"mode": "panic"}})
    with pytest.raises(ConfigError, match="unknown search_r1.health"):
        SearchR1Config.from_mapping({"health": {"grad_spike": 3}})


def test_rollout_health_signals():
    from search_r1_plugin.training_metrics import health_metrics

    keys = ["a_0_0", "a_0_1", "b_0_0", "b_0_1", "c_0_0", "c_0_1"]
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    extra = [{"search_r1": {"answered": i % 2, "budget_exhausted": int(i == 0)}} for i in range(6)]
    m = health_metrics(keys, rewards, extra)
    assert m["search_r1/health/zero_variance_groups"] == pytest.approx(2 / 3)
    assert m["search_r1/health/format_failure"] == 0.5 and m["search_r1/health/budget_exhausted"] == pytest.approx(1 / 6)
    assert health_metrics(keys, [math.nan] + rewards[1:], extra)["search_r1/health/nonfinite_rewards"] == 1.0


def test_rollback_supervisor_restores_the_weights_behind_the_last_healthy_rollouts(tmp_path):
    """Last good step 3: its rollouts came from global_step_2's weights (the newest at or before 2)."""
    from search_r1_plugin.rollback import LOAD_WEIGHTS_ONLY, parse_marker, rollback_marker, run_supervised, without_resume_overrides

    for step in (1, 2, 4):
        (tmp_path / f"global_step_{step}").mkdir()
    (tmp_path / "global_step_x").mkdir()
    assert parse_marker(["noise", rollback_marker(3, 0.5) + "\n", "more"]) == (3, 0.5)
    assert parse_marker(["(TaskRunner pid=1) " + rollback_marker(7, 0.25)]) == (7, 0.25)
    launches, logs = [], []

    def launch(extra):
        launches.append(extra)
        return (1, [rollback_marker(3, 0.5)]) if len(launches) == 1 else (0, [])

    assert run_supervised(launch, checkpoint_dir=tmp_path, lr=1e-6, max_rollbacks=2, log=logs.append) == 0
    assert launches[0] == []
    assert launches[1] == [
        "trainer.resume_mode=resume_path",
        f"trainer.resume_from_path={tmp_path / 'global_step_2'}",
        LOAD_WEIGHTS_ONLY,
        "actor_rollout_ref.actor.optim.lr=5e-07",
    ]
    assert "rollback 1/2" in logs[0]
    # no checkpoint behind the last good step: start over from the model, lower rate
    launches.clear()
    run_supervised(launch, checkpoint_dir=tmp_path / "none", lr=1.0, max_rollbacks=1, log=logs.append)
    assert launches[1] == ["trainer.resume_mode=disable", "actor_rollout_ref.actor.optim.lr=0.5"]
    # the guard keeps firing: stop after max_rollbacks, with the run's exit code
    always = []

    def fires_again(extra):
        always.append(extra)
        return 3, [rollback_marker(1, 0.5)]

    assert run_supervised(fires_again, checkpoint_dir=tmp_path, lr=1.0, max_rollbacks=2, log=logs.append) == 3
    assert len(always) == 3 and "fired again after 2 rollback(s)" in logs[-1]
    # a run that fails for another reason is not restarted
    assert run_supervised(lambda e: (2, ["Traceback"]), checkpoint_dir=tmp_path, lr=1.0, max_rollbacks=2) == 2
    assert without_resume_overrides(["a=1", "trainer.resume_mode=auto", "+actor_rollout_ref.actor.optim.lr=3"]) == ["a=1"]


def test_search_r1_train_supervises_main_ppo_in_rollback_mode(tmp_path, monkeypatch, capsys):
    """The CLI wiring: main_ppo's output is read for the guard's line, and main_ppo starts again with the
    resume overrides (a stand-in process plays main_ppo: the real one is in test_train_main_ppo.py)."""
    import argparse
    import io

    from search_r1_plugin import cli
    from search_r1_plugin.rollback import rollback_marker

    (tmp_path / "global_step_1").mkdir()
    commands = []

    class FakeMainPPO:
        def __init__(self, command, **kwargs):
            commands.append(command)
            first = len(commands) == 1
            self.stdout = io.StringIO(f"step 1\n{rollback_marker(2, 0.5)}\n" if first else "done\n")
            self.code = 1 if first else 0

        def wait(self):
            return self.code

    monkeypatch.setattr(cli.subprocess, "Popen", FakeMainPPO)
    words = ["grpo", "cpu", "search_r1.health.mode=rollback", f"trainer.default_local_dir={tmp_path}"]
    words.append("actor_rollout_ref.actor.optim.lr=2e-4")
    assert cli._train(argparse.Namespace(preset=words, print_command=False), []) == 0
    assert len(commands) == 2 and "actor_rollout_ref.actor.optim.lr=2e-4" in commands[0]
    again = commands[1]
    assert f"trainer.resume_from_path={tmp_path / 'global_step_1'}" in again and "actor_rollout_ref.actor.optim.lr=0.0001" in again
    assert "actor_rollout_ref.actor.optim.lr=2e-4" not in again  # Hydra refuses a key given twice
    assert "search_r1 rollback 1/2" in capsys.readouterr().out
