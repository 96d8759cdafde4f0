"""Several series where one was expected: without `reduce` the worst series decides, and the message names it."""

from __future__ import annotations

import pytest
from policy_support import Operator, accuracy_rule, monitor

from modelmonitor.api import parse_spec
from modelmonitor.policy import Measurement, OutcomeKind, Series, classify, monitor_from_api

OK, BREACH = OutcomeKind.OK, OutcomeKind.BREACH

HEALTHY = Series(0.95, 500, (("instance", "10.0.0.1:9100"), ("job", "fraud")))
FAILING = Series(0.60, 500, (("instance", "10.0.0.2:9100"), ("job", "fraud")))
MIDDLE = Series(0.80, 500, (("instance", "10.0.0.3:9100"), ("job", "fraud")))
THREE = Measurement.values(HEALTHY, FAILING, MIDDLE)


@pytest.mark.parametrize(
    ("op", "threshold", "reduce", "expected", "value", "decided_by", "text"),
    [
        # No reduce: the worst series in the direction of the comparison.
        ("<", 0.85, None, BREACH, 0.60, FAILING, "lowest of 3 of 3 series"),
        ("<=", 0.60, None, BREACH, 0.60, FAILING, "lowest of 3 of 3 series"),
        ("<", 0.50, None, OK, 0.60, FAILING, "lowest of 3 of 3 series"),
        (">", 0.90, None, BREACH, 0.95, HEALTHY, "highest of 3 of 3 series"),
        (">=", 0.95, None, BREACH, 0.95, HEALTHY, "highest of 3 of 3 series"),
        (">", 0.99, None, OK, 0.95, HEALTHY, "highest of 3 of 3 series"),
        # An explicit reduce keeps its meaning, whatever the direction.
        ("<", 0.85, "max", OK, 0.95, HEALTHY, "reduce max over 3 of 3 series"),
        ("<", 0.85, "min", BREACH, 0.60, FAILING, "reduce min over 3 of 3 series"),
        ("<", 0.85, "any", BREACH, 0.60, FAILING, "reduce any over 3 of 3 series"),
        ("<", 0.85, "all", OK, 0.95, HEALTHY, "reduce all over 3 of 3 series"),
        (">", 0.70, "min", OK, 0.60, FAILING, "reduce min over 3 of 3 series"),
    ],
)
def test_which_series_decides(
    op: str,
    threshold: float,
    reduce: str | None,
    expected: OutcomeKind,
    value: float,
    decided_by: Series,
    text: str,
) -> None:
    outcome = classify(accuracy_rule(op=op, threshold=threshold, reduce=reduce), THREE)
    assert outcome.kind is expected
    assert outcome.value == value
    assert outcome.samples == 500
    assert f"{text}: {decided_by.label_text()}" in outcome.reason


def test_avg_names_no_single_series() -> None:
    outcome = classify(accuracy_rule(reduce="avg"), THREE)
    assert outcome.value == pytest.approx((0.95 + 0.60 + 0.80) / 3)
    assert outcome.reason.endswith("reduce avg over 3 of 3 series)")
    assert "instance=" not in outcome.reason


def test_one_series_needs_no_reduce_text() -> None:
    outcome = classify(accuracy_rule(), Measurement.values(FAILING))
    assert outcome.kind is BREACH
    assert "series" not in outcome.reason


def test_a_series_without_labels_is_counted_but_not_named() -> None:
    outcome = classify(accuracy_rule(), Measurement.values(Series(0.9, 500), Series(0.7, 500)))
    assert outcome.value == 0.7
    assert outcome.reason.endswith("lowest of 2 of 2 series)")


def test_series_left_out_are_not_the_worst() -> None:
    thin = Series(0.10, 5, (("instance", "10.0.0.9:9100"),))
    outcome = classify(accuracy_rule(min_samples=100), Measurement.values(HEALTHY, thin, MIDDLE))
    assert outcome.kind is BREACH
    assert outcome.value == 0.80
    assert 'lowest of 2 of 3 series: {instance="10.0.0.3:9100",job="fraud"}' in outcome.reason


@pytest.mark.parametrize(
    ("policy", "reduce"),
    [
        ({"name": "p", "signal": "accuracy", "condition": {"op": "<", "threshold": 0.85}}, None),
        ({"name": "p", "signal": "accuracy", "condition": {"op": "<", "threshold": 0.85}, "reduce": None}, None),
        ({"name": "p", "signal": "accuracy", "condition": {"op": "<", "threshold": 0.85}, "reduce": "max"}, "max"),
    ],
)
def test_the_spec_maps_an_absent_reduce_to_the_worst_series(policy: dict[str, object], reduce: str | None) -> None:
    spec = parse_spec({"target": {"name": "m"}, "model": {"name": "m"}, "policies": [policy]})
    rule = monitor_from_api("ml", "m", spec).policies[0]
    assert rule.reduce == reduce


def test_a_failing_replica_fires_the_policy_and_the_status_names_it() -> None:
    """The user's view: two replicas, one healthy and one failing; `op: "<"` with no reduce fires."""
    op = Operator(monitor(accuracy_rule(actions=())))
    op.cycle(0, Measurement.values(HEALTHY, FAILING))
    entry = op.status["policies"][0]
    assert entry["state"] == "Firing"
    assert entry["value"] == 0.60
    assert 'lowest of 2 of 2 series: {instance="10.0.0.2:9100",job="fraud"}' in entry["message"]
    # The failing replica recovers: the worst is now the healthy one, and the policy clears.
    op.cycle(30, Measurement.values(HEALTHY, Series(0.90, 500, FAILING.labels)))
    entry = op.status["policies"][0]
    assert entry["state"] == "Inactive"
    assert entry["value"] == 0.90
