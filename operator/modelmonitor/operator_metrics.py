"""The operator's own Prometheus metrics and its health endpoint (/metrics and /healthz on one port)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from modelmonitor.loop import CycleReport


class OperatorMetrics:
    """Counters of what the loop does. Pass a fresh registry in tests."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
        self.monitors = Gauge("modelmonitor_operator_monitors", "ModelMonitors known to the operator", registry=r)
        self.last_cycle = Gauge(
            "modelmonitor_operator_last_cycle_timestamp_seconds", "when the last cycle finished", registry=r
        )
        self.last_cycle_monotonic = time.monotonic()

    def cycle_done(self, report: CycleReport, monitors: int) -> None:
        self.cycles.inc()
        self.monitors.set(monitors)
        self.last_cycle.set(time.time())
        self.last_cycle_monotonic = time.monotonic()
        if report.evaluated or report.invalid:
            self.evaluations.labels("valid").inc(report.evaluated)
            self.evaluations.labels("invalid").inc(report.invalid)
            self.queries.inc(report.queries)
            self.queries_last_cycle.set(report.queries)
            self.cycle_seconds.observe(report.seconds)
            if report.failed_queries:
                self.errors.labels("prometheus").inc(report.failed_queries)

    def measured(self, status: str) -> None:
        self.outcomes.labels(status).inc()

    def decided(self, action_type: str, result: str) -> None:
        self.decisions.labels(action_type or "unknown", result).inc()

    def skipped_write(self) -> None:
        self.skipped_writes.inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def seconds_since_last_cycle(self) -> float:
        return time.monotonic() - self.last_cycle_monotonic


def health_app(metrics: OperatorMetrics, stall_seconds: float) -> web.Application:
    """/metrics for Prometheus; /healthz is 200 while cycles keep completing, 503 once they stall."""

    async def metrics_handler(_request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        idle = metrics.seconds_since_last_cycle()
        if idle > stall_seconds:
            return web.Response(status=503, text=f"no evaluation cycle completed for {idle:.0f} s\n")
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    return app
