"""decide(): actions for firing policies only, stable idempotency keys, dry-run, paused, allOf/anyOf."""

from __future__ import annotations

import pytest
from policy_support import EMPTY, ERR, JUNK, Operator, accuracy_rule, at, bad, monitor, ok

from modelmonitor.policy import DecisionKind, Measurement, Rule, evaluate, format_time, idempotency_key


def latency_rule(**overrides: object) -> Rule:
    fields: dict[str, object] = {
        "name": "latency-p95",
        "op": ">",
        "threshold": 0.5,
        "window": "5m",
        "query": "histogram_quantile(0.95, ...)",
        "actions": ("scaleUp", "page"),
    }
    fields.update(overrides)
    return Rule(**fields)  # type: ignore[arg-type]


SLOW, FAST = Measurement.value(0.9, 100), Measurement.value(0.1, 100)


def test_key_format() -> None:
    assert idempotency_key("ml", "fraud", "accuracy-drop", at(0), "rollback") == (
        "ml/fraud/accuracy-drop/2026-11-24T10:00:00Z/rollback"
    )


def test_firing_decides_each_action_with_its_type_and_evidence() -> None:
    op = Operator(monitor(accuracy_rule()))
    result = op.cycle(0, bad(0.7, 640))
    assert [(d.kind, d.action, d.action_type, d.first) for d in result.decisions] == [
        (DecisionKind.ACT, "rollback", "rollback", True),
        (DecisionKind.ACT, "page", "alert", True),
    ]
    d = result.decisions[0]
    assert d.value == 0.7 and d.threshold == 0.85 and d.window == "10m" and "accuracy" in d.query
    assert d.severity.value == "warning" and not d.dry_run
    assert "0.7 < 0.85" in d.reason


def test_keys_are_stable_within_an_episode_and_new_for_the_next() -> None:
    op = Operator(monitor(accuracy_rule()))
    first = op.cycle(0, bad())
    again = op.cycle(30, bad())
    assert [d.key for d in first.decisions] == [d.key for d in again.decisions]
    assert [d.first for d in again.decisions] == [False, False]
    op.cycle(60, ok())
    new = op.cycle(90, bad())
    assert not {d.key for d in new.decisions} & {d.key for d in first.decisions}
    assert all(format_time(at(90)) in d.key for d in new.decisions)
    assert all(d.first for d in new.decisions)


def test_resolving_keeps_the_episode_key_and_decides_nothing_new() -> None:
    op = Operator(monitor(accuracy_rule(keep_firing_for_seconds=60)))
    fired = op.cycle(0, bad())
    assert op.cycle(30, ok()).decisions == ()  # Resolving: nothing to do
    refired = op.cycle(45, bad())  # back to Firing within the same episode
    assert [d.key for d in refired.decisions] == [d.key for d in fired.decisions]
    assert not any(d.first for d in refired.decisions)


def test_resolved_goes_to_alerts_only_with_the_ended_episode_key() -> None:
    op = Operator(monitor(accuracy_rule()))
    fired = op.cycle(0, bad())
    resolved = op.cycle(30, ok())
    assert [(d.kind, d.action) for d in resolved.decisions] == [(DecisionKind.RESOLVED, "page")]
    assert resolved.decisions[0].key == next(d.key for d in fired.decisions if d.action == "page")


def test_a_pending_episode_that_never_fired_resolves_nothing() -> None:
    op = Operator(monitor(accuracy_rule(for_seconds=300)))
    op.cycle(0, bad())
    assert op.cycle(30, ok()).decisions == ()


@pytest.mark.parametrize("hold", [ERR, EMPTY, JUNK], ids=["error", "nodata", "invalid"])
def test_no_decision_while_the_measurement_cannot_be_judged(hold: Measurement) -> None:
    op = Operator(monitor(accuracy_rule(for_seconds=60)))
    op.cycle(0, bad())
    held = [op.cycle(t, hold) for t in (30, 60, 90, 600)]
    assert all(e.decisions == () for e in held)
    # and a firing policy whose query fails stops re-deciding until a breach is seen again
    op.cycle(630, bad())
    assert op.state() == "Firing"
    assert [op.cycle(t, hold).decisions for t in (660, 690)] == [(), ()]
    assert op.cycle(720, bad()).decisions != ()


@pytest.mark.parametrize(
    ("monitor_dry_run", "policy_dry_run", "expected"), [(False, False, False), (True, False, True), (False, True, True)]
)
def test_dry_run_marks_decisions(monitor_dry_run: bool, policy_dry_run: bool, expected: bool) -> None:
    op = Operator(monitor(accuracy_rule(dry_run=policy_dry_run), dry_run=monitor_dry_run))
    result = op.cycle(0, bad())
    assert result.decisions and all(d.dry_run is expected for d in result.decisions)


def test_paused_decides_nothing_and_keeps_the_timers() -> None:
    rule = accuracy_rule(for_seconds=300)
    op = Operator(monitor(rule))
    op.cycle(0, bad())
    paused = Operator(monitor(rule, paused=True), status=op.status)
    result = paused.cycle(600, {})  # no measurement is needed while paused
    assert result.decisions == () and result.transitions == ()
    assert paused.status["phase"] == "Paused"
    assert paused.status["policies"][0]["state"] == "Pending"
    assert paused.status["policies"][0]["activeSince"] == format_time(at(0))


def test_paused_before_the_first_evaluation_shows_no_policy_yet() -> None:
    op = Operator(monitor(accuracy_rule(), paused=True))
    op.cycle(0, {})
    assert op.status["phase"] == "Paused" and op.status["policies"] == []


def test_any_of_each_firing_policy_acts_on_its_own() -> None:
    op = Operator(monitor(accuracy_rule(), latency_rule()))
    result = op.cycle(0, {"accuracy-drop": bad(), "latency-p95": FAST})
    assert [(d.policy, d.action) for d in result.decisions] == [
        ("accuracy-drop", "rollback"),
        ("accuracy-drop", "page"),
    ]
    result = op.cycle(30, {"accuracy-drop": bad(), "latency-p95": SLOW})
    assert [(d.policy, d.action) for d in result.decisions] == [
        ("accuracy-drop", "rollback"),
        ("accuracy-drop", "page"),
        ("latency-p95", "scaleUp"),
        ("latency-p95", "page"),
    ]


def test_all_of_waits_for_every_policy_and_decides_each_action_once() -> None:
    op = Operator(monitor(accuracy_rule(), latency_rule(), combine="allOf"))
    one = op.cycle(0, {"accuracy-drop": bad(), "latency-p95": FAST})
    assert one.decisions == ()
    assert op.status["phase"] == "Pending"
    assert op.status["firingPolicies"] == "accuracy-drop"
    both = op.cycle(30, {"accuracy-drop": bad(), "latency-p95": SLOW})
    assert [(d.policy, d.action) for d in both.decisions] == [
        ("accuracy-drop", "rollback"),
        ("accuracy-drop", "page"),
        ("latency-p95", "scaleUp"),
    ]
    assert op.status["phase"] == "Firing"
    held = op.cycle(60, {"accuracy-drop": bad(), "latency-p95": ERR})
    assert held.decisions == ()


def test_duplicate_action_names_in_one_policy_are_decided_once() -> None:
    op = Operator(monitor(accuracy_rule(actions=("page", "page"))))
    assert [d.action for d in op.cycle(0, bad()).decisions] == ["page"]


def test_missing_measurement_counts_as_an_error() -> None:
    spec = monitor(accuracy_rule())
    result = evaluate(spec, None, {}, at(0))
    assert result.states[0].state.value == "Error"
    assert "no measurement" in result.states[0].message
    assert result.decisions == ()


def test_evaluate_takes_policy_states_as_well_as_a_status_dict() -> None:
    from modelmonitor.policy import PolicyState

    spec = monitor(accuracy_rule(for_seconds=300))
    pending = PolicyState.from_status(
        {
            "name": "accuracy-drop",
            "state": "Pending",
            "since": "2026-11-24T10:00:00Z",
            "activeSince": "2026-11-24T10:00:00Z",
        }
    )
    result = evaluate(spec, {"accuracy-drop": pending}, {"accuracy-drop": bad()}, at(300))
    assert result.states[0].state.value == "Firing"
    assert evaluate(spec, {}, {"accuracy-drop": bad()}, at(300)).states[0].state.value == "Pending"
