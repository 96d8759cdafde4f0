"""monitor_from_spec(): the camelCase spec dict to the engine's inputs, with field-named errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelmonitor.policy import Combine, NoDataPolicy, Reduce, monitor_from_spec, parse_duration

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
            "query": 'modelmonitor:psi{model="fraud"}',
            "window": "1h",
            "condition": {"op": ">", "threshold": "auto"},
            "noData": "ok",
            "reduce": "any",
            "actions": ["retrain"],
            "dryRun": True,
        },
    ],
    "actions": {"rollback": {"type": "rollback"}, "page": {"type": "alert"}, "retrain": {"type": "retrain"}},
    "combine": {"mode": "allOf"},
    "degradedAfterErrors": 5,
}


def test_full_spec() -> None:
    spec = monitor_from_spec("ml", "fraud", SPEC, calibrated_thresholds={"drift": 0.12})
    accuracy, drift = spec.policies
    assert (accuracy.for_seconds, accuracy.keep_firing_for_seconds, accuracy.min_samples) == (300, 120, 200)
    assert accuracy.clear_threshold == 0.88 and accuracy.query == "signal accuracy"
    assert drift.threshold == 0.12 and drift.no_data is NoDataPolicy.OK and drift.reduce is Reduce.ANY
    assert drift.dry_run and drift.query == 'modelmonitor:psi{model="fraud"}'
    assert spec.combine is Combine.ALL_OF and spec.degraded_after_errors == 5
    assert spec.action_types["page"] == "alert"


def test_defaults() -> None:
    spec = monitor_from_spec("ml", "m", {"policies": [{"name": "p", "condition": {"op": ">", "threshold": 1}}]})
    rule = spec.policies[0]
    assert (rule.for_seconds, rule.keep_firing_for_seconds, rule.min_samples) == (0, 0, 0)
    assert (rule.no_data.value, rule.reduce, rule.severity.value) == ("hold", None, "warning")
    assert spec.combine is Combine.ANY_OF and spec.degraded_after_errors == 3 and not spec.paused


def test_auto_threshold_without_calibration_is_none() -> None:
    assert monitor_from_spec("ml", "fraud", SPEC).policies[1].threshold is None


def test_auto_threshold_as_the_crd_writes_it() -> None:
    spec = _broken(["policies", 1, "condition"], {"op": ">", "autoThreshold": True})
    assert monitor_from_spec("ml", "fraud", spec, calibrated_thresholds={"drift": 0.3}).policies[1].threshold == 0.3
    both = _broken(["policies", 1, "condition"], {"op": ">", "threshold": 0.2, "autoThreshold": True})
    with pytest.raises(ValueError, match="set exactly one of threshold or autoThreshold"):
        monitor_from_spec("ml", "fraud", both)


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
        (["policies", 0, "condition", "op"], "=<", r"spec.policies\[0\].condition.op: must be one of"),
        (["policies", 0, "for"], "5 minutes", r"spec.policies\[0\].for: '5 minutes' is not a duration"),
        (["policies", 0, "keepFiringFor"], "-1s", r"spec.policies\[0\].keepFiringFor"),
        (["policies", 0, "condition", "threshold"], "high", r"condition.threshold: expected a number"),
        (["policies", 0, "condition", "clearThreshold"], 0.5, r"spec.policies\[0\]: .*clearThreshold 0.5"),
        (["policies", 1, "noData"], "zero", r"spec.policies\[1\].noData: must be one of"),
        (["policies", 1, "reduce"], "last", r"spec.policies\[1\].reduce: must be one of"),
        (["policies", 1, "actions"], ["retrain", "nuke"], "not defined in spec.actions: nuke"),
        (["policies", 1, "name"], "accuracy-drop", "policy names must be unique, repeated: accuracy-drop"),
        (["policies", 0, "minSamples"], -1, r"spec.policies\[0\].minSamples"),
        (["combine", "mode"], "oneOf", "spec.combine.mode: must be one of"),
        (["degradedAfterErrors"], 0, "spec.degradedAfterErrors"),
        (["actions", "page"], {"alertmanager": {}}, "spec.actions.page.type: required"),
    ],
)
def test_errors_name_the_field(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        monitor_from_spec("ml", "fraud", _broken(path, value))


@pytest.mark.parametrize(
    ("text", "seconds"), [("0s", 0), ("90s", 90), ("1h30m", 5400), ("1d", 86400), ("250ms", 0.25), ("2m5s", 125)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1.5m", "m", "-1s", "1w", " 1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)
