"""The evaluation loop: observe (batched Prometheus queries) → assess and decide (pure engine) → act → status.

It knows nothing of Kopf: the shell (`handlers.py`) feeds the `Registry` from its watch and calls
`Evaluator.cycle` on every tick from a worker thread. Each cycle evaluates every monitor whose interval has
elapsed; intervals are aligned to the wall clock, so monitors sharing an interval are evaluated in the same
cycle and their built-in signals share one query per signal kind.

State lives in each monitor's status, never only here: a restarted operator reads it back and resumes the same
timers (`for`, `keepFiringFor`), histories and idempotency keys.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelmonitor.actions import Actions, ActionsOutcome, MonitorContext
from modelmonitor.adapters.kubernetes import Kubernetes, KubernetesError, ObjectRef
from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusQuerier, PrometheusSettings
from modelmonitor.api import ModelMonitorSpec, SpecError, duration_seconds, parse_monitor
from modelmonitor.operator_metrics import OperatorMetrics
from modelmonitor.policy import (
    Evaluation,
    Measurement,
    MonitorSpec,
    evaluate,
    monitor_from_spec,
    render_invalid_status,
    render_status,
)
from modelmonitor.settings import OperatorSettings
from modelmonitor.signals import CycleMeasurements, SignalRequest, measure

log = logging.getLogger("modelmonitor.loop")


@dataclass
class MonitorEntry:
    """One ModelMonitor as the loop knows it: the watched object plus what the loop last wrote."""

    namespace: str
    name: str
    uid: str
    generation: int
    raw_spec: Mapping[str, Any]
    status: Mapping[str, Any]
    spec: ModelMonitorSpec | None
    invalid_reason: str | None
    interval_seconds: float
    annotations: Mapping[str, str] = field(default_factory=dict)
    next_due: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


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
        watched_status = dict(body.get("status") or {})
        with self._lock:
            known = self._entries.get((namespace, name))
            if (
                known is not None
                and known.uid == uid
                and known.generation == generation
                and known.annotations == annotations
                and known.spec is not None
            ):
                # The echo of a status write (ours, usually): the spec is unchanged, only the status may be newer.
                if str(watched_status.get("lastEvaluationTime", "")) > str(known.status.get("lastEvaluationTime", "")):
                    known.status = watched_status
                return known
        spec: ModelMonitorSpec | None = None
        reason: str | None = None
        try:
            spec = parse_monitor(body)
            interval = duration_seconds(spec.interval)
        except SpecError as exc:
            reason = f"invalid spec: {exc}"
            interval = 30.0
        with self._lock:
            previous = self._entries.get((namespace, name))
            status = watched_status
            # Our own last write may be newer than what the watch has delivered so far.
            ours_newer = previous is not None and str(previous.status.get("lastEvaluationTime", "")) > str(
                watched_status.get("lastEvaluationTime", "")
            )
            if previous is not None and previous.uid == uid and ours_newer:
                status = dict(previous.status)
            entry = MonitorEntry(
                namespace=namespace,
                name=name,
                uid=uid,
                generation=generation,
                raw_spec=dict(body.get("spec") or {}),
                status=status,
                spec=spec,
                invalid_reason=reason,
                interval_seconds=interval,
                # Annotations carry approvals of pending actions (modelmonitor.dev/approve).
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
        with self._lock:
            current = self._entries.get(entry.key)
            if current is not None and current.uid == entry.uid:
                current.status = dict(status)
                if current.generation == entry.generation:
                    current.next_due = next_due

    def record_status(self, entry: MonitorEntry, status: Mapping[str, Any]) -> None:
        """Remember a status written mid-cycle (a Pending action recorded before acting); schedule unchanged."""
        with self._lock:
            current = self._entries.get(entry.key)
            if current is not None and current.uid == entry.uid:
                current.status = dict(status)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def next_aligned(now: float, interval: float) -> float:
    """The next multiple of `interval` after `now` (wall clock), so equal intervals line up across monitors."""
    return (math.floor(now / interval) + 1) * interval


_VOLATILE_POLICY_FIELDS = frozenset({"value", "samples", "message", "threshold"})


def _material(status: Mapping[str, Any]) -> Any:
    """A status without what changes every cycle while nothing happens (evaluation time, measured values)."""
    policies = [{k: v for k, v in p.items() if k not in _VOLATILE_POLICY_FIELDS} for p in status.get("policies") or []]
    rest = {k: v for k, v in status.items() if k not in ("lastEvaluationTime", "policies", "message")}
    return rest, policies


@dataclass
class CycleReport:
    """What one cycle did (for logs, metrics and tests)."""

    evaluated: int = 0
    invalid: int = 0
    queries: int = 0
    failed_queries: int = 0
    write_errors: int = 0
    seconds: float = 0.0
    measurements: list[CycleMeasurements] = field(default_factory=list)


PrometheusFactory = Callable[[PrometheusSettings], PrometheusQuerier]


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
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.kube = kube
        self.actions = actions
        self.metrics = metrics
        self.prometheus_factory = prometheus_factory
        self.clock = clock
        self._clients: dict[Hashable, PrometheusQuerier] = {}
        self._writer = ThreadPoolExecutor(max_workers=settings.write_parallelism, thread_name_prefix="status")

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    # --- Prometheus connections ------------------------------------------------------------------------------

    def _prometheus_settings(self, entry: MonitorEntry) -> PrometheusSettings:
        """The connection of one monitor, credentials read from Secrets in its namespace."""
        assert entry.spec is not None
        conn = entry.spec.prometheus
        url = conn.url or self.settings.prometheus_url
        if not url:
            raise ValueError(
                "spec.prometheus.url is not set and the operator has no default (MODELMONITOR_PROMETHEUS_URL)"
            )

        def secret(name: str, key: str) -> str:
            return self.kube.read_secret_key(entry.namespace, name, key)

        bearer = basic = ca = cert = key = None
        if conn.auth is not None:
            if conn.auth.bearer_token_secret_ref is not None:
                ref = conn.auth.bearer_token_secret_ref
                bearer = secret(ref.name, ref.key).strip()
            if conn.auth.basic_auth_secret_ref is not None:
                ref_b = conn.auth.basic_auth_secret_ref
                basic = (secret(ref_b.name, ref_b.username_key), secret(ref_b.name, ref_b.password_key))
        insecure = False
        if conn.tls is not None:
            insecure = conn.tls.insecure_skip_verify
            if conn.tls.ca_secret_ref is not None:
                ca = secret(conn.tls.ca_secret_ref.name, conn.tls.ca_secret_ref.key)
            if conn.tls.cert_secret_ref is not None:
                ref_c = conn.tls.cert_secret_ref
                cert, key = secret(ref_c.name, ref_c.cert_key), secret(ref_c.name, ref_c.key_key)
        return PrometheusSettings(
            url=url,
            headers=dict(conn.headers),
            bearer_token=bearer,
            basic_auth=basic,
            ca_pem=ca,
            client_cert_pem=cert,
            client_key_pem=key,
            insecure_skip_verify=insecure,
            timeout_seconds=duration_seconds(conn.timeout),
        )

    def _client(self, settings: PrometheusSettings) -> PrometheusQuerier:
        key = (
            settings.url,
            tuple(sorted(settings.headers.items())),
            settings.bearer_token,
            settings.basic_auth,
            settings.ca_pem,
            settings.client_cert_pem,
            settings.insecure_skip_verify,
            settings.timeout_seconds,
        )
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self.prometheus_factory(settings)
        return client

    # --- one cycle -------------------------------------------------------------------------------------------

    def cycle(self) -> CycleReport:
        started = time.monotonic()
        now_epoch = self.clock()
        now = datetime.fromtimestamp(now_epoch, UTC)
        report = CycleReport()
        due = self.registry.due(now_epoch)
        if not due:
            self.metrics.cycle_done(report, len(self.registry))
            return report

        valid: list[MonitorEntry] = []
        for entry in due:
            if entry.spec is None:
                self._write_invalid(entry, entry.invalid_reason or "invalid spec", now, now_epoch)
                report.invalid += 1
            else:
                valid.append(entry)

        # Group the policies to measure by Prometheus connection; each group is measured in one batch.
        groups: dict[Hashable, tuple[PrometheusQuerier, list[SignalRequest]]] = {}
        requests_of: dict[tuple[str, str], list[SignalRequest]] = {}
        connection_errors: dict[tuple[str, str], str] = {}
        for entry in valid:
            assert entry.spec is not None
            if entry.spec.paused:
                requests_of[entry.key] = []
                continue
            try:
                client = self._client(self._prometheus_settings(entry))
            except (ValueError, KubernetesError) as exc:
                connection_errors[entry.key] = f"cannot reach Prometheus: {exc}"
                continue
            requests = [self._request(entry, i) for i in range(len(entry.spec.policies))]
            requests_of[entry.key] = requests
            groups.setdefault(id(client), (client, []))[1].extend(requests)

        results: dict[SignalRequest, Measurement] = {}
        for client, requests in groups.values():
            measured = measure(requests, client, at=now, max_parallel=self.settings.query_parallelism)
            report.measurements.append(measured)
            report.queries += measured.queries
            report.failed_queries += measured.failed_queries
            results.update(measured.results)

        judged = []
        for entry in valid:
            verdict = self._judge(entry, requests_of.get(entry.key), results, connection_errors.get(entry.key), now)
            if verdict is None:
                self._write_invalid(entry, entry.invalid_reason or "invalid spec", now, now_epoch)
                report.invalid += 1
            else:
                judged.append((entry, verdict))
        # Monitors whose policies changed state or decided something are written first: with thousands of
        # monitors the writes take most of a cycle, and a breach should not wait behind unchanged monitors.
        judged.sort(key=lambda item: not (item[1][1].transitions or item[1][1].decisions))
        writes = [
            self._writer.submit(self._finish, entry, monitor, evaluation, now_epoch)
            for entry, (monitor, evaluation) in judged
        ]
        for future in writes:
            ok = future.result()
            report.evaluated += 1
            if not ok:
                report.write_errors += 1
        report.seconds = time.monotonic() - started
        self.metrics.cycle_done(report, len(self.registry))
        return report

    def _request(self, entry: MonitorEntry, index: int) -> SignalRequest:
        assert entry.spec is not None
        policy = entry.spec.policies[index]
        return SignalRequest(
            namespace=entry.namespace,
            monitor=entry.name,
            policy=policy.name,
            model=entry.spec.model.name,
            window=policy.window,
            signal=policy.signal,
            query=policy.query,
            version=entry.spec.model.version,
            labels=tuple(entry.spec.model.labels.items()),
            auto_threshold=bool(policy.condition.auto_threshold),
            drift_method=policy.method or "psi",
            # Groups and features with fewer samples are left out of the fairness and drift signals, so a tiny
            # `__other__` group neither blocks nor decides the signal.
            min_samples=policy.min_samples,
        )

    def _judge(
        self,
        entry: MonitorEntry,
        requests: Sequence[SignalRequest] | None,
        results: Mapping[SignalRequest, Measurement],
        connection_error: str | None,
        now: datetime,
    ) -> tuple[MonitorSpec, Evaluation] | None:
        """The pure part for one monitor: measurements to an evaluation. None when the spec cannot be mapped
        (``entry.invalid_reason`` then says why)."""
        assert entry.spec is not None
        measurements: dict[str, Measurement] = {}
        thresholds: dict[str, float] = {}
        queries: dict[str, str] = {}
        if connection_error is not None:
            measurements = {p.name: Measurement.error(connection_error) for p in entry.spec.policies}
        for request in requests or ():
            result = results.get(request)
            if result is None:
                measurements[request.policy] = Measurement.error("not measured in this cycle")
                continue
            measurements[request.policy] = result
            if result.threshold is not None:
                thresholds[request.policy] = result.threshold
            if result.query:
                queries[request.policy] = result.query
            self.metrics.measured(result.kind.value)

        try:
            monitor = monitor_from_spec(
                entry.namespace, entry.name, entry.raw_spec,
                calibrated_thresholds=thresholds, queries=queries,
            )  # fmt: skip
        except ValueError as exc:
            entry.invalid_reason = f"invalid spec: {exc}"
            return None
        return monitor, evaluate(monitor, entry.status, measurements, now)

    def _finish(self, entry: MonitorEntry, monitor: MonitorSpec, evaluation: Evaluation, now_epoch: float) -> bool:
        """Act, write status and post Events for one monitor. Returns False when the status write failed."""
        assert entry.spec is not None
        now = evaluation.now
        outcome, prior = self._act(entry, monitor, evaluation, now)
        status = render_status(
            monitor,
            evaluation,
            prior_status=prior,
            observed_generation=entry.generation,
            action_records=outcome.records,
            last_known_good=outcome.last_known_good,
        )
        next_due = next_aligned(now_epoch, entry.interval_seconds)
        quiet = not (evaluation.transitions or outcome.records or outcome.events)
        if quiet and self._heartbeat_not_due(prior, status, evaluation.now):
            self.registry.record_written(entry, prior, next_due)
            self.metrics.skipped_write()
            return True
        written = self._write(entry, status, next_due)
        signals = {p.name: p.signal or "query" for p in entry.spec.policies}
        for transition in evaluation.transitions:
            message = (
                f"policy {transition.policy} ({signals.get(transition.policy, '')}) {transition.old.value} -> "
                f"{transition.new.value}: {transition.message}"
            )
            self._event(entry, transition.event_type, transition.reason, message)
        for record in outcome.records:
            self._event(
                entry,
                "Normal" if record["result"] in ("Succeeded", "DryRun", "Pending") else "Warning",
                f"Action{record['result']}",
                f"{record['name']} ({record.get('type', '')}) for policy {record['policy']}: {record['reason']}",
            )
        for event in outcome.events:
            self._event(entry, event.type, event.reason, event.message)
        return written

    def _heartbeat_not_due(self, prior: Mapping[str, Any], status: Mapping[str, Any], now: datetime) -> bool:
        """With a status heartbeat set, whether this write can be skipped: nothing but the measured values
        changed, and the last write is younger than the heartbeat."""
        heartbeat = self.settings.status_heartbeat_seconds
        if heartbeat <= 0 or _material(prior) != _material(status):
            return False
        try:
            last = datetime.fromisoformat(str(prior.get("lastEvaluationTime", "")).replace("Z", "+00:00"))
        except ValueError:
            return False
        return (now - last).total_seconds() < heartbeat

    def _act(
        self, entry: MonitorEntry, monitor: MonitorSpec, evaluation: Evaluation, now: datetime
    ) -> tuple[ActionsOutcome, Mapping[str, Any]]:
        """Hand the cycle to the actions layer. Returns what it did and the prior status to render on (which
        includes the Pending records it wrote before acting)."""
        assert entry.spec is not None
        prior: dict[str, Any] = dict(entry.status)

        def checkpoint(records: Sequence[Mapping[str, Any]]) -> None:
            # Written before acting: an operator that stops mid-action finds the Pending record on restart, and
            # the policy states of this cycle with it (the episode's activeSince is part of every key).
            nonlocal prior
            keys = {r.get("key") for r in records}
            kept = [
                a for a in prior.get("actions") or [] if not (a.get("key") in keys and a.get("result") == "Pending")
            ]
            status = render_status(
                monitor,
                evaluation,
                prior_status={**prior, "actions": kept},
                observed_generation=entry.generation,
                action_records=records,
            )
            self.kube.patch_monitor_status(entry.namespace, entry.name, status)
            prior = status
            self.registry.record_status(entry, prior)

        context = MonitorContext(
            entry.namespace, entry.name, entry.uid, entry.spec, status=entry.status, annotations=entry.annotations
        )
        try:
            outcome = self.actions.run(context, evaluation, evaluation.now, checkpoint)
        except Exception as exc:  # an action bug must not stop the status from being written
            log.exception("actions failed for %s/%s", entry.namespace, entry.name)
            self._event(entry, "Warning", "ActionError", f"actions failed: {exc}")
            outcome = ActionsOutcome()
        for record in outcome.records:
            self.metrics.decided(str(record.get("type", "")), str(record.get("result", "")))
        return outcome, prior

    # --- writes ----------------------------------------------------------------------------------------------

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
            self.registry.record_written(entry, entry.status, 0.0)
            return False
        self.registry.record_written(entry, status, next_due)
        return True

    def _write_invalid(self, entry: MonitorEntry, reason: str, now: datetime, now_epoch: float) -> None:
        prior = entry.status
        unchanged = (
            prior.get("phase") == "Invalid"
            and prior.get("message") == reason
            and prior.get("observedGeneration") == entry.generation
        )
        next_due = next_aligned(now_epoch, entry.interval_seconds)
        if unchanged:
            self.registry.record_written(entry, prior, next_due)
            return
        status = render_invalid_status(reason, now=now, prior_status=prior, observed_generation=entry.generation)
        if self._write(entry, status, next_due):
            self._event(entry, "Warning", "InvalidSpec", reason)

    def _event(self, entry: MonitorEntry, event_type: str, reason: str, message: str) -> None:
        try:
            self.kube.emit_event(ObjectRef(entry.namespace, entry.name, entry.uid), event_type, reason, message)
        except KubernetesError as exc:
            log.warning("event on %s/%s not posted: %s", entry.namespace, entry.name, exc)
            self.metrics.error("kubernetes")
