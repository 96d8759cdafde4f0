"""One evaluation cycle of the loop with fakes around it: what reaches Prometheus, what is written to status."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelmonitor import loop
from modelmonitor.actions.base import ActionsOutcome, Checkpoint, MonitorContext
from modelmonitor.adapters.kubernetes import ObjectRef
from modelmonitor.adapters.prometheus import QueryResult, Sample
from modelmonitor.loop import Evaluated, Evaluator, Registry, WriteBacklog, decode_status, encode_status, next_aligned
from modelmonitor.operator_metrics import OperatorMetrics
from modelmonitor.policy import Evaluation, Measurement
from modelmonitor.reconcile import reconcile
from modelmonitor.settings import OperatorSettings

NOW = 1_800_000_000.4  # a wall-clock instant with a fraction of a second


class FakePrometheus:
    """Answers every query with the counts of three groups (labeled predictions, or predictions per group):
    two big ones and a tiny one."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.queries: list[str] = []

    def query(self, promql: str, *, at: datetime | None = None) -> QueryResult:
        self.queries.append(promql)
        base = {"namespace": self.namespace, "model": "fraud"}
        counts = {  # group -> outcome -> count
            "big": {"tp": 400.0, "fp": 100.0, "tn": 400.0, "fn": 100.0},  # predicts positive for 50%
            "other": {"tp": 300.0, "fp": 100.0, "tn": 400.0, "fn": 100.0},  # 44.4%
            "tiny": {"tp": 0.0, "fp": 5.0, "tn": 0.0, "fn": 0.0},  # 100%, from 5 predictions
        }
        samples = [
            Sample({**base, "group": group, "outcome": outcome}, value, NOW)
            for group, outcomes in counts.items()
            for outcome, value in outcomes.items()
        ]
        if "modelmonitor_group_predictions_total" in promql:  # fairnessGap: predictions per group
            samples = [
                Sample({**base, "group": group, "predicted": predicted}, value, NOW)
                for group, o in counts.items()
                for predicted, value in (("positive", o["tp"] + o["fp"]), ("negative", o["tn"] + o["fn"]))
            ]
        elif "group" not in promql:  # the un-grouped quality query: sum over groups
            totals: dict[str, float] = {}
            for outcomes in counts.values():
                for outcome, value in outcomes.items():
                    totals[outcome] = totals.get(outcome, 0.0) + value
            samples = [Sample({**base, "outcome": o}, v, NOW) for o, v in totals.items()]
        return QueryResult(query=promql, result_type="vector", samples=tuple(samples))


class RecordingKube:
    def __init__(self) -> None:
        self.statuses: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str]] = []

    def patch_monitor_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.statuses.append((namespace, name, dict(status)))

    def emit_event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None:
        self.events.append((event_type, reason, message))

    def read_secret(self, namespace: str, name: str) -> Mapping[str, bytes]:
        raise AssertionError("no Secret is needed")


class NoActions:
    def __init__(self) -> None:
        self.seen_now: list[datetime] = []
        self.contexts: list[MonitorContext] = []

    def run(
        self, monitor: MonitorContext, evaluation: Evaluation, now: datetime, checkpoint: Checkpoint
    ) -> ActionsOutcome:
        self.seen_now.append(now)
        self.contexts.append(monitor)
        return ActionsOutcome()


def monitor(name: str, namespace: str = "ml") -> dict[str, Any]:
    return {
        "apiVersion": "modelmonitor.dev/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "target": {"name": "fraud"},
            "model": {"name": "fraud"},
            "prometheus": {"url": "http://prometheus.test:9090"},
            "interval": "30s",
            "policies": [
                {
                    "name": "accuracy",
                    "signal": "accuracy",
                    "window": "10m",
                    "condition": {"op": "<", "threshold": 0.7},
                },
                {
                    "name": "fairness",
                    "signal": "fairnessGap",
                    "window": "10m",
                    "condition": {"op": ">", "threshold": 0.3},
                    # The tiny group (5 samples, all positive predictions) must not decide the gap.
                    "minSamples": 50,
                },
            ],
        },
    }


def run_cycle(
    *bodies: dict[str, Any],
    settings: OperatorSettings | None = None,
    registry: Registry | None = None,
    kube: RecordingKube | None = None,
    now: float = NOW,
) -> tuple[RecordingKube, FakePrometheus, NoActions, Registry]:
    registry = Registry() if registry is None else registry
    for body in bodies:
        registry.upsert(body)
    kube = RecordingKube() if kube is None else kube
    prometheus, actions = FakePrometheus("ml"), NoActions()
    evaluator = Evaluator(
        settings or OperatorSettings(),
        registry,
        kube,
        actions,
        OperatorMetrics(),
        prometheus_factory=lambda _settings: prometheus,
        clock=lambda: now,
    )
    try:
        evaluator.cycle()
        assert evaluator.wait_for_heartbeats(10), "the heartbeat writes were not made after the cycle"
    finally:
        evaluator.close()
    return kube, prometheus, actions, registry


def test_a_cycle_measures_judges_and_writes_each_monitor_once() -> None:
    kube, _prometheus, _actions, registry = run_cycle(monitor("a"))
    assert [(ns, name) for ns, name, _ in kube.statuses] == [("ml", "a")]
    status = kube.statuses[0][2]
    policies = {p["name"]: p for p in status["policies"]}
    assert policies["accuracy"]["value"] == pytest.approx((400 + 400 + 300 + 400) / (1000 + 900 + 5))
    assert status["phase"] == "Healthy"
    assert status["observedGeneration"] == 1
    # The next evaluation is at the next multiple of the interval, so equal intervals line up across monitors.
    entry = registry.all()[0]
    assert entry.next_due == next_aligned(NOW, 30.0) == 1_800_000_030.0


def test_min_samples_reaches_the_signal_so_a_tiny_group_does_not_decide_fairness() -> None:
    kube, _prometheus, _actions, _registry = run_cycle(monitor("a"))
    fairness = next(p for p in kube.statuses[0][2]["policies"] if p["name"] == "fairness")
    # With the tiny group (100% positive predictions) the gap would be 1.0 - 0.444 = 0.56 and breach 0.3.
    assert fairness["state"] == "Inactive", fairness
    assert fairness["value"] == pytest.approx(0.5 - 400 / 900)


def test_queries_do_not_grow_with_the_number_of_monitors() -> None:
    _, one, _, _ = run_cycle(monitor("a"))
    _, many, _, _ = run_cycle(*(monitor(f"m{i}") for i in range(50)))
    assert len(many.queries) == len(one.queries)


def test_actions_and_status_see_whole_second_timestamps() -> None:
    kube, _prometheus, actions, _registry = run_cycle(monitor("a"))
    assert actions.seen_now and all(moment.microsecond == 0 for moment in actions.seen_now)
    assert kube.statuses[0][2]["lastEvaluationTime"] == "2027-01-15T08:00:00Z"


def test_a_status_edited_into_something_unreadable_stops_neither_its_monitor_nor_the_others() -> None:
    # A Pending policy without activeSince: the operator never writes one (the episode's start is part of every
    # action's idempotency key); here edited by hand through the status subresource.
    edited = monitor("edited")
    edited["status"] = {
        "lastEvaluationTime": "2027-01-15T07:59:30Z",
        "policies": [
            {"name": "accuracy", "state": "Pending", "since": "2027-01-15T07:50:00Z", "errorStreak": 0},
            {"name": "fairness", "state": "Inactive", "since": "2027-01-15T07:40:00Z", "errorStreak": 0},
        ],
    }
    kube, _prometheus, _actions, _registry = run_cycle(edited, monitor("other"))
    written = {name: status for _ns, name, status in kube.statuses}
    assert set(written) == {"edited", "other"}
    policies = {p["name"]: p for p in written["edited"]["policies"]}
    # The unreadable policy starts over, as of this cycle; the readable one keeps its state's start.
    assert (policies["accuracy"]["state"], policies["accuracy"]["since"]) == ("Inactive", "2027-01-15T08:00:00Z")
    assert (policies["fairness"]["state"], policies["fairness"]["since"]) == ("Inactive", "2027-01-15T07:40:00Z")
    warnings = [(kind, message) for kind, reason, message in kube.events if reason == "StatusUnreadable"]
    assert len(warnings) == 1 and warnings[0][0] == "Warning"
    assert "status.policies[0]" in warnings[0][1] and "activeSince" in warnings[0][1]


def test_a_paused_monitor_keeps_its_policies_as_they_were_messages_included() -> None:
    paused = monitor("paused")
    paused["spec"]["paused"] = True
    paused["status"] = {
        "lastEvaluationTime": "2027-01-15T07:59:30Z",
        "policies": [
            {"name": "accuracy", "state": "Firing", "since": "2027-01-15T07:40:00Z", "errorStreak": 0,
             "activeSince": "2027-01-15T07:39:00Z", "value": 0.61, "message": "value 0.61 < 0.7; firing since then"},
        ],
    }  # fmt: skip
    kube, prometheus, _actions, _registry = run_cycle(paused)
    assert prometheus.queries == []
    (_ns, _name, status), *_ = kube.statuses
    (accuracy,) = status["policies"]
    assert (accuracy["state"], accuracy["message"]) == ("Firing", "value 0.61 < 0.7; firing since then")


def breaching(name: str) -> dict[str, Any]:
    """A monitor whose accuracy policy breaches at once (threshold above the measured 0.79) with `for: 0s`."""
    body = monitor(name)
    body["spec"]["policies"][0]["condition"]["threshold"] = 0.9
    return body


class FirstWriteWaits(RecordingKube):
    """Holds the cycle's first status write until ``released`` is set."""

    def __init__(self, released: threading.Event) -> None:
        super().__init__()
        self.released = released

    def patch_monitor_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        if not self.statuses:
            assert self.released.wait(10), "the cycle did not evaluate every monitor"
        super().patch_monitor_status(namespace, name, status)


def test_a_monitor_that_changes_state_is_written_next_not_after_the_unchanged_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bodies = [monitor(f"quiet{i:02d}") for i in range(20)] + [breaching("zz-breach")]
    # The one writer is held in its first write until every monitor is evaluated, so 20 wait for it: the breach,
    # evaluated last, is written as soon as the writer is free.
    evaluated = threading.Event()
    calls = 0
    real = loop.evaluate

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        evaluation = real(*args, **kwargs)
        calls += 1
        if calls == len(bodies):
            evaluated.set()
        return evaluation

    monkeypatch.setattr(loop, "evaluate", counting)
    kube = FirstWriteWaits(evaluated)
    run_cycle(*bodies, settings=OperatorSettings(write_parallelism=1), kube=kube)
    names = [name for _, name, _ in kube.statuses]
    assert len(names) == len(bodies)
    assert names.index("zz-breach") <= 1, names
    breach = kube.statuses[names.index("zz-breach")][2]
    assert {p["state"] for p in breach["policies"] if p["name"] == "accuracy"} == {"Firing"}


def test_with_a_heartbeat_an_unchanged_monitor_is_not_rewritten_until_the_heartbeat_is_due() -> None:
    settings = OperatorSettings(status_heartbeat_seconds=300)
    registry = Registry()
    first, *_ = run_cycle(monitor("a"), settings=settings, registry=registry)
    assert len(first.statuses) == 1
    entry = registry.all()[0]
    entry.next_due = 0.0  # due again; nothing but the values would change
    second, *_ = run_cycle(settings=settings, registry=registry)
    assert second.statuses == []
    # Without the heartbeat, every cycle writes.
    entry.next_due = 0.0
    third, *_ = run_cycle(registry=registry, settings=OperatorSettings(status_heartbeat_seconds=0), now=NOW + 30)
    assert len(third.statuses) == 1


class HeldWrites(RecordingKube):
    """Each status write waits for ``released``; ``writing`` is set while one does."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()
        self.writing = threading.Event()

    def patch_monitor_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.writing.set()
        assert self.released.wait(10), "the write was never released"
        super().patch_monitor_status(namespace, name, status)


def evaluator_for(registry: Registry, kube: RecordingKube, settings: OperatorSettings, clock: list[float]) -> Evaluator:
    prometheus = FakePrometheus("ml")
    return Evaluator(
        settings, registry, kube, NoActions(), OperatorMetrics(),
        prometheus_factory=lambda _settings: prometheus, clock=lambda: clock[0],
    )  # fmt: skip


def test_a_heartbeat_is_written_after_its_cycle_and_the_cycle_does_not_wait_for_it() -> None:
    registry, kube, clock = Registry(), HeldWrites(), [NOW]
    registry.upsert(monitor("a"))
    evaluator = evaluator_for(registry, kube, OperatorSettings(status_heartbeat_seconds=0), clock)
    try:
        kube.released.set()
        evaluator.cycle()  # the first status is a change: written in the cycle
        assert len(kube.statuses) == 1
        kube.released.clear()
        kube.writing.clear()
        registry.all()[0].next_due = 0.0
        clock[0] += 30
        report = evaluator.cycle()  # only the values changed: a heartbeat, held in its write after the cycle
        assert (report.evaluated, report.heartbeats, report.heartbeats_behind) == (1, 1, 0)
        assert kube.writing.wait(5) and len(kube.statuses) == 1
        kube.released.set()
        assert evaluator.wait_for_heartbeats(5)
        assert (
            len(kube.statuses) == 2
            and kube.statuses[1][2]["lastEvaluationTime"] > kube.statuses[0][2]["lastEvaluationTime"]
        )
        assert registry.all()[0].evaluated_at == kube.statuses[1][2]["lastEvaluationTime"]
    finally:
        kube.released.set()
        evaluator.close()


class Worsening(FakePrometheus):
    """`FakePrometheus` until ``bad`` is set; then no prediction is right (accuracy 0)."""

    bad = False

    def query(self, promql: str, *, at: datetime | None = None) -> QueryResult:
        result = super().query(promql, at=at)
        if not self.bad:
            return result
        wrong = tuple(
            Sample(s.labels, 0.0 if s.labels.get("outcome") in ("tp", "tn") else s.value, s.timestamp)
            for s in result.samples
        )
        return QueryResult(query=result.query, result_type=result.result_type, samples=wrong)


def test_a_heartbeat_never_lands_over_a_newer_status_of_the_same_monitor() -> None:
    registry, kube, clock, prometheus = Registry(), HeldWrites(), [NOW], Worsening("ml")
    for name in ("a", "b"):
        registry.upsert(monitor(name))
    evaluator = Evaluator(
        OperatorSettings(status_heartbeat_seconds=0, write_parallelism=1), registry, kube, NoActions(),
        OperatorMetrics(), prometheus_factory=lambda _settings: prometheus, clock=lambda: clock[0],
    )  # fmt: skip

    def next_cycle() -> None:
        for entry in registry.all():
            entry.next_due = 0.0
        clock[0] += 30

    try:
        kube.released.set()
        evaluator.cycle()  # both written: their first status
        kube.released.clear()
        kube.writing.clear()
        next_cycle()
        assert evaluator.cycle().heartbeats == 2
        assert kube.writing.wait(5)  # a's heartbeat is in its write; b's waits
        # Both breach in the next cycle, which first lets a's heartbeat finish, then writes both as Firing.
        prometheus.bad = True
        next_cycle()
        third = threading.Thread(target=evaluator.cycle)
        third.start()
        time.sleep(0.2)
        kube.released.set()
        third.join(10)
        assert evaluator.wait_for_heartbeats(5)
    finally:
        kube.released.set()
        evaluator.close()
    written = [(name, status["lastEvaluationTime"], status["phase"]) for _, name, status in kube.statuses]
    times = sorted({at for _, at, _ in written})
    assert len(times) == 3, written
    first, heartbeat_at, firing_at = times
    assert [w for w in written if w[0] == "a"] == [
        ("a", first, "Healthy"),
        ("a", heartbeat_at, "Healthy"),
        ("a", firing_at, "Firing"),
    ], written
    # b's heartbeat of the second cycle was still waiting when the third wrote Firing: it is dropped.
    assert [w for w in written if w[0] == "b"] == [("b", first, "Healthy"), ("b", firing_at, "Firing")], written


def test_heartbeats_still_waiting_at_shutdown_are_dropped_and_shown_while_they_wait() -> None:
    registry, kube, clock = Registry(), HeldWrites(), [NOW]
    for name in ("a", "b"):
        registry.upsert(monitor(name))
    settings = OperatorSettings(status_heartbeat_seconds=0, write_parallelism=1)
    evaluator = evaluator_for(registry, kube, settings, clock)
    kube.released.set()
    evaluator.cycle()
    kube.released.clear()
    kube.writing.clear()
    for entry in registry.all():
        entry.next_due = 0.0
    clock[0] += 30
    evaluator.cycle()
    assert kube.writing.wait(5)  # a's heartbeat in its write, b's waiting
    assert "modelmonitor_operator_heartbeat_writes_waiting 1.0" in evaluator.metrics.exposition().decode()
    threading.Timer(0.2, kube.released.set).start()
    evaluator.close()  # finishes the write in flight, drops b's
    assert [name for _, name, _ in kube.statuses] == ["a", "b", "a"]


def test_a_waiting_heartbeat_is_replaced_by_a_newer_one_that_keeps_its_place() -> None:
    registry = Registry()
    entries = [registry.upsert(monitor(name)) for name in ("a", "b")]
    queue = loop.HeartbeatQueue()
    queue.put(loop.Heartbeat(entries[0], b"{}", "2027-01-01T00:00:00Z"))
    queue.put(loop.Heartbeat(entries[1], b"{}", "2027-01-01T00:00:00Z"))
    queue.put(loop.Heartbeat(entries[0], b"{}", "2027-01-01T00:00:30Z"))
    first, second = queue.take(), queue.take()
    assert first is not None and second is not None and queue.take() is None
    assert (first.entry.name, first.evaluated_at) == ("a", "2027-01-01T00:00:30Z")
    assert second.entry.name == "b"


def test_by_default_an_unchanged_monitor_is_not_rewritten_every_cycle() -> None:
    registry = Registry()
    first, *_ = run_cycle(monitor("a"), registry=registry)
    registry.all()[0].next_due = 0.0
    second, *_ = run_cycle(registry=registry)
    assert (len(first.statuses), len(second.statuses)) == (1, 0)


class Share:
    """The monitors this replica owns, as `modelmonitor.sharding.Membership` would answer; ``lose_after`` answers
    stop being True after that many questions (the Lease lapses mid-cycle)."""

    def __init__(self, names: set[str], lose_after: int | None = None) -> None:
        self.names = names
        self.lose_after = lose_after
        self.asked = 0

    def owns(self, namespace: str, name: str) -> bool:
        self.asked += 1
        if self.lose_after is not None and self.asked > self.lose_after:
            return False
        return name in self.names

    def owned(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return {k for k in keys if self.owns(*k)}


def run_owned(share: Share, *bodies: dict[str, Any]) -> tuple[RecordingKube, NoActions, Registry]:
    registry = Registry()
    for body in bodies:
        registry.upsert(body)
    kube, prometheus, actions = RecordingKube(), FakePrometheus("ml"), NoActions()
    evaluator = Evaluator(
        OperatorSettings(), registry, kube, actions, OperatorMetrics(),
        prometheus_factory=lambda _settings: prometheus, clock=lambda: NOW, ownership=share,
    )  # fmt: skip
    try:
        evaluator.cycle()
        assert evaluator.wait_for_heartbeats(10), "the heartbeat writes were not made after the cycle"
    finally:
        evaluator.close()
    return kube, actions, registry


def test_a_replica_evaluates_and_writes_only_the_monitors_it_owns() -> None:
    kube, actions, registry = run_owned(Share({"a", "c"}), monitor("a"), monitor("b"), breaching("c"))
    assert sorted(name for _ns, name, _s in kube.statuses) == ["a", "c"]
    assert sorted(c.name for c in actions.contexts) == ["a", "c"]
    # The other replica's monitor stays due here, to be evaluated at once if it comes to this replica.
    assert next(e for e in registry.all() if e.name == "b").next_due == 0.0


def test_a_replica_that_loses_a_monitor_mid_cycle_neither_writes_nor_acts_on_it() -> None:
    # Owned when the cycle picks the due monitors (3 questions), lost before the writes.
    share = Share({"a", "b", "c"}, lose_after=3)
    kube, actions, _registry = run_owned(share, monitor("a"), monitor("b"), breaching("c"))
    assert kube.statuses == [] and kube.events == []
    assert actions.contexts and not any(c.owned() for c in actions.contexts), "the actions are told too"


def scaling(name: str, created: str) -> dict[str, Any]:
    """A monitor created at ``created`` that scales Deployment fraud."""
    body = monitor(name)
    body["metadata"]["creationTimestamp"] = created
    body["spec"]["actions"] = {"scaleUp": {"type": "scale", "step": 1, "maxReplicas": 5}}
    body["spec"]["policies"][0]["actions"] = ["scaleUp"]
    return body


def conflict_condition(kube: RecordingKube, name: str) -> dict[str, Any]:
    status = next(s for _ns, n, s in kube.statuses if n == name)
    return dict(next(c for c in status["conditions"] if c["type"] == "Conflict"))


def test_the_later_of_two_monitors_scaling_one_deployment_yields_until_the_older_one_is_gone() -> None:
    registry = Registry()
    older, later = scaling("zz-older", "2026-11-01T00:00:00Z"), scaling("aa-later", "2026-11-02T00:00:00Z")
    kube, _prometheus, actions, _ = run_cycle(later, older, registry=registry)
    assert {c.name: c.conflict_with for c in actions.contexts} == {"zz-older": None, "aa-later": "zz-older"}
    assert conflict_condition(kube, "aa-later")["status"] == "True"
    assert conflict_condition(kube, "zz-older")["status"] == "False"

    # Only the later one is due: the older one still holds the workload.
    next(e for e in registry.all() if e.name == "aa-later").next_due = 0.0
    _kube, _prometheus, actions, _ = run_cycle(registry=registry)
    assert [(c.name, c.conflict_with) for c in actions.contexts] == [("aa-later", "zz-older")]

    registry.remove("ml", "zz-older")
    registry.all()[0].next_due = 0.0
    kube, _prometheus, actions, _ = run_cycle(registry=registry)
    assert [(c.name, c.conflict_with) for c in actions.contexts] == [("aa-later", None)]
    assert conflict_condition(kube, "aa-later")["status"] == "False"


def test_the_series_sizes_are_kept_across_cycles_so_only_the_first_counts() -> None:
    """A budget below the fake's answers (4 and 6 series) splits the batched queries: the first
    cycle counts them, later cycles reuse what the answers taught; the statuses are those of whole queries."""
    registry = Registry()
    registry.upsert(monitor("a"))
    kube, prometheus = RecordingKube(), FakePrometheus("ml")
    clock = [NOW]
    evaluator = Evaluator(
        OperatorSettings(max_series_per_answer=3), registry, kube, NoActions(), OperatorMetrics(),
        prometheus_factory=lambda _settings: prometheus, clock=lambda: clock[0],
    )  # fmt: skip
    try:
        first = evaluator.cycle()
        counted = len(prometheus.queries)
        clock[0] += 30
        second = evaluator.cycle()
    finally:
        evaluator.close()
    assert any(q.startswith("count (") for q in prometheus.queries[:counted])
    later = prometheus.queries[counted:]
    assert later and not any(q.startswith("count") for q in later)
    assert all('model="fraud"' in q for q in later)  # every query split, to this monitor's model
    assert second.queries == len(later) < first.queries
    whole, _, _, _ = run_cycle(monitor("a"))
    values = [{p["name"]: p.get("value") for p in status["policies"]} for _, _, status in kube.statuses]
    assert values[0] == {p["name"]: p.get("value") for p in whole.statuses[0][2]["policies"]}


def evaluated_fleet() -> list[Evaluated]:
    """Three quiet monitors (q0, q1, q2: evaluated twice on healthy values) and one whose accuracy just breached."""
    at = datetime(2027, 1, 15, 8, tzinfo=UTC)
    healthy = {"accuracy": Measurement.value(0.8, 500), "fairness": Measurement.value(0.1, 500)}
    breached = {"accuracy": Measurement.value(0.5, 500), "fairness": Measurement.value(0.1, 500)}
    registry = Registry()
    evaluated = []
    for name, measured in (("q0", healthy), ("q1", healthy), ("q2", healthy), ("breach", breached)):
        entry = registry.upsert(monitor(name))  # accuracy below 0.7 breaches
        assert entry.monitor is not None
        first = reconcile(entry.monitor, healthy, {}, at)
        second = reconcile(entry.monitor, measured, first.status, at + timedelta(seconds=30))
        evaluated.append(Evaluated(entry, second.monitor, second.evaluation, second.conflict_with))
    assert [e.changed for e in evaluated] == [False, False, False, True]
    return evaluated


def taken_in_background(backlog: WriteBacklog, count: int) -> tuple[threading.Thread, list[str]]:
    order: list[str] = []
    thread = threading.Thread(target=lambda: [order.append(backlog.take().entry.name) for _ in range(count)])
    thread.start()
    return thread, order


def test_the_write_backlog_hands_out_a_changed_monitor_at_once_and_the_rest_once_the_cycle_is_evaluated() -> None:
    fleet = evaluated_fleet()
    backlog = WriteBacklog()
    taking, order = taken_in_background(backlog, len(fleet))
    for evaluated in fleet:
        backlog.put(evaluated)
    deadline = time.monotonic() + 5
    while not order and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert order == ["breach"]  # the quiet ones wait: writing them would slow the evaluation still running
    backlog.close()
    taking.join(5)
    assert order == ["breach", "q0", "q1", "q2"]


def test_the_write_backlog_holds_at_most_its_limit_and_then_hands_out_unchanged_monitors_too() -> None:
    fleet = evaluated_fleet()
    backlog = WriteBacklog(limit=2)
    putting = threading.Thread(target=lambda: [backlog.put(e) for e in fleet])
    putting.start()
    putting.join(0.5)
    assert putting.is_alive() and len(backlog) == 2  # q2 waits for room
    taking, order = taken_in_background(backlog, len(fleet))
    putting.join(5)
    assert not putting.is_alive()
    backlog.close()
    taking.join(5)
    assert sorted(order) == ["breach", "q0", "q1", "q2"] and order[0] == "q0", order


def test_a_kept_status_comes_back_the_same_from_a_fifth_of_its_json() -> None:
    """The registry keeps every monitor's last status between writes (thousands of them): compressed, and decoded
    to the same status, non-ASCII messages included."""
    entry = Registry().upsert(monitor("fraud"))
    assert entry.monitor is not None
    measured = {"accuracy": Measurement.value(0.8, 500), "fairness": Measurement.value(0.1, 500)}
    status = dict(reconcile(entry.monitor, measured, {}, datetime(2027, 1, 15, 8, tzinfo=UTC)).status)
    status["message"] = "Genauigkeit über 0,85 ✓"
    as_json = json.dumps(status, separators=(",", ":"), ensure_ascii=False).encode()
    kept = encode_status(status)
    assert decode_status(kept) == json.loads(as_json)
    assert len(kept) < len(as_json) / 3, (len(kept), len(as_json))
