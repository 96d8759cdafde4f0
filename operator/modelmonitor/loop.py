"""The evaluation loop: observe (batched Prometheus queries) → assess and decide (pure engine) → act → status.

It knows nothing of Kopf: the shell (`handlers.py`) feeds the `Registry` from its watch and calls
`Evaluator.cycle` on every tick from a worker thread. Each cycle evaluates every monitor whose interval has
elapsed; intervals are aligned to the wall clock, so monitors sharing an interval are evaluated in the same
cycle and their built-in signals share one query per signal kind.

State lives in each monitor's status, never only here: a restarted operator reads it back and resumes the same
timers (`for`, `keepFiringFor`), histories and idempotency keys.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelmonitor.actions import Actions, ActionsOutcome, MonitorContext
from modelmonitor.adapters.connections import Connections, PrometheusConnectionError, PrometheusFactory
from modelmonitor.adapters.kubernetes import Kubernetes, KubernetesError, ObjectRef
from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusQuerier
from modelmonitor.deflate import Deflate
from modelmonitor.operator_metrics import OperatorMetrics
from modelmonitor.policy import (
    ActionRecord,
    Evaluation,
    Measurement,
    PolicyState,
    evaluate,
    readable_prior_states,
    render_invalid_status,
)
from modelmonitor.policy.conflicts import claim_of, workload_conflicts
from modelmonitor.reconcile import Monitor, Reconciled, StatusWrite, monitor_from_body, status_write
from modelmonitor.settings import OperatorSettings
from modelmonitor.sharding import Ownership, Standalone, fraction
from modelmonitor.signals import SeriesBook, SignalRequest, measure

log = logging.getLogger("modelmonitor.loop")


class NotOwned(RuntimeError):
    """A write refused because the monitor is no longer this replica's (see `modelmonitor.sharding`)."""


#: An example status (conditions, one policy) as the preset dictionary of the kept statuses (`Deflate`).
_STATUS_EXAMPLE = json.dumps(
    {
        "actions": [],
        "conditions": [
            {
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "message": message,
                "reason": reason,
                "status": status,
                "type": kind,
            }
            for kind, status, reason, message in (
                ("Ready", "True", "Evaluated", "all 3 policies OK"),
                ("Evaluating", "True", "Measured", "3 policies measured this cycle"),
                ("Degraded", "False", "BelowErrorLimit", "no policy failed 3 times in a row"),
                ("ActionInProgress", "False", "Idle", "no action in progress"),
                ("Conflict", "False", "NoConflict", "no older ModelMonitor changes the same workload"),
            )
        ],
        "firingPolicies": "",
        "lastAction": "",
        "lastEvaluationTime": "2026-01-01T00:00:00Z",
        "message": "all 3 policies OK",
        "observedGeneration": 1,
        "phase": "Healthy",
        "policies": [
            {
                "errorStreak": 0,
                "lastOutcome": "OK",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "message": "value 0.98 is not < 0.9 (window 5m, 1000 samples); query: sum by (namespace, model) "
                "(increase(modelmonitor_requests_total[5m]))",
                "name": "policy",
                "samples": 1000,
                "since": "2026-01-01T00:00:00Z",
                "state": "Inactive",
                "threshold": 0.9,
                "value": 0.98,
            }
        ],
    },
    separators=(",", ":"),
).encode()
_STATUSES = Deflate(_STATUS_EXAMPLE)


def encode_status(status: Mapping[str, Any]) -> bytes:
    """A status as the registry keeps it: compact JSON, compressed (`decode_status` reverses it).

    Every monitor's status lives from one write to the next while each cycle allocates and frees millions of
    small objects around it. Kept as dicts, the statuses of 10,000 monitors are spread over the allocator's
    arenas and keep most of them from being returned after a cycle; kept as one buffer each, they hold nothing
    but themselves: about 2 kB of JSON, 0.45 kB compressed. A cycle decodes a status when it evaluates the
    monitor and again when it writes it (about 46 us each, 27-35 us before they were compressed)."""
    return _STATUSES.compress(json.dumps(status, separators=(",", ":"), ensure_ascii=False).encode())


def decode_status(encoded: bytes) -> dict[str, Any]:
    """A status kept by `encode_status`, as a fresh dict."""
    decoded: dict[str, Any] = json.loads(_STATUSES.decompress(encoded))
    return decoded


@dataclass
class MonitorEntry:
    """One watched ModelMonitor: its typed value (None while the spec is invalid) plus what the loop last wrote."""

    namespace: str
    name: str
    uid: str
    generation: int
    #: The last status written or watched, `encode_status`d; `status` decodes it.
    encoded_status: bytes
    monitor: Monitor | None
    invalid_reason: str | None
    interval_seconds: float
    annotations: Mapping[str, str] = field(default_factory=dict)
    next_due: float = 0.0
    #: ``lastEvaluationTime`` of that status ("" when none): which of a watched and a written status is newer.
    evaluated_at: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def status(self) -> dict[str, Any]:
        """A fresh copy of the last status: decode it once per use."""
        return decode_status(self.encoded_status)

    def keep_status(self, encoded: bytes, evaluated_at: str) -> None:
        """Keep a status, given `encode_status`d (encoded before taking the registry's lock) with its
        ``lastEvaluationTime``."""
        self.encoded_status = encoded
        self.evaluated_at = evaluated_at


class Registry:
    """The monitors the watch has shown, thread-safe (the watch writes, the loop reads)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], MonitorEntry] = {}
        self._lock = threading.Lock()

    def upsert(self, body: Mapping[str, Any]) -> MonitorEntry:
        """Add or refresh a monitor from a watched object. Validation happens here, once per change."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        generation = int(meta.get("generation") or 0)
        uid = str(meta.get("uid", ""))
        annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        watched_status: Mapping[str, Any] = body.get("status") or {}
        watched_at = str(watched_status.get("lastEvaluationTime", ""))
        with self._lock:
            known = self._entries.get((namespace, name))
            if (
                known is not None
                and known.uid == uid
                and known.generation == generation
                and known.annotations == annotations
                and known.monitor is not None
            ):
                # The echo of a status write (ours, usually): the spec is unchanged, only the status may be newer.
                if watched_at > known.evaluated_at:
                    known.keep_status(encode_status(watched_status), watched_at)
                return known
        monitor: Monitor | None = None
        reason: str | None = None
        try:
            monitor = monitor_from_body(body)
            interval = monitor.interval_seconds
        except ValueError as exc:  # a SpecError naming the field, or an invariant of the engine's view
            reason = f"invalid spec: {exc}"
            interval = 30.0
        watched_encoded = encode_status(watched_status)
        with self._lock:
            previous = self._entries.get((namespace, name))
            encoded_status, evaluated_at = watched_encoded, watched_at
            # Our own last write may be newer than what the watch has delivered so far.
            if previous is not None and previous.uid == uid and previous.evaluated_at > watched_at:
                encoded_status, evaluated_at = previous.encoded_status, previous.evaluated_at
            entry = MonitorEntry(
                namespace=namespace,
                name=name,
                uid=uid,
                generation=generation,
                encoded_status=encoded_status,
                evaluated_at=evaluated_at,
                monitor=monitor,
                invalid_reason=reason,
                interval_seconds=interval,
                annotations=annotations,
                # A new or changed monitor is evaluated at the next tick; an unchanged one keeps its schedule.
                next_due=previous.next_due if previous is not None and previous.generation == generation else 0.0,
            )
            self._entries[entry.key] = entry
            return entry

    def remove(self, namespace: str, name: str) -> None:
        with self._lock:
            self._entries.pop((namespace, name), None)

    def due(self, now: float) -> list[MonitorEntry]:
        with self._lock:
            return [e for e in self._entries.values() if e.next_due <= now]

    def all(self) -> list[MonitorEntry]:
        with self._lock:
            return list(self._entries.values())

    def record_written(self, entry: MonitorEntry, status: Mapping[str, Any], next_due: float) -> None:
        encoded = encode_status(status)
        with self._lock:
            current = self._entries.get(entry.key)
            if current is not None and current.uid == entry.uid:
                current.keep_status(encoded, str(status.get("lastEvaluationTime", "")))
                if current.generation == entry.generation:
                    current.next_due = next_due

    def record_due(self, entry: MonitorEntry, next_due: float) -> None:
        """Schedule the next evaluation of a monitor whose status stays as it is (nothing to write, or a write
        that failed)."""
        with self._lock:
            current = self._entries.get(entry.key)
            if current is not None and current.uid == entry.uid and current.generation == entry.generation:
                current.next_due = next_due

    def superseded(self, entry: MonitorEntry, evaluated_at: str) -> bool:
        """Whether a status of ``entry`` evaluated at ``evaluated_at`` is no longer to be written: the monitor is
        gone or its spec changed, or a status at least as new was written or watched since."""
        with self._lock:
            current = self._entries.get(entry.key)
            return (
                current is None
                or current.uid != entry.uid
                or current.generation != entry.generation
                or current.evaluated_at >= evaluated_at
            )

    def record_heartbeat(self, entry: MonitorEntry, encoded: bytes, evaluated_at: str) -> None:
        """Remember a heartbeat written after its cycle (`encode_status`d), unless something newer is known; the
        schedule is left as its cycle set it."""
        with self._lock:
            current = self._entries.get(entry.key)
            if current is not None and current.uid == entry.uid and current.evaluated_at < evaluated_at:
                current.keep_status(encoded, evaluated_at)

    def record_status(self, entry: MonitorEntry, status: Mapping[str, Any]) -> None:
        """Remember a status written mid-cycle (a Pending action recorded before acting); schedule unchanged."""
        encoded = encode_status(status)
        with self._lock:
            current = self._entries.get(entry.key)
            if current is not None and current.uid == entry.uid:
                current.keep_status(encoded, str(status.get("lastEvaluationTime", "")))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def next_aligned(now: float, interval: float) -> float:
    """The next multiple of `interval` after `now` (wall clock), so equal intervals line up across monitors."""
    return (math.floor(now / interval) + 1) * interval


#: Evaluated monitors waiting for a writer at most (each holds its evaluation, about 3 kB): when more wait (the
#: first cycle after a start writes every status), evaluation waits for the writers instead of holding the fleet.
WRITE_BACKLOG_MAX = 10_000


@dataclass(frozen=True)
class Evaluated:
    """One monitor evaluated in a cycle, waiting for a writer. Its prior status is decoded again when it is
    written (the status the registry holds then, which includes anything written since)."""

    entry: MonitorEntry
    monitor: Monitor
    evaluation: Evaluation
    conflict_with: str | None

    @property
    def changed(self) -> bool:
        """A policy changed state or something was decided: written ahead of the others."""
        return self.evaluation.changed

    def reconciled(self) -> Reconciled:
        return Reconciled(self.monitor, self.evaluation, self.entry.status, self.conflict_with)


class WriteBacklog:
    """The evaluated monitors of a cycle waiting for a writer. Changed ones (a policy changed state, or something
    was decided) are handed out at once, ahead of the rest; the rest once the whole cycle is evaluated (`close`),
    so that writing them does not slow the evaluation a breach may still be waiting for, or earlier when `limit`
    are waiting (`put` then waits for room). `take` returns None once the backlog is closed and empty.

    A waiting writer is woken only when there is something it may take: woken on every `put`, the writers would
    take the interpreter from the evaluation thousands of times a cycle to find nothing ready. Thread-safe."""

    def __init__(self, limit: int = WRITE_BACKLOG_MAX) -> None:
        self._heap: list[tuple[bool, int, Evaluated]] = []
        self._order = itertools.count()
        self._limit = limit
        self._closed = False
        lock = threading.Lock()
        self._takeable = threading.Condition(lock)
        self._room = threading.Condition(lock)

    def put(self, evaluated: Evaluated) -> None:
        with self._room:
            self._room.wait_for(lambda: len(self._heap) < self._limit)
            heapq.heappush(self._heap, (not evaluated.changed, next(self._order), evaluated))
            if self._ready():
                self._takeable.notify()

    def close(self) -> None:
        """Every monitor of the cycle is in: unchanged ones may be taken now."""
        with self._takeable:
            self._closed = True
            self._takeable.notify_all()

    def take(self) -> Evaluated | None:
        with self._takeable:
            self._takeable.wait_for(lambda: self._ready() or (self._closed and not self._heap))
            if not self._heap:
                return None
            _, _, evaluated = heapq.heappop(self._heap)
            self._room.notify()
            if self._ready():
                self._takeable.notify()
        return evaluated

    def _ready(self) -> bool:
        if not self._heap:
            return False
        unchanged = self._heap[0][0]
        return not unchanged or self._closed or len(self._heap) >= self._limit

    def __len__(self) -> int:
        with self._takeable:
            return len(self._heap)


@dataclass(frozen=True)
class Heartbeat:
    """A status that refreshes only a monitor's measured values and ``lastEvaluationTime``, to be written after
    its cycle: `encode_status`d, with that ``lastEvaluationTime``."""

    entry: MonitorEntry
    encoded_status: bytes
    evaluated_at: str


class HeartbeatQueue:
    """Heartbeat writes waiting for the writers between cycles, oldest first, at most one per monitor: a newer
    one replaces the one waiting and keeps its place, so every monitor's turn comes however long the queue gets
    when the API server is slow. Thread-safe."""

    def __init__(self) -> None:
        self._waiting: OrderedDict[tuple[str, str], Heartbeat] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, heartbeat: Heartbeat) -> None:
        with self._lock:
            self._waiting[heartbeat.entry.key] = heartbeat

    def take(self) -> Heartbeat | None:
        with self._lock:
            return self._waiting.popitem(last=False)[1] if self._waiting else None

    def clear(self) -> int:
        """Drop every waiting heartbeat; returns how many were dropped."""
        with self._lock:
            dropped = len(self._waiting)
            self._waiting.clear()
            return dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)


@dataclass
class CycleReport:
    """What one cycle did (for logs, metrics and tests)."""

    evaluated: int = 0
    invalid: int = 0
    #: Monitors this replica owns (all of them with one replica).
    owned: int = 0
    queries: int = 0
    failed_queries: int = 0
    #: Series in the largest Prometheus answer of the cycle.
    largest_answer: int = 0
    write_errors: int = 0
    seconds: float = 0.0
    #: Seconds from the cycle's start to the end of its queries, and to the last monitor evaluated (handed to the
    #: writers): a monitor whose policy changed state is written within one write of its evaluation.
    queried_seconds: float = 0.0
    evaluated_seconds: float = 0.0
    #: Heartbeat writes this cycle left to be made after it, and those of earlier cycles still waiting when it
    #: began (the writers did not keep up between cycles).
    heartbeats: int = 0
    heartbeats_behind: int = 0


class Evaluator:
    """Runs cycles. Blocking; call `cycle` from a worker thread, one at a time."""

    def __init__(
        self,
        settings: OperatorSettings,
        registry: Registry,
        kube: Kubernetes,
        actions: Actions,
        metrics: OperatorMetrics,
        prometheus_factory: PrometheusFactory = PrometheusClient,
        clock: Callable[[], float] = time.time,
        ownership: Ownership | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.kube = kube
        self.actions = actions
        self.metrics = metrics
        self.clock = clock
        #: Which monitors this replica evaluates and acts on; asked again right before every write.
        self.ownership = ownership or Standalone()
        self.connections = Connections(
            kube,
            default_url=settings.prometheus_url,
            secret_ttl_seconds=settings.secret_ttl_seconds,
            factory=prometheus_factory,
        )
        self._measurer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="measure")
        self._writer = ThreadPoolExecutor(max_workers=settings.write_parallelism, thread_name_prefix="status")
        #: Heartbeat writes wait here for the end of their cycle; the writers make them until the next one starts.
        self._heartbeats = HeartbeatQueue()
        self._heartbeat_writers: list[Future[None]] = []
        self._stop_heartbeats = threading.Event()
        metrics.heartbeats_waiting.set_function(lambda: len(self._heartbeats))
        #: Series per model of each batched query, per Prometheus client (by identity; the client is kept so its
        #: id cannot be reused while its book is): what sizes the parts of a split query.
        self._books: dict[Hashable, tuple[PrometheusQuerier, SeriesBook]] = {}

    def close(self) -> None:
        """Stop: the heartbeat writes still waiting are dropped (the next cycle of whichever replica owns each
        monitor then finds its heartbeat due again)."""
        self._halt_heartbeats()
        dropped = self._heartbeats.clear()
        if dropped:
            log.info("%d heartbeat status writes dropped at shutdown", dropped)
        self._writer.shutdown(wait=True)
        self._measurer.shutdown(wait=True)
        self.connections.close()

    # --- one cycle -------------------------------------------------------------------------------------------

    def cycle(self) -> CycleReport:
        started = time.monotonic()
        now_epoch = self.clock()
        now = datetime.fromtimestamp(now_epoch, UTC)
        report = CycleReport()
        known = self.registry.all()
        owned = self.ownership.owned(e.key for e in known)
        report.owned = len(owned)
        # A monitor another replica owns stays due here, so it is evaluated at once if it comes to this one.
        due = [e for e in self.registry.due(now_epoch) if e.key in owned]
        if not due:
            self.metrics.cycle_done(report, len(known))
            return report
        # The heartbeat writers stop (after the write each has in flight) for the whole cycle: a heartbeat must
        # not land after, and over, a newer status this cycle writes for the same monitor.
        self._halt_heartbeats()
        report.heartbeats_behind = len(self._heartbeats)
        try:
            self._evaluate(due, now_epoch, now, started, report)
        finally:
            self._start_heartbeats()
        report.heartbeats = len(self._heartbeats) - report.heartbeats_behind
        report.seconds = time.monotonic() - started
        self.metrics.cycle_done(report, len(known))
        return report

    def _evaluate(
        self, due: list[MonitorEntry], now_epoch: float, now: datetime, started: float, report: CycleReport
    ) -> None:
        """Measure, evaluate, act on and write the ``due`` monitors (a cycle's work, filled into ``report``)."""

        valid: list[tuple[MonitorEntry, Monitor]] = []
        for entry in due:
            if entry.monitor is None:
                self._write_invalid(entry, entry.invalid_reason or "invalid spec", now, now_epoch)
                report.invalid += 1
            else:
                valid.append((entry, entry.monitor))

        # Group the policies to measure by Prometheus connection; each group is measured in one batch.
        groups: dict[Hashable, tuple[PrometheusQuerier, list[SignalRequest]]] = {}
        connection_errors: dict[tuple[str, str], str] = {}
        for entry, monitor in valid:
            if monitor.spec.paused:
                continue
            try:
                client = self.connections.querier(monitor.namespace, monitor.name, monitor.spec.prometheus)
            except PrometheusConnectionError as exc:
                connection_errors[entry.key] = f"cannot reach Prometheus: {exc}"
                continue
            groups.setdefault(id(client), (client, []))[1].extend(monitor.requests)
        # Clients and cached Secrets of deleted monitors are closed and dropped, and so are their books.
        self.connections.retain(entry.key for entry in self.registry.all())
        self._books = {key: held for key, held in self._books.items() if self.connections.holds(held[0])}

        batches: list[tuple[PrometheusQuerier, list[SignalRequest], SeriesBook]] = []
        for key, (client, requests) in groups.items():
            if key not in self._books:
                self._books[key] = (client, SeriesBook(budget=self.settings.max_series_per_answer))
            batches.append((client, requests, self._books[key][1]))
        # The queries go out first. While Prometheus answers them, this thread reads every monitor's prior policy
        # states (decoding a status costs a third of evaluating it), so what the answers wait for is the
        # evaluation alone.
        measuring = self._measurer.submit(self._measure, batches, now, started, report)
        # Which monitors yield to an older one changing the same workload: from every known monitor, not only
        # the due ones, so a monitor on a longer interval still holds its workload.
        conflicts = workload_conflicts(
            claim_of(e.namespace, e.name, e.monitor.created, e.monitor.spec)
            for e in self.registry.all()
            if e.monitor is not None
        )
        priors = {entry.key: self._prior_states(entry, monitor.spec.paused) for entry, monitor in valid}
        results = measuring.result()
        outcomes: Counter[str] = Counter()
        # A monitor whose policies changed state or decided something goes to the writers as soon as it is
        # evaluated: a breach is written while the fleet is still being evaluated, not after it. The others
        # follow once every monitor is evaluated.
        backlog = WriteBacklog()
        writers = [self._writer.submit(self._drain, backlog, now_epoch) for _ in range(self.settings.write_parallelism)]
        try:
            for entry, monitor in valid:
                # The same evaluation `reconcile` makes, on the prior states read while the queries were out.
                evaluation = evaluate(
                    monitor.engine,
                    priors.pop(entry.key),
                    self._measurements(monitor, results, connection_errors, outcomes),
                    now,
                )
                backlog.put(Evaluated(entry, monitor, evaluation, conflicts.get(entry.key)))
        finally:
            backlog.close()  # the writers must not wait forever if evaluation failed
        report.evaluated_seconds = time.monotonic() - started
        for kind, count in outcomes.items():
            self.metrics.measured(kind, count)
        for writer in writers:
            finished, failed = writer.result()
            report.evaluated += finished
            report.write_errors += failed

    def _measure(
        self,
        batches: Sequence[tuple[PrometheusQuerier, list[SignalRequest], SeriesBook]],
        now: datetime,
        started: float,
        report: CycleReport,
    ) -> dict[SignalRequest, Measurement]:
        """Measure each batch against its Prometheus: the measurements, by request. The queries, and when they
        were done, go into ``report``."""
        results: dict[SignalRequest, Measurement] = {}
        for client, requests, book in batches:
            measured = measure(requests, client, at=now, max_parallel=self.settings.query_parallelism, book=book)
            report.queries += measured.queries
            report.failed_queries += measured.failed_queries
            report.largest_answer = max(report.largest_answer, measured.largest_answer)
            results.update(measured.results)
        report.queried_seconds = time.monotonic() - started
        return results

    def _prior_states(self, entry: MonitorEntry, paused: bool) -> dict[str, PolicyState]:
        """The policy states ``entry``'s status records (with their messages only while ``paused``: a paused
        monitor keeps its states as they are). An entry that cannot be read is named in a log line and a Warning
        Event, and its policy starts Inactive; this cycle then writes its entry anew."""
        states, unreadable = readable_prior_states(entry.status, messages=paused)
        for problem in unreadable:
            log.warning("%s/%s: status not readable, the policy starts Inactive: %s", entry.namespace, entry.name,
                        problem)  # fmt: skip
            self._event(entry, "Warning", "StatusUnreadable", f"{problem}; the policy starts Inactive")
        return states

    def _measurements(
        self,
        monitor: Monitor,
        results: dict[SignalRequest, Measurement],
        connection_errors: Mapping[tuple[str, str], str],
        outcomes: Counter[str],
    ) -> dict[str, Measurement]:
        """This cycle's measurement of each policy of ``monitor`` (none while it is paused), taken out of
        ``results`` (so each is freed once its monitor is evaluated); ``outcomes`` counts them by kind."""
        if monitor.spec.paused:
            return {}
        error = connection_errors.get(monitor.key)
        if error is not None:
            return {request.policy: Measurement.error(error) for request in monitor.requests}
        measurements: dict[str, Measurement] = {}
        for request in monitor.requests:
            result = results.pop(request, None)
            if result is None:
                measurements[request.policy] = Measurement.error("not measured in this cycle")
                continue
            measurements[request.policy] = result
            outcomes[result.kind.value] += 1
        return measurements

    def _drain(self, backlog: WriteBacklog, now_epoch: float) -> tuple[int, int]:
        """One writer: finish monitors from ``backlog`` until it is closed and empty. Returns how many it finished
        and how many of those failed (their status not written)."""
        finished = failed = 0
        while (evaluated := backlog.take()) is not None:
            finished += 1
            try:
                ok = self._finish(evaluated.entry, evaluated.reconciled(), now_epoch)
            except Exception:  # one monitor's bug must not leave the rest of the backlog unwritten
                log.exception("finishing %s/%s failed", evaluated.entry.namespace, evaluated.entry.name)
                self.registry.record_due(evaluated.entry, 0.0)
                ok = False
            failed += not ok
        return finished, failed

    def _finish(self, entry: MonitorEntry, reconciled: Reconciled, now_epoch: float) -> bool:
        """Act, write status and post Events for one monitor. Returns False when the status write failed."""
        outcome, prior = self._act(entry, reconciled)
        status = reconciled.with_actions(prior, outcome.records, outcome.last_known_good, outcome.registry)
        next_due = next_aligned(now_epoch, entry.interval_seconds)
        events = [*reconciled.events(outcome.records), *outcome.events]
        heartbeat = self.settings.status_heartbeat_seconds
        phase = fraction(entry.namespace, entry.name)
        write = StatusWrite.CHANGE
        if not events:
            write = status_write(prior, status, reconciled.evaluation.now, heartbeat, phase)
        if write is not StatusWrite.CHANGE:
            self.registry.record_due(entry, next_due)
            if write is StatusWrite.NONE:
                self.metrics.skipped_write()
            else:
                encoded = encode_status(status)
                self._heartbeats.put(Heartbeat(entry, encoded, str(status.get("lastEvaluationTime", ""))))
            return True
        if not self._still_owned(entry):
            return True
        written = self._write(entry, status, next_due)
        for event in events:
            self._event(entry, event.type, event.reason, event.message)
        return written

    def _act(self, entry: MonitorEntry, reconciled: Reconciled) -> tuple[ActionsOutcome, Mapping[str, Any]]:
        """Hand the cycle to the actions layer. Returns what it did and the prior status to render on (which
        includes the Pending records it wrote before acting)."""
        monitor = reconciled.monitor
        prior: Mapping[str, Any] = dict(reconciled.prior_status)

        def checkpoint(records: Sequence[ActionRecord]) -> None:
            # Written before acting: an operator that stops mid-action finds the Pending record on restart.
            nonlocal prior
            if not self._still_owned(entry):
                raise NotOwned(f"{entry.namespace}/{entry.name} is no longer this replica's")
            status = reconciled.with_pending(prior, records)
            self.kube.patch_monitor_status(monitor.namespace, monitor.name, status)
            prior = status
            self.registry.record_status(entry, prior)

        context = MonitorContext(
            monitor.namespace, monitor.name, monitor.uid, monitor.spec, status=reconciled.prior_status,
            annotations=monitor.annotations, conflict_with=reconciled.conflict_with,
            owned=lambda: self._still_owned(entry),
        )  # fmt: skip
        evaluation = reconciled.evaluation
        try:
            outcome = self.actions.run(context, evaluation, evaluation.now, checkpoint)
        except Exception as exc:  # an action bug must not stop the status from being written
            log.exception("actions failed for %s/%s", monitor.namespace, monitor.name)
            self._event(entry, "Warning", "ActionError", f"actions failed: {exc}")
            outcome = ActionsOutcome()
        for record in outcome.records:
            self.metrics.decided(record.type, record.result.value)
        return outcome, prior

    # --- writes ----------------------------------------------------------------------------------------------

    def _still_owned(self, entry: MonitorEntry) -> bool:
        """Asked right before every write for ``entry``: False once another replica may have taken it over (this
        one lost its Lease, or a replica joined that ranks first for it), and the write is not made."""
        if self.ownership.owns(entry.namespace, entry.name):
            return True
        log.info("%s/%s: not written, no longer this replica's", entry.namespace, entry.name)
        self.metrics.fenced()
        return False

    def _write(self, entry: MonitorEntry, status: Mapping[str, Any], next_due: float) -> bool:
        try:
            self.kube.patch_monitor_status(entry.namespace, entry.name, status)
        except KubernetesError as exc:
            if exc.status == 404:
                self.registry.remove(entry.namespace, entry.name)  # deleted meanwhile
                return True
            log.warning("status of %s/%s not written: %s", entry.namespace, entry.name, exc)
            self.metrics.error("kubernetes")
            # Retry at the next tick rather than after a whole interval: the status is the loop's memory.
            self.registry.record_due(entry, 0.0)
            return False
        self.registry.record_written(entry, status, next_due)
        return True

    # --- heartbeats, between cycles ---------------------------------------------------------------------------

    def _start_heartbeats(self) -> None:
        """Let the writers make the waiting heartbeat writes until the next cycle starts."""
        self._stop_heartbeats.clear()
        if len(self._heartbeats):
            self._heartbeat_writers = [
                self._writer.submit(self._write_heartbeats) for _ in range(self.settings.write_parallelism)
            ]

    def _halt_heartbeats(self) -> None:
        """Stop the heartbeat writers and wait for the writes they have in flight."""
        self._stop_heartbeats.set()
        for writer in self._heartbeat_writers:
            writer.result()
        self._heartbeat_writers = []

    def wait_for_heartbeats(self, timeout: float) -> bool:
        """Wait until no heartbeat write is waiting or in flight (at most ``timeout`` s); False if some still are."""
        deadline = time.monotonic() + timeout
        for writer in list(self._heartbeat_writers):
            try:
                writer.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return False
        return not len(self._heartbeats)

    def _write_heartbeats(self) -> None:
        while not self._stop_heartbeats.is_set():
            heartbeat = self._heartbeats.take()
            if heartbeat is None:
                return
            try:
                self._write_heartbeat(heartbeat)
            except Exception:  # one monitor's bug must not stop the others' heartbeats
                entry = heartbeat.entry
                log.exception("heartbeat of %s/%s failed", entry.namespace, entry.name)

    def _write_heartbeat(self, heartbeat: Heartbeat) -> None:
        """Write one heartbeat unless something newer was written since, or the monitor is no longer this
        replica's. A failed one is not retried: the next cycle finds the heartbeat still due."""
        entry = heartbeat.entry
        if self.registry.superseded(entry, heartbeat.evaluated_at) or not self._still_owned(entry):
            return
        try:
            self.kube.patch_monitor_status(entry.namespace, entry.name, decode_status(heartbeat.encoded_status))
        except KubernetesError as exc:
            if exc.status == 404:
                self.registry.remove(entry.namespace, entry.name)
                return
            log.warning("heartbeat status of %s/%s not written: %s", entry.namespace, entry.name, exc)
            self.metrics.error("kubernetes")
            return
        self.registry.record_heartbeat(entry, heartbeat.encoded_status, heartbeat.evaluated_at)

    def _write_invalid(self, entry: MonitorEntry, reason: str, now: datetime, now_epoch: float) -> None:
        prior = entry.status
        unchanged = (
            prior.get("phase") == "Invalid"
            and prior.get("message") == reason
            and prior.get("observedGeneration") == entry.generation
        )
        next_due = next_aligned(now_epoch, entry.interval_seconds)
        if unchanged:
            self.registry.record_due(entry, next_due)
            return
        status = render_invalid_status(reason, now=now, prior_status=prior, observed_generation=entry.generation)
        if self._still_owned(entry) and self._write(entry, status, next_due):
            self._event(entry, "Warning", "InvalidSpec", reason)

    def _event(self, entry: MonitorEntry, event_type: str, reason: str, message: str) -> None:
        try:
            self.kube.emit_event(ObjectRef(entry.namespace, entry.name, entry.uid), event_type, reason, message)
        except KubernetesError as exc:
            log.warning("event on %s/%s not posted: %s", entry.namespace, entry.name, exc)
            self.metrics.error("kubernetes")
