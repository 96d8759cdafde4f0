"""Every field of a ModelMonitor as the one reconcile path sees it: a watched body mapped once into a `Monitor`,
then reconcile() on measurements. (The signals, actions and metrics have their own tests; these show that what a
user writes reaches the path and changes what the status says.)"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from modelmonitor.api import SpecError
from modelmonitor.policy import Measurement, MeasurementKind, Series
from modelmonitor.reconcile import monitor_from_body, reconcile

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
REPLICAS = (
    Series(0.95, 500, (("instance", "10.0.0.1:9100"),)),
    Series(0.60, 500, (("instance", "10.0.0.2:9100"),)),
)


def body(policy: dict[str, Any], **model: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ml", "name": "fraud", "uid": "u1", "generation": 1},
        "spec": {
            "target": {"name": "fraud"},
            "model": {"name": "fraud", **model},
            "policies": [{"name": "p", "window": "10m", **policy}],
        },
    }


def policy_status(policy: dict[str, Any], measurement: Measurement, **model: Any) -> dict[str, Any]:
    monitor = monitor_from_body(body(policy, **model))
    status = reconcile(monitor, {"p": measurement}, {}, T0).status
    return dict(status["policies"][0])


def test_model_labels_reach_every_signal_request() -> None:
    monitor = monitor_from_body(
        body({"signal": "errorRate", "condition": {"op": ">", "threshold": 0.1}}, labels={"cluster": "eu-1"})
    )
    assert monitor.requests[0].labels == (("cluster", "eu-1"),)


@pytest.mark.parametrize("method", ["psi", "jensen_shannon", "hellinger", "linf"])
def test_drift_method_reaches_the_request_and_defaults_to_psi(method: str) -> None:
    drift = {"signal": "dataDrift", "condition": {"op": ">", "autoThreshold": True}}
    assert monitor_from_body(body(drift)).requests[0].drift_method == "psi"
    assert monitor_from_body(body({**drift, "method": method})).requests[0].drift_method == method


def test_method_on_a_signal_without_a_drift_method_is_refused_naming_the_field() -> None:
    with pytest.raises(SpecError, match=r"spec.policies\[0\].method"):
        monitor_from_body(body({"signal": "accuracy", "method": "psi", "condition": {"op": "<", "threshold": 0.8}}))


def test_the_status_message_names_what_the_value_is_made_of() -> None:
    measured = Measurement(
        MeasurementKind.VALUES,
        (Series(0.41, 900),),
        threshold=0.2,
        detail="method hellinger: 0.41 in feature 'age' (version 'v1')",
    )
    drift = {"signal": "dataDrift", "method": "hellinger", "condition": {"op": ">", "autoThreshold": True}}
    entry = policy_status(drift, measured)
    assert entry["state"] == "Firing" and entry["threshold"] == 0.2
    assert "method hellinger" in entry["message"] and "feature 'age'" in entry["message"]


def test_false_alarm_rate_reaches_the_request_and_has_a_default() -> None:
    drift = {"signal": "dataDrift", "condition": {"op": ">", "autoThreshold": True}}
    assert monitor_from_body(body(drift)).requests[0].false_alarm_rate == 1e-5
    stated = {**drift, "condition": {"op": ">", "autoThreshold": True, "falseAlarmRate": 0.01}}
    assert monitor_from_body(body(stated)).requests[0].false_alarm_rate == 0.01
    with pytest.raises(SpecError, match=r"falseAlarmRate"):
        monitor_from_body(body({**drift, "condition": {"op": ">", "autoThreshold": True, "falseAlarmRate": 0.5}}))


def test_the_drifting_features_reach_the_event_and_the_alert() -> None:
    drifting = "drifting (Benjamini-Hochberg at 0.001%): 'age' 0.41 (threshold 0.12, 900 rows, p 1e-30)"
    measured = Measurement(MeasurementKind.VALUES, (Series(0.41, 900),), threshold=0.12, detail=drifting)
    watched = body({"signal": "dataDrift", "condition": {"op": ">", "autoThreshold": True}, "actions": ["page"]})
    watched["spec"]["actions"] = {"page": {"type": "alert"}}
    evaluation = reconcile(monitor_from_body(watched), {"p": measured}, {}, T0).evaluation
    assert drifting in evaluation.transitions[0].message  # the PolicyFiring Event
    assert drifting in evaluation.decisions[0].reason  # the alert


def test_sequential_detection_judges_the_cusum_and_keeps_it_in_status() -> None:
    drift = {
        "signal": "dataDrift",
        "window": "1m",
        "condition": {"op": ">", "autoThreshold": True},
        "detection": {"sequential": {"falseAlarmEvery": "30d"}},
    }
    monitor = monitor_from_body(body(drift))
    window = Measurement(MeasurementKind.VALUES, (Series(0.02, 600),), threshold=0.05, standardized=30.0)
    entry = dict(reconcile(monitor, {"p": window}, {}, T0).status["policies"][0])
    # One window far past anything drift-free: the statistic jumps past the boundary (30 - 0.5, capped at 2h).
    assert entry["state"] == "Firing"
    assert entry["sequential"]["statistic"] == entry["value"] > entry["threshold"]
    assert "CUSUM" in entry["message"] and "one false alarm per 30d" in entry["message"]


@pytest.mark.parametrize(
    ("op", "reduce", "state", "value"),
    [
        ("<", None, "Firing", 0.60),  # the worst replica decides: the lowest for <
        ("<", "max", "Inactive", 0.95),  # an explicit reduce keeps its meaning
        (">", None, "Firing", 0.95),  # the highest for >
    ],
)
def test_without_reduce_the_worst_series_decides_in_the_comparisons_direction(
    op: str, reduce: str | None, state: str, value: float
) -> None:
    threshold = 0.8 if op == "<" else 0.9
    policy: dict[str, Any] = {"query": "accuracy_by_replica", "condition": {"op": op, "threshold": threshold}}
    if reduce is not None:
        policy["reduce"] = reduce
    entry = policy_status(policy, Measurement.values(*REPLICAS))
    assert (entry["state"], entry["value"]) == (state, value)
    if reduce is None:
        decided_by = "10.0.0.2" if op == "<" else "10.0.0.1"
        assert decided_by in entry["message"]


def test_degraded_after_errors_sets_the_condition_after_that_many_error_cycles() -> None:
    watched = body({"signal": "accuracy", "condition": {"op": "<", "threshold": 0.8}})
    watched["spec"]["degradedAfterErrors"] = 2
    monitor = monitor_from_body(watched)
    error = {"p": Measurement.error("connection refused")}
    first = reconcile(monitor, error, {}, T0).status
    second = reconcile(monitor, error, first, T0.replace(minute=1)).status
    degraded = [next(c for c in s["conditions"] if c["type"] == "Degraded")["status"] for s in (first, second)]
    assert degraded == ["False", "True"] and second["phase"] == "Degraded"
