"""The operator's own Prometheus metrics and its health endpoint (/metrics and /healthz on one port).

Two kinds of series: counters and gauges of what the loop does (`OperatorMetrics`), and one set of series per
monitor and policy that mirrors the status the loop last wrote (`PolicyCollector`), so Grafana and Prometheus
alerting see the same states, values and thresholds as ``kubectl get mm``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from modelmonitor.deflate import Deflate
from modelmonitor.policy import Phase, State

if TYPE_CHECKING:
    from modelmonitor.loop import CycleReport


class KnownMonitor(Protocol):
    """A monitor as the loop knows it: where it is and the status last written (or watched)."""

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def status(self) -> Mapping[str, Any]: ...

    @property
    def encoded_status(self) -> bytes:
        """The same status encoded: a new object whenever the status changes (a scrape decodes only those)."""
        ...


class KnownMonitors(Protocol):
    """Every monitor the operator currently knows (the loop's `Registry`); a deleted one is no longer listed."""

    def all(self) -> Sequence[KnownMonitor]: ...


# Policy states that carry no measured value this cycle: the status keeps the last measured value for people to
# read, but a series must not show it as current (never a made-up or stale number for a missing measurement).
_NO_VALUE_STATES = frozenset({State.NO_DATA.value, State.ERROR.value})


def _number(raw: Any) -> float | None:
    """A finite number from a status field, or None (absent, or not something the loop could have written)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return None
    return float(raw)


def _spec_invalid(status: Mapping[str, Any]) -> bool:
    """Whether the spec could not be evaluated: its policies keep their last states in status, so a fixed spec
    resumes, but they say nothing current. (An unusable answer is phase Invalid too, with evaluated policies.)"""
    if status.get("phase") != Phase.INVALID.value:
        return False
    conditions = status.get("conditions") or ()
    return any(
        isinstance(c, Mapping) and c.get("type") == "Evaluating" and c.get("reason") == Phase.INVALID.value
        for c in conditions
    )


#: One monitor's samples, per family of `PolicyCollector` (phase, state, value, threshold): (labels, value) pairs.
_MonitorSamples = tuple[list[tuple[list[str], float]], ...]


def _monitor_samples(namespace: str, name: str, status: Mapping[str, Any]) -> _MonitorSamples:
    """The series one monitor's status gives, per family (none before its first evaluation)."""
    phase: list[tuple[list[str], float]] = []
    state: list[tuple[list[str], float]] = []
    value: list[tuple[list[str], float]] = []
    threshold: list[tuple[list[str], float]] = []
    samples = (phase, state, value, threshold)
    current_phase = status.get("phase")
    if current_phase not in _PHASES:
        return samples  # never evaluated yet: nothing to show
    for known in _PHASES:
        phase.append(([namespace, name, known], 1.0 if known == current_phase else 0.0))
    if _spec_invalid(status):
        return samples
    for entry in status.get("policies") or ():
        if not isinstance(entry, Mapping):
            continue
        policy, current_state = entry.get("name"), entry.get("state")
        if not isinstance(policy, str) or current_state not in _STATES:
            continue
        labels = [namespace, name, policy]
        for known in _STATES:
            state.append(([*labels, known], 1.0 if known == current_state else 0.0))
        measured = _number(entry.get("value"))
        if measured is not None and current_state not in _NO_VALUE_STATES:
            value.append((labels, measured))
        in_force = _number(entry.get("threshold"))
        if in_force is not None:
            threshold.append((labels, in_force))
    return samples


class _Families:
    """A fixed list of metric families, as the exposition functions take a registry."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _go_float(number: float) -> str:
    """A sample value as prometheus_client writes it; the 0 and 1 of the state series without a call."""
    if number == 1.0:
        return "1.0"
    if number == 0.0:
        return "0.0"
    return str(floatToGoString(number))  # type: ignore[no-untyped-call]


def _text(family: Metric) -> str:
    """``family`` in the text format, by prometheus_client itself (HELP and TYPE lines first)."""
    return generate_latest(_Families([family])).decode()


class PolicyCollector(Collector):
    """One series set per monitor and policy, from the loop's last statuses, at every scrape.

    A deleted monitor or a policy removed from a spec disappears from the next scrape by itself. A monitor whose
    spec is invalid shows only its phase: its policies are not evaluated.

    Two ways out: `collect` (for a registry: families built fresh) and `exposition` (for /metrics: the text,
    each monitor's lines rendered once and kept until its status is written again). With 10,000 monitors the
    families hold about 300,000 samples, which prometheus_client takes seconds to format; with write-on-change
    most statuses are not written between two scrapes, so a scrape mostly sends kept text, part by part.

    The kept lines are compressed (`_Compressor`): for 10,000 monitors of three policies they held 28.9 MiB as
    text and hold 9.2 MiB so (measured with tracemalloc); a scrape decompresses them as it sends them, which made
    a scrape of those 10,000 monitors take 0.36 s instead of 0.13 s on a busy 2-core host.
    """

    def __init__(self, monitors: KnownMonitors) -> None:
        self._monitors = monitors
        #: Per monitor: the encoded status its lines were rendered from (the same object until the status is
        #: written again), and its lines per family, compressed, with their length.
        self._rendered: dict[tuple[str, str], tuple[bytes, tuple[tuple[bytes, int], ...]]] = {}
        families = self._families()
        self._headers = tuple(_text(family).encode() for family in families)
        #: Per family: its name, its label names, and their order in a line (sorted by name).
        self._layouts = tuple(
            (metric, labels, sorted(range(len(labels)), key=labels.__getitem__)) for metric, _, labels in _FAMILIES
        )
        example = self._render("namespace", "monitor", _EXAMPLE_STATUS)
        self._compressors = tuple(_Compressor(text.encode()) for text in example)
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        # The names, without samples: lets a registry detect a clash without calling collect() (the default
        # registry would otherwise collect at registration time).
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        for monitor in self._monitors.all():
            for family, samples in zip(
                families, _monitor_samples(monitor.namespace, monitor.name, monitor.status), strict=True
            ):
                for labels, number in samples:
                    family.add_metric(labels, number)
        return families

    def exposition(self) -> Exposition:
        """The four families in the text format, in parts to be sent one after the other (never joined: at
        10,000 monitors the text is about 30 MiB). A monitor's lines are rendered again only when its status
        was written since the last scrape."""
        with self._lock:
            rendered: dict[tuple[str, str], tuple[bytes, tuple[tuple[bytes, int], ...]]] = {}
            parts: tuple[list[_Part], ...] = tuple([(header, len(header), None)] for header in self._headers)
            for monitor in self._monitors.all():
                key, encoded = (monitor.namespace, monitor.name), monitor.encoded_status
                known = self._rendered.get(key)
                if known is None or known[0] is not encoded:
                    texts = self._render(monitor.namespace, monitor.name, monitor.status)
                    kept = tuple(
                        compressor.compress_text(text.encode())
                        for compressor, text in zip(self._compressors, texts, strict=True)
                    )
                    known = (encoded, kept)
                rendered[key] = known
                for family_parts, (blob, size), compressor in zip(parts, known[1], self._compressors, strict=True):
                    if size:
                        family_parts.append((blob, size, compressor))
            self._rendered = rendered
        return Exposition([part for family_parts in parts for part in family_parts])

    def _render(self, namespace: str, name: str, status: Mapping[str, Any]) -> tuple[str, ...]:
        """One monitor's sample lines per family (the families' HELP and TYPE lines left out), as prometheus_client
        writes them (a unit test compares the two): labels sorted by name, values escaped, numbers as Go prints
        them. Each ``name="value"`` is escaped once per monitor: the same few recur in all its lines."""
        fragments: dict[tuple[str, str], str] = {}

        def fragment(label: str, value: str) -> str:
            known = fragments.get((label, value))
            if known is None:
                known = fragments[(label, value)] = f'{label}="{_escape_label_value(value)}"'
            return known

        texts = []
        for (metric, names, order), samples in zip(
            self._layouts, _monitor_samples(namespace, name, status), strict=True
        ):
            texts.append(
                "".join(
                    f"{metric}{{{','.join([fragment(names[i], labels[i]) for i in order])}}} {_go_float(number)}\n"
                    for labels, number in samples
                )
            )
        return tuple(texts)

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, documentation, labels=labels) for name, documentation, labels in _FAMILIES]


_MONITOR_LABELS = ("namespace", "monitor")
_POLICY_LABELS = (*_MONITOR_LABELS, "policy")
#: The families of `PolicyCollector`: name, help, label names.
_FAMILIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "modelmonitor_monitor_phase",
        "1 for the monitor's current phase (status.phase), 0 for the others",
        (*_MONITOR_LABELS, "phase"),
    ),
    (
        "modelmonitor_policy_state",
        "1 for the policy's current state (status.policies[].state), 0 for the others",
        (*_POLICY_LABELS, "state"),
    ),
    (
        "modelmonitor_policy_value",
        "the policy's measured value (status.policies[].value); absent while NoData or Error",
        _POLICY_LABELS,
    ),
    (
        "modelmonitor_policy_threshold",
        "the threshold in force (status.policies[].threshold: clearThreshold while firing)",
        _POLICY_LABELS,
    ),
)
_PHASES = tuple(p.value for p in Phase)
_STATES = tuple(s.value for s in State)
#: A status whose lines, for a monitor named ``monitor``, are the preset dictionaries of the kept lines.
_EXAMPLE_STATUS: Mapping[str, Any] = {
    "phase": Phase.HEALTHY.value,
    "policies": [{"name": "policy", "state": State.INACTIVE.value, "value": 0.5, "threshold": 0.5}],
}


class _Compressor(Deflate):
    """One family's lines of one monitor, compressed: a few hundred bytes to a few kilobytes of lines that
    repeat the monitor's labels, with the family's lines of an example monitor as the preset dictionary (the
    metric name, the label names, the states). One monitor's 3.6 KB of lines kept in about 0.3 KB."""

    def compress_text(self, text: bytes) -> tuple[bytes, int]:
        """The compressed text and the text's length (b"" and 0 for no text)."""
        return (self.compress(text), len(text)) if text else (b"", 0)


#: One part of the text: its bytes (compressed when the compressor is given) and its length as text.
_Part = tuple[bytes, int, "_Compressor | None"]


@dataclass(frozen=True)
class Exposition:
    """The /metrics text as parts, some compressed: its length, and the text in pieces."""

    parts: list[_Part]

    @property
    def length(self) -> int:
        return sum(size for _, size, _ in self.parts)

    def pieces(self, size: int) -> Iterator[bytes]:
        """The text in pieces of about ``size`` bytes (more when one part is longer), each decompressed as it
        is reached: the whole text is never held."""
        piece: list[bytes] = []
        held = 0
        for data, length, compressor in self.parts:
            piece.append(data if compressor is None else compressor.decompress(data))
            held += length
            if held >= size:
                yield b"".join(piece)
                piece, held = [], 0
        if piece:
            yield b"".join(piece)

    def text(self) -> bytes:
        return b"".join(self.pieces(1 << 20))


class _Forward(Collector):
    """Another registry's series, as one collector of this one."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return self._source.collect()


class OperatorMetrics:
    """Counters of what the loop does, and the policies of ``monitors`` when given, all in ``registry`` (pass a
    fresh one in tests). /metrics serves `exposition`: the same series, the policies' from rendered text."""

    def __init__(self, registry: CollectorRegistry | None = None, monitors: KnownMonitors | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        #: The loop's own counters and gauges; ``registry`` reaches them through a forwarding collector.
        self._own = CollectorRegistry()
        self.registry.register(_Forward(self._own))
        self._policies = PolicyCollector(monitors) if monitors is not None else None
        if self._policies is not None:
            self.registry.register(self._policies)
        r = self._own
        self.cycles = Counter("modelmonitor_operator_cycles", "evaluation cycles run", registry=r)
        self.evaluations = Counter(
            "modelmonitor_operator_evaluations", "monitors evaluated (valid and invalid)", ["result"], registry=r
        )
        self.outcomes = Counter(
            "modelmonitor_operator_measurements",
            "policy measurements by what they held (Values, NoData, Error, Invalid)",
            ["status"],
            registry=r,
        )
        self.errors = Counter(
            "modelmonitor_operator_errors", "failed calls to Prometheus or Kubernetes", ["kind"], registry=r
        )
        self.decisions = Counter(
            "modelmonitor_operator_decisions", "action records written, by action type and result", ["type", "result"],
            registry=r,
        )  # fmt: skip
        self.queries = Counter("modelmonitor_operator_queries", "PromQL queries sent", registry=r)
        self.queries_last_cycle = Gauge(
            "modelmonitor_operator_queries_last_cycle",
            "PromQL queries sent in the last cycle that evaluated",
            registry=r,
        )
        self.largest_answer = Gauge(
            "modelmonitor_operator_largest_answer_series",
            "series in the largest Prometheus answer of the last cycle that evaluated (a batched query is split "
            "when its answer would pass MODELMONITOR_MAX_SERIES_PER_ANSWER)",
            registry=r,
        )
        self.cycle_seconds = Histogram(
            "modelmonitor_operator_cycle_duration_seconds",
            "wall time of a cycle that evaluated at least one monitor",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60),
            registry=r,
        )
        self.skipped_writes = Counter(
            "modelmonitor_operator_status_writes_skipped",
            "status writes skipped by the heartbeat setting (nothing but measured values changed)",
            registry=r,
        )
        self.heartbeats_waiting = Gauge(
            "modelmonitor_operator_heartbeat_writes_waiting",
            "heartbeat status writes waiting to be made between cycles (they are made after the cycle that "
            "evaluated them; a count that stays high means the API server is slower than the heartbeat needs)",
            registry=r,
        )
        self.monitors = Gauge("modelmonitor_operator_monitors", "ModelMonitors known to the operator", registry=r)
        self.owned = Gauge(
            "modelmonitor_operator_monitors_owned",
            "ModelMonitors this replica evaluates and acts on (its share among the live replicas)",
            registry=r,
        )
        self.replicas = Gauge(
            "modelmonitor_operator_replicas_live", "operator replicas with an unexpired Lease, as this one sees them",
            registry=r,
        )  # fmt: skip
        self.acting = Gauge(
            "modelmonitor_operator_lease_acting",
            "1 while this replica holds its Lease and may act, 0 while it cannot renew it or waits after joining",
            registry=r,
        )
        self.fenced_writes = Counter(
            "modelmonitor_operator_writes_fenced",
            "status writes and actions not made because the monitor was no longer this replica's",
            registry=r,
        )
        self.last_cycle = Gauge(
            "modelmonitor_operator_last_cycle_timestamp_seconds", "when the last cycle finished", registry=r
        )
        #: None until the first cycle completes: an operator that has not evaluated yet is not healthy.
        self.last_cycle_monotonic: float | None = None
        #: Seconds the replica's Lease renewal is overdue (None while it keeps up): set by the operator's start.
        self.lease_overdue: Callable[[], float | None] = lambda: None

    def cycle_done(self, report: CycleReport, monitors: int) -> None:
        self.cycles.inc()
        self.monitors.set(monitors)
        self.owned.set(report.owned)
        self.last_cycle.set(time.time())
        self.last_cycle_monotonic = time.monotonic()
        if report.evaluated or report.invalid:
            self.evaluations.labels("valid").inc(report.evaluated)
            self.evaluations.labels("invalid").inc(report.invalid)
            self.queries.inc(report.queries)
            self.queries_last_cycle.set(report.queries)
            self.largest_answer.set(report.largest_answer)
            self.cycle_seconds.observe(report.seconds)
            if report.failed_queries:
                self.errors.labels("prometheus").inc(report.failed_queries)

    def measured(self, status: str, count: int = 1) -> None:
        self.outcomes.labels(status).inc(count)

    def decided(self, action_type: str, result: str) -> None:
        self.decisions.labels(action_type or "unknown", result).inc()

    def fenced(self) -> None:
        self.fenced_writes.inc()

    def membership(self, live: int, acting: bool) -> None:
        self.replicas.set(live)
        self.acting.set(1 if acting else 0)

    def skipped_write(self) -> None:
        self.skipped_writes.inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def exposition(self) -> bytes:
        """What /metrics serves: every series of ``registry``, in the text format."""
        return self.exposition_parts().text()

    def exposition_parts(self) -> Exposition:
        """`exposition` in parts, as /metrics sends it."""
        own = generate_latest(self._own)
        policies = self._policies.exposition().parts if self._policies is not None else []
        return Exposition([(own, len(own), None), *policies])

    def seconds_since_last_cycle(self) -> float | None:
        """Seconds since the last cycle completed; None while none has."""
        if self.last_cycle_monotonic is None:
            return None
        return time.monotonic() - self.last_cycle_monotonic


#: Bytes of /metrics handed to the connection at a time.
METRICS_WRITE_BYTES = 1 << 20


def health_app(metrics: OperatorMetrics, stall_seconds: float) -> web.Application:
    """/metrics for Prometheus; /healthz is 200 while cycles keep completing, 503 before the first one has
    completed, once they stall, and while the replica stopped acting because its Lease cannot be renewed."""

    async def metrics_handler(request: web.Request) -> web.StreamResponse:
        # Off the event loop: with thousands of policies, rendering takes long enough to delay Kopf's watch.
        exposition = await asyncio.to_thread(metrics.exposition_parts)
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        response.content_length = exposition.length
        await response.prepare(request)
        # Sent in pieces of about a megabyte, each decompressed off the event loop: the whole text is never held
        # (tens of MiB with thousands of monitors), and each write lets the event loop serve Kopf's watch.
        pieces = exposition.pieces(METRICS_WRITE_BYTES)
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            await response.write(piece)
        await response.write_eof()
        return response

    async def healthz(_request: web.Request) -> web.Response:
        idle = metrics.seconds_since_last_cycle()
        if idle is None:
            return web.Response(status=503, text="no evaluation cycle has completed yet\n")
        if idle > stall_seconds:
            return web.Response(status=503, text=f"no evaluation cycle completed for {idle:.0f} s\n")
        overdue = metrics.lease_overdue()
        if overdue is not None:
            return web.Response(status=503, text=f"not evaluating: the Lease was last renewed {overdue:.0f} s ago\n")
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    return app
