"""Sequential detection: the CUSUM's boundary from a false-alarm budget in time, its updates once per window,
its state in status (a restart resumes it), and what it does to the policy, with an injected clock."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from policy_support import ERR, Operator, accuracy_rule, at, monitor

from modelmonitor.api import ModelMonitorSpec
from modelmonitor.policy import Measurement, State, monitor_from_api
from modelmonitor.policy.cusum import (
    DRIFT_ALLOWANCE,
    CusumState,
    SequentialRule,
    advance,
    average_run_length,
    boundary_for,
)
from modelmonitor.policy.state import PolicyState

DAY = 86_400.0


def drift_measurement(z: float, samples: int = 600) -> Measurement:
    """A drift signal's measurement whose window scored ``z`` on the standard normal scale."""
    return replace(Measurement.value(0.01, samples), threshold=0.05, standardized=z)


def drift_rule(**overrides: object) -> object:
    rule = SequentialRule.for_budget(30 * DAY, 60.0, DRIFT_ALLOWANCE)
    fields: dict[str, object] = {
        "name": "input-drift",
        "op": ">",
        "threshold": None,
        "auto_threshold": True,
        "window": "1m",
        "sequential": rule,
        "actions": ("page",),
    }
    fields.update(overrides)
    return accuracy_rule(**fields)


# --- the boundary ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("updates", "allowance", "boundary"),
    [
        # Siegmund's one-sided run lengths for k = 0.5: h = 4 -> 336, h = 5 -> 930 (twice the two-sided 168 and
        # 465 of the published tables, e.g. Montgomery's table 9.3).
        (336, 0.5, 4.0),
        (930, 0.5, 5.0),
        (30 * 1440, 0.5, 8.82),  # one false alarm a month at one 1-minute window per update
    ],
)
def test_the_boundary_follows_the_budget(updates: float, allowance: float, boundary: float) -> None:
    assert boundary_for(updates, allowance) == pytest.approx(boundary, abs=0.05)
    assert average_run_length(boundary_for(updates, allowance), allowance) == pytest.approx(updates, rel=1e-6)


def test_a_larger_budget_needs_a_higher_boundary() -> None:
    boundaries = [boundary_for(n, 0.5) for n in (100, 1_000, 10_000, 100_000)]
    assert boundaries == sorted(boundaries)
    assert boundary_for(100, 0.0) == pytest.approx(10 - 1.166)


def test_simulated_false_alarms_match_the_budget() -> None:
    # In-control N(0, 1) increments: the mean run length to the first alarm is the budget (Siegmund: within 5%).
    rule = SequentialRule.for_budget(200 * 60.0, 60.0, 0.5)  # 200 updates
    rng = np.random.default_rng(11)
    runs = []
    for _ in range(1500):
        statistic, steps = 0.0, 0
        while statistic <= rule.boundary:
            statistic = min(max(0.0, statistic + rng.standard_normal() - rule.allowance), rule.cap)
            steps += 1
        runs.append(steps)
    assert np.mean(runs) == pytest.approx(200, rel=0.1)


def test_a_budget_of_fewer_than_ten_windows_is_refused() -> None:
    with pytest.raises(ValueError, match="fewer than 10 policy windows"):
        SequentialRule.for_budget(500.0, 60.0, 0.5)


# --- updates -------------------------------------------------------------------------------------------------


def test_one_update_per_window_and_the_cap() -> None:
    rule = SequentialRule.for_budget(30 * DAY, 60.0, 0.5)
    first = advance(rule, None, 2.0, at(0))
    assert first == CusumState(1.5, at(0))
    assert advance(rule, first, 5.0, at(30)) is first  # half a window later: the windows would overlap
    second = advance(rule, first, 5.0, at(60))
    assert second == CusumState(6.0, at(60))
    assert advance(rule, second, -9.0, at(120)).statistic == 0.0  # never below 0
    assert advance(rule, second, 1e6, at(120)).statistic == rule.cap  # never above 2h


# --- in the engine ------------------------------------------------------------------------------------------


def test_a_persistent_small_shift_fires_when_evidence_adds_up() -> None:
    spec = monitor(drift_rule(), action_types={"page": "alert"})
    operator = Operator(spec)
    boundary = spec.policies[0].sequential.boundary  # type: ignore[union-attr]
    # z = 2 every window: no single window is alarming, 1.5 per window accumulates.
    windows_needed = math.floor(boundary / 1.5) + 1
    for minute in range(windows_needed - 1):
        result = operator.cycle(minute * 60, drift_measurement(2.0))
        assert result.states[0].state is State.INACTIVE, minute
    result = operator.cycle((windows_needed - 1) * 60, drift_measurement(2.0))
    assert result.states[0].state is State.FIRING
    entry = operator.status["policies"][0]
    assert entry["threshold"] == pytest.approx(boundary)
    assert entry["value"] > boundary
    assert entry["sequential"]["statistic"] == pytest.approx(entry["value"])
    assert "CUSUM" in entry["message"] and "one false alarm per 30d" in entry["message"]
    assert [d.action for d in result.decisions] == ["page"]


def test_cycles_inside_a_window_do_not_update_the_statistic() -> None:
    operator = Operator(monitor(drift_rule(), action_types={"page": "alert"}))
    operator.cycle(0, drift_measurement(3.0))
    for seconds in (15, 30, 45):
        operator.cycle(seconds, drift_measurement(8.0))
        assert operator.status["policies"][0]["sequential"]["statistic"] == pytest.approx(2.5)
    operator.cycle(60, drift_measurement(8.0))
    assert operator.status["policies"][0]["sequential"]["statistic"] == pytest.approx(10.0)


def test_a_restart_resumes_the_statistic_from_status() -> None:
    spec = monitor(drift_rule(), action_types={"page": "alert"})
    before = Operator(spec)
    for minute in range(3):
        before.cycle(minute * 60, drift_measurement(2.5))
    written = json.loads(json.dumps(before.status))
    assert written["policies"][0]["sequential"] == {
        "statistic": pytest.approx(6.0),
        "updatedAt": "2026-11-24T10:02:00Z",
    }
    restarted = Operator(spec, status=written)  # a new process: nothing but the status
    restarted.cycle(180, drift_measurement(2.5))
    assert restarted.status["policies"][0]["sequential"]["statistic"] == pytest.approx(8.0)
    state = PolicyState.from_status(written["policies"][0])
    assert state.cusum == CusumState(6.0, at(120))


def test_missing_data_and_errors_hold_the_statistic() -> None:
    operator = Operator(monitor(drift_rule(min_samples=100), action_types={"page": "alert"}))
    operator.cycle(0, drift_measurement(4.0))
    operator.cycle(60, ERR)
    assert operator.state() == "Error"
    operator.cycle(120, drift_measurement(4.0, samples=10))  # below minSamples: no evidence either way
    assert operator.state() == "NoData"
    assert operator.status["policies"][0]["sequential"]["statistic"] == pytest.approx(3.5)
    operator.cycle(180, drift_measurement(4.0))
    assert operator.status["policies"][0]["sequential"]["statistic"] == pytest.approx(7.0)


def test_drift_without_drift_clears_within_about_h_over_k_windows() -> None:
    operator = Operator(monitor(drift_rule(), action_types={"page": "alert"}))
    operator.cycle(0, drift_measurement(100.0))  # a huge shift: straight to the cap
    assert operator.state() == "Firing"
    rule = operator.spec.policies[0].sequential
    assert rule is not None
    minutes = 1
    while operator.state() == "Firing":
        operator.cycle(minutes * 60, drift_measurement(0.0))
        minutes += 1
    assert minutes - 1 == math.floor(rule.boundary / rule.allowance) + 1


def test_a_signal_without_null_distribution_and_without_reference_level_is_invalid() -> None:
    fixed = drift_rule(auto_threshold=False, threshold=0.1)
    operator = Operator(monitor(fixed, action_types={"page": "alert"}))
    operator.cycle(0, Measurement.value(0.3, 500))
    assert operator.status["policies"][0]["lastOutcome"] == "Invalid"
    assert "referenceLevel" in operator.status["policies"][0]["message"]


def test_any_numeric_signal_with_a_reference_level() -> None:
    # accuracy 0.92 while well, sd 0.01 per window, detect 0.90 fastest: k = 1; lower is worse.
    sequential = SequentialRule.for_budget(30 * DAY, 600.0, 1.0, reference_level=0.92, standard_deviation=0.01)
    operator = Operator(monitor(accuracy_rule(threshold=0.90, sequential=sequential, window="10m")))
    operator.cycle(0, Measurement.value(0.92, 500))
    assert operator.status["policies"][0]["sequential"]["statistic"] == 0.0
    operator.cycle(600, Measurement.value(0.905, 500))  # z = 1.5: +0.5
    assert operator.status["policies"][0]["sequential"]["statistic"] == pytest.approx(0.5)
    assert "value 0.905 is not < 0.9" in operator.status["policies"][0]["message"]  # the window, as judged alone


def test_the_api_maps_a_sequential_policy() -> None:
    spec = ModelMonitorSpec.model_validate(
        {
            "target": {"name": "fraud"},
            "model": {"name": "fraud"},
            "policies": [
                {
                    "name": "drift",
                    "signal": "dataDrift",
                    "window": "1m",
                    "condition": {"op": ">", "autoThreshold": True},
                    "detection": {"sequential": {"falseAlarmEvery": "90d"}},
                },
                {
                    "name": "accuracy",
                    "signal": "accuracy",
                    "window": "10m",
                    "condition": {"op": "<", "threshold": 0.9},
                    "detection": {
                        "sequential": {"falseAlarmEvery": "30d", "referenceLevel": 0.92, "standardDeviation": 0.01}
                    },
                },
            ],
        }
    )
    drift, accuracy = monitor_from_api("ml", "fraud", spec).policies
    assert drift.sequential is not None and drift.sequential.allowance == DRIFT_ALLOWANCE
    assert average_run_length(drift.sequential.boundary, 0.5) == pytest.approx(90 * 1440, rel=1e-6)
    assert accuracy.sequential is not None and accuracy.sequential.allowance == pytest.approx(1.0)
    assert accuracy.sequential.reference_level == 0.92


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            {"signal": "dataDrift", "condition": {"op": ">", "autoThreshold": True},
             "detection": {"sequential": {"falseAlarmEvery": "1h"}}},
            "fewer than 10 windows",
        ),
        (
            {"signal": "dataDrift", "condition": {"op": ">", "autoThreshold": True},
             "detection": {"sequential": {"falseAlarmEvery": "30d", "referenceLevel": 0, "standardDeviation": 1}}},
            "referenceLevel",
        ),
        (
            {"signal": "accuracy", "condition": {"op": "<", "threshold": 0.9},
             "detection": {"sequential": {"falseAlarmEvery": "30d"}}},
            "referenceLevel",
        ),
        (
            {"signal": "accuracy", "condition": {"op": "<", "threshold": 0.95},
             "detection": {"sequential": {"falseAlarmEvery": "30d", "referenceLevel": 0.92,
                                          "standardDeviation": 0.01}}},
            "breaching side",
        ),
        (
            {"signal": "accuracy", "condition": {"op": "<", "threshold": 0.9},
             "detection": {"sequential": {"falseAlarmEvery": "30d", "referenceLevel": 0.92}}},
            "standardDeviation",
        ),
        (
            {"signal": "accuracy", "condition": {"op": "<", "threshold": 0.9, "clearThreshold": 0.91},
             "detection": {"sequential": {"falseAlarmEvery": "30d", "referenceLevel": 0.92,
                                          "standardDeviation": 0.01}}},
            "clearThreshold",
        ),
    ],
)  # fmt: skip
def test_the_api_refuses_what_it_cannot_do(policy: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelMonitorSpec.model_validate(
            {"target": {"name": "f"}, "model": {"name": "f"}, "policies": [{"name": "p", "window": "10m", **policy}]}
        )


def test_the_statistic_in_status_is_checked() -> None:
    entry = {"name": "p", "state": "Inactive", "since": "2026-11-24T10:00:00Z", "lastOutcome": "OK"}
    with pytest.raises(ValueError, match=r"sequential\.statistic"):
        PolicyState.from_status({**entry, "sequential": {"statistic": "high", "updatedAt": "2026-11-24T10:00:00Z"}})
    with pytest.raises(ValueError, match=r"sequential\.updatedAt"):
        PolicyState.from_status({**entry, "sequential": {"statistic": 1.0}})
    assert PolicyState.from_status(entry).cusum is None
