"""The one reconcile path: a watched body to a `Monitor` once, then (monitor, measurements, prior status, now) to
the status to write, the decisions to act on, the checkpoint before acting and the Events. The loop and the action
tests call these same functions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelmonitor.api import parse_monitor
from modelmonitor.policy import ActionRecord, ActionResult, Measurement, MeasurementKind, Series
from modelmonitor.policy.spec import monitor_from_api
from modelmonitor.reconcile import Monitor, StatusWrite, monitor_from_body, reconcile, status_write

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def body(**spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "target": {"name": "fraud"},
        "model": {"name": "fraud", "version": "3"},
        "interval": "1m",
        "policies": [
            {
                "name": "accuracy",
                "signal": "accuracy",
                "window": "10m",
                "condition": {"op": "<", "threshold": 0.8},
                "actions": ["page"],
            },
            {"name": "drift", "signal": "dataDrift", "window": "1h", "condition": {"op": ">", "autoThreshold": True}},
        ],
        "actions": {"page": {"type": "alert", "webhook": {"url": "http://hooks.example/page"}}},
        **spec_changes,
    }
    meta = {
        "namespace": "ml",
        "name": "fraud",
        "uid": "u1",
        "generation": 4,
        "creationTimestamp": "2026-12-01T00:00:00Z",
    }
    return {"metadata": meta, "spec": spec}


def measured(accuracy: float, drift: float = 0.05, threshold: float = 0.1) -> dict[str, Measurement]:
    return {
        "accuracy": Measurement.value(accuracy, 500),
        "drift": Measurement(MeasurementKind.VALUES, (Series(drift, 900),), threshold=threshold, query="psi(...)"),
    }


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


@pytest.fixture
def monitor() -> Monitor:
    return monitor_from_body(body())


def test_a_watched_body_is_mapped_once_into_one_value(monitor: Monitor) -> None:
    assert (monitor.key, monitor.uid, monitor.generation, monitor.interval_seconds) == (("ml", "fraud"), "u1", 4, 60)
    assert [r.policy for r in monitor.requests] == ["accuracy", "drift"]
    accuracy, drift = monitor.requests
    assert (accuracy.signal, accuracy.window, accuracy.version, accuracy.auto_threshold) == (
        "accuracy",
        "10m",
        "3",
        False,
    )
    assert drift.auto_threshold
    assert [rule.name for rule in monitor.engine.policies] == ["accuracy", "drift"]
    assert monitor.engine.action_types == {"page": "alert"}


def test_monitors_with_equal_policies_share_them_and_a_changed_policy_is_its_own(monitor: Monitor) -> None:
    other = body(target={"name": "churn"}, model={"name": "churn"})
    other["metadata"]["name"] = "churn"
    twin = monitor_from_body(other)
    assert all(a is b for a, b in zip(twin.spec.policies, monitor.spec.policies, strict=True))
    assert all(a is b for a, b in zip(twin.engine.policies, monitor.engine.policies, strict=True))
    assert twin.spec.model.name == "churn"  # the policies and the parts equal in both are shared
    assert twin.spec.prometheus is monitor.spec.prometheus and twin.spec.combine is monitor.spec.combine
    assert all(twin.spec.actions[name] is action for name, action in monitor.spec.actions.items())
    changed = body()
    changed["spec"]["policies"][0]["condition"]["threshold"] = 0.7
    changed["spec"]["prometheus"] = {"url": "http://other-prometheus:9090"}
    stricter = monitor_from_body(changed)
    assert stricter.spec.policies[0] is not monitor.spec.policies[0]
    assert stricter.spec.policies[0].condition.threshold == stricter.engine.policies[0].threshold == 0.7
    assert stricter.spec.policies[1] is monitor.spec.policies[1]
    assert stricter.spec.prometheus is not monitor.spec.prometheus
    assert stricter.spec.prometheus.url == "http://other-prometheus:9090"
    # What is shared is what the monitor would have had on its own.
    assert stricter.spec == parse_monitor(changed)
    assert stricter.engine == monitor_from_api("ml", "fraud", parse_monitor(changed))


def test_healthy_cycle_writes_a_healthy_status_and_decides_nothing(monitor: Monitor) -> None:
    cycle = reconcile(monitor, measured(0.9), {}, T0)
    assert cycle.decisions == ()
    status = cycle.status
    assert status["phase"] == "Healthy" and status["observedGeneration"] == 4
    drift = next(p for p in status["policies"] if p["name"] == "drift")
    # threshold: auto takes the threshold that came with the measurement
    assert drift["threshold"] == 0.1 and drift["state"] == "Inactive"


def test_auto_threshold_without_a_calibrated_threshold_is_no_data(monitor: Monitor) -> None:
    measurements = {
        "accuracy": Measurement.value(0.9, 500),
        "drift": Measurement(MeasurementKind.VALUES, (Series(0.5, 900),)),
    }
    status = reconcile(monitor, measurements, {}, T0).status
    drift = next(p for p in status["policies"] if p["name"] == "drift")
    assert drift["state"] == "NoData" and "not calibrated" in drift["message"]


def test_a_breach_decides_the_policy_actions_with_the_query_sent(monitor: Monitor) -> None:
    cycle = reconcile(monitor, measured(0.5), {}, T0)
    assert cycle.changed
    (decision,) = cycle.decisions
    assert (decision.policy, decision.action, decision.action_type, decision.value) == (
        "accuracy",
        "page",
        "alert",
        0.5,
    )
    assert cycle.status["phase"] == "Firing"


def test_checkpoint_then_actions_replace_pending_records_of_the_same_key(monitor: Monitor) -> None:
    cycle = reconcile(monitor, measured(0.5), {}, T0)
    (decision,) = cycle.decisions

    def made(result: ActionResult, reason: str) -> ActionRecord:
        return ActionRecord("page", "alert", "accuracy", T0, result, reason, decision.key)

    first = cycle.with_pending(cycle.prior_status, [made(ActionResult.PENDING, "awaiting approval")])
    again = cycle.with_pending(first, [made(ActionResult.PENDING, "awaiting approval (2)")])
    assert [(a["result"], a["reason"]) for a in again["actions"]] == [("Pending", "awaiting approval (2)")]
    assert condition(again, "ActionInProgress")["status"] == "True"
    done = cycle.with_actions(again, [made(ActionResult.SUCCEEDED, "sent")])
    assert [a["result"] for a in done["actions"]] == ["Succeeded"]
    assert done["lastAction"].startswith("page Succeeded")


def test_events_name_the_transition_and_each_record(monitor: Monitor) -> None:
    cycle = reconcile(monitor, measured(0.5), {}, T0)
    record = ActionRecord("page", "alert", "accuracy", T0, ActionResult.FAILED, "webhook down", "k")
    events = cycle.events([record])
    assert any("policy accuracy (accuracy) Inactive -> Firing" in e.message for e in events)
    assert events[-1].type == "Warning" and events[-1].reason == "ActionFailed"
    assert "page (alert) for policy accuracy: webhook down" in events[-1].message


def test_prior_status_carries_the_timers_across_cycles() -> None:
    monitor = monitor_from_body(body(policies=[{**body()["spec"]["policies"][0], "for": "2m"}]))
    first = reconcile(monitor, {"accuracy": Measurement.value(0.5, 500)}, {}, T0)
    assert first.status["phase"] == "Pending" and not first.decisions
    later = reconcile(monitor, {"accuracy": Measurement.value(0.5, 500)}, first.status, T0 + timedelta(minutes=2))
    assert later.status["phase"] == "Firing" and len(later.decisions) == 1


def test_paused_monitor_measures_nothing_and_decides_nothing() -> None:
    monitor = monitor_from_body(body(paused=True))
    cycle = reconcile(monitor, {}, {}, T0)
    assert cycle.decisions == () and cycle.status["phase"] == "Paused"


def test_only_a_change_is_written_in_the_cycle_and_unchanged_statuses_at_their_heartbeat(monitor: Monitor) -> None:
    prior = reconcile(monitor, measured(0.9), {}, T0).status
    same = reconcile(monitor, measured(0.91), prior, T0 + timedelta(seconds=60)).status
    assert status_write(prior, same, T0 + timedelta(seconds=60), heartbeat_seconds=300) is StatusWrite.NONE
    assert status_write(prior, same, T0 + timedelta(seconds=300), heartbeat_seconds=300) is StatusWrite.HEARTBEAT
    assert status_write(prior, same, T0 + timedelta(seconds=60), heartbeat_seconds=0) is StatusWrite.HEARTBEAT
    firing = reconcile(monitor, measured(0.5), prior, T0 + timedelta(seconds=60)).status
    assert status_write(prior, firing, T0 + timedelta(seconds=60), heartbeat_seconds=300) is StatusWrite.CHANGE
    assert status_write(prior, firing, T0 + timedelta(seconds=60), heartbeat_seconds=0) is StatusWrite.CHANGE


def _heartbeats(
    monitor: Monitor, written: list[datetime], cycles: list[datetime]
) -> tuple[list[int], list[list[datetime]]]:
    """Unchanged monitors named model-0..n, each last written at ``written[i]``, evaluated at each of ``cycles``
    with a 300 s heartbeat: how many heartbeats each cycle writes, and each monitor's write times."""
    from modelmonitor.policy.timefmt import format_time
    from modelmonitor.sharding import fraction

    prior = reconcile(monitor, measured(0.9), {}, T0).status
    unchanged = reconcile(monitor, measured(0.91), prior, T0).status
    phases = [fraction("ml", f"model-{i}") for i in range(len(written))]
    times = [[at] for at in written]
    per_cycle = []
    for now in cycles:
        due = [
            i
            for i, phase in enumerate(phases)
            if status_write({**prior, "lastEvaluationTime": format_time(times[i][-1])}, unchanged, now, 300, phase)
            is StatusWrite.HEARTBEAT
        ]
        for i in due:
            times[i].append(now)
        per_cycle.append(len(due))
    return per_cycle, times


def test_heartbeats_of_a_fleet_are_spread_over_the_period(monitor: Monitor) -> None:
    """1,000 unchanged monitors all written at T0 and evaluated every 30 s for 900 s: no cycle rewrites more than
    a sixth of them (without phases all would be due in the same cycle); none is rewritten within half a period of
    its last write, none waits longer than one and a half periods, and once written by a heartbeat each is
    rewritten once per period."""
    per_cycle, times = _heartbeats(monitor, [T0] * 1000, [T0 + timedelta(seconds=30 * k) for k in range(1, 31)])
    assert max(per_cycle) < 1000 / 6, per_cycle
    for written in times:
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(written)]
        assert gaps and min(gaps) >= 150 and max(gaps) <= 450, gaps
        assert set(gaps[1:]) <= {300.0}, gaps
    prior = reconcile(monitor, measured(0.9), {}, T0).status
    unchanged = reconcile(monitor, measured(0.91), prior, T0).status
    at_once = T0 + timedelta(seconds=300)
    without_phases = sum(status_write(prior, unchanged, at_once, 300) is StatusWrite.HEARTBEAT for _ in range(1000))
    assert without_phases == 1000


def test_a_start_writing_every_first_status_is_not_followed_by_a_burst_of_heartbeats(monitor: Monitor) -> None:
    """A start writes 1,000 monitors' first statuses one after the other over 190 s (at 10,000 monitors the
    API server takes minutes for them), then evaluates every 30 s: no later cycle rewrites more than a sixth of
    them (a tenth is the steady rate). Heartbeats at every instant passed since each write would make the first
    such cycle rewrite about a third (each monitor written early in the start reaching its instant before the
    start ends)."""
    written = [T0 + timedelta(seconds=0.19 * i) for i in range(1000)]
    per_cycle, _ = _heartbeats(monitor, written, [T0 + timedelta(seconds=190 + 30 * k) for k in range(20)])
    assert max(per_cycle) < 1000 / 6, per_cycle


def test_a_monitor_yielding_to_an_older_one_shows_the_conflict(monitor: Monitor) -> None:
    assert monitor.created == datetime(2026, 12, 1, tzinfo=UTC)
    alone = reconcile(monitor, measured(0.9), {}, T0).status
    assert condition(alone, "Conflict")["status"] == "False"
    yielding = reconcile(monitor, measured(0.9), alone, T0, conflict_with="ml/older").status
    assert (
        condition(yielding, "Conflict")["status"] == "True" and "ml/older" in condition(yielding, "Conflict")["message"]
    )
