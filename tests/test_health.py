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
        "search_r1/health/format_failure": 0.2,
    }


def run(guard: HealthGuard, rows: list[dict]) -> list:
    fired = []
    for step, row in enumerate(rows, start=1):
        fired += guard.observe(step, row)
    return fired


def test_a_steady_run_never_fires():
    assert run(HealthGuard(), [steady(s) for s in range(1, 200)]) == []


@pytest.mark.parametrize(
    "rule, change",
    [
        ("grad_spike", {"actor/grad_norm": 50.0}),
        ("entropy", {"actor/entropy": 0.05}),
        ("valid_actions", {"search_r1/valid_action_rate": 0.2}),
        ("length", {"response_length/mean": 5.0}),
        ("nan", {"actor/pg_loss": float("nan")}),
        ("format", {"search_r1/health/format_failure": 1.0}),
        ("clip", {"response_length/clip_ratio": 1.0}),
    ],
)
def test_each_rule_fires_at_the_step_with_its_numbers(rule, change):
    rows = [steady(s) for s in range(1, 31)]
    rows[19] = {**rows[19], **change}  # step 20
    fired = run(HealthGuard(), rows)
    assert [(a.rule, a.step) for a in fired] == [(rule, 20)]
    assert "step 20" in str(fired[0]) and rule in str(fired[0])
    key, value = next(iter(change.items()))
    assert key in fired[0].message and (rule == "nan" or f"{value:.4g}" in fired[0].message)


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
        with pytest.raises(TrainingHealthError, match="'nan' fired at step 11") as err:
            guard.act(alarms, lambda _: None)
        if mode == "rollback":
            assert "global_step_10" in str(err.value) and "lr multiplied by 0.5" in str(err.value)
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
