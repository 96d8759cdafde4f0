"""The engine's view of a validated ModelMonitor (monitor_from_api), mapped once per watched change; errors name
the field (validation is the API model's, and a watched body goes through it first)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelmonitor.api import SpecError, parse_spec
from modelmonitor.policy import Combine, Measurement, NoDataPolicy, Reduce, monitor_from_api, parse_duration
from modelmonitor.reconcile import monitor_from_body

SPEC: dict[str, Any] = {
    "interval": "30s",
    "policies": [
        {
            "name": "accuracy-drop",
            "signal": "accuracy",
            "window": "10m",
            "condition": {"op": "<", "threshold": 0.85, "clearThreshold": 0.88},
            "for": "5m",
            "keepFiringFor": "2m",
            "minSamples": 200,
            "severity": "critical",
            "actions": ["rollback", "page"],
        },
        {
            "name": "drift",
            "signal": "dataDrift",
            "window": "1h",
            "condition": {"op": ">", "autoThreshold": True},
            "noData": "ok",
            "reduce": "any",
            "actions": ["scale-up"],
            "dryRun": True,
        },
    ],
    "actions": {
        "rollback": {"type": "rollback"},
        "page": {"type": "alert", "webhook": {"url": "http://hooks.example/x"}},
        "scale-up": {"type": "scale", "step": 1, "maxReplicas": 4},
    },
    "target": {"name": "fraud"},
    "model": {"name": "fraud"},
    "combine": {"mode": "allOf"},
    "degradedAfterErrors": 5,
}


def _engine(spec: dict[str, Any]) -> Any:
    return monitor_from_api("ml", "fraud", parse_spec(spec))


def test_full_spec() -> None:
    spec = _engine(SPEC)
    accuracy, drift = spec.policies
    assert (accuracy.for_seconds, accuracy.keep_firing_for_seconds, accuracy.min_samples) == (300, 120, 200)
    assert accuracy.clear_threshold == 0.88 and accuracy.query == "signal accuracy"
    assert drift.auto_threshold and drift.threshold is None
    assert drift.no_data is NoDataPolicy.OK and drift.reduce is Reduce.ANY
    assert drift.dry_run and drift.query == "signal dataDrift"
    assert spec.combine is Combine.ALL_OF and spec.degraded_after_errors == 5
    assert spec.action_types["page"] == "alert"


def test_defaults() -> None:
    minimal = {"target": {"name": "m"}, "model": {"name": "m"}}
    spec = _engine(
        {**minimal, "policies": [{"name": "p", "signal": "errorRate", "condition": {"op": ">", "threshold": 1}}]}
    )
    rule = spec.policies[0]
    assert (rule.for_seconds, rule.keep_firing_for_seconds, rule.min_samples) == (0, 0, 0)
    assert (rule.no_data.value, rule.reduce, rule.severity.value) == ("hold", None, "warning")
    assert spec.combine is Combine.ANY_OF and spec.degraded_after_errors == 3 and not spec.paused


def test_auto_threshold_comes_with_each_measurement() -> None:
    drift = _engine(SPEC).policies[1]
    measured = drift.for_measurement(Measurement(Measurement.value(0.3).kind, threshold=0.12, query="sum(x)"))
    assert (measured.threshold, measured.query) == (0.12, "sum(x)")
    assert drift.for_measurement(Measurement.no_data("none")).threshold is None
    fixed = _engine(SPEC).policies[0]
    assert fixed.for_measurement(Measurement(Measurement.value(0.3).kind, threshold=0.5)).threshold == 0.85


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    node: Any = spec
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["policies", 0, "condition", "op"], "=<", r"spec.policies\[0\].condition.op"),
        (["policies", 0, "for"], "5 minutes", r"spec.policies\[0\].for"),
        (["policies", 0, "condition", "clearThreshold"], 0.5, r"spec.policies\[0\].condition.clearThreshold"),
        (["policies", 1, "noData"], "zero", r"spec.policies\[1\].noData"),
        (["policies", 1, "actions"], ["scale-up", "nuke"], "not defined in spec.actions: nuke"),
        (["policies", 1, "name"], "accuracy-drop", "used by more than one policy"),
        (["policies", 0, "minSamples"], -1, r"spec.policies\[0\].minSamples"),
        (["combine", "mode"], "oneOf", "spec.combine.mode"),
        (["degradedAfterErrors"], 0, "spec.degradedAfterErrors"),
    ],
)
def test_errors_name_the_field(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        monitor_from_body({"metadata": {"namespace": "ml", "name": "fraud"}, "spec": _broken(path, value)})


@pytest.mark.parametrize(
    ("text", "seconds"), [("0s", 0), ("90s", 90), ("1h30m", 5400), ("1d", 86400), ("250ms", 0.25), ("2m5s", 125)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1.5m", "m", "-1s", "1w", " 1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)
