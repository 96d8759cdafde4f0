"""The operator's settings: read once from the environment at start, documented per field (docs/operator.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields


def _seconds(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{name}={text!r}: expected a number of seconds > 0")
    return value


#: Settings in seconds that must be > 0.
_SECONDS = (
    "tick_seconds",
    "stall_seconds",
    "secret_ttl_seconds",
    "lease_duration_seconds",
    "lease_renew_deadline_seconds",
    "lease_retry_period_seconds",
)


@dataclass(frozen=True)
class OperatorSettings:
    """Settings of `modelmonitor run`. Each field is read from the environment variable in its metadata."""

    #: Prometheus base URL used by monitors that do not set spec.prometheus.url.
    prometheus_url: str | None = field(default=None, metadata={"env": "MODELMONITOR_PROMETHEUS_URL"})
    #: Namespaces to watch, comma-separated; empty means all namespaces (needs cluster-wide RBAC).
    namespaces: tuple[str, ...] = field(default=(), metadata={"env": "MODELMONITOR_NAMESPACES"})
    #: host:port of the operator's own /metrics and /healthz endpoint; empty disables it.
    metrics_address: str = field(default="0.0.0.0:8080", metadata={"env": "MODELMONITOR_METRICS_ADDRESS"})
    #: Seconds between scheduling ticks. A monitor is evaluated on the first tick after its interval elapses,
    #: so this bounds the extra delay; monitors with the same interval are evaluated together (batched queries).
    tick_seconds: float = field(default=1.0, metadata={"env": "MODELMONITOR_TICK_SECONDS"})
    #: Queries in flight at once per Prometheus.
    query_parallelism: int = field(default=4, metadata={"env": "MODELMONITOR_QUERY_PARALLELISM"})
    #: The most series one Prometheus answer may hold: a batched query whose answer would hold more (a fleet of
    #: many models) is sent in parts, each restricted to some of the models this replica measures.
    max_series_per_answer: int = field(default=100_000, metadata={"env": "MODELMONITOR_MAX_SERIES_PER_ANSWER"})
    #: Status patches in flight at once (the API server's fairness limits apply beyond that).
    write_parallelism: int = field(default=8, metadata={"env": "MODELMONITOR_WRITE_PARALLELISM"})
    #: A monitor's status is written when its states, conditions or actions change (at once), and otherwise only
    #: once per this many seconds (a heartbeat that refreshes the measured values and ``lastEvaluationTime``),
    #: at an instant spread over the period by the monitor's name so a fleet evaluated together is not
    #: rewritten together. 0 writes every monitor's status every cycle: with thousands of monitors the writes
    #: then dominate the API server's load and the cycle (docs/benchmarks.md).
    status_heartbeat_seconds: float = field(default=300.0, metadata={"env": "MODELMONITOR_STATUS_HEARTBEAT_SECONDS"})
    #: Name of this replica: its Lease is named after it, and monitors are shared among live replicas by it.
    #: The chart sets the pod's name; empty (the default outside a pod) means ``<hostname>-<pid>``.
    replica_name: str = field(default="", metadata={"env": "MODELMONITOR_REPLICA_NAME"})
    #: Namespace of the replicas' Leases (the operator's own); empty means the pod's namespace in a cluster and
    #: the kubeconfig context's namespace ("default" when it names none) outside one.
    lease_namespace: str = field(default="", metadata={"env": "MODELMONITOR_LEASE_NAMESPACE"})
    #: Seconds a replica's Lease lasts without renewal: a replica that dies is replaced in its monitors this long
    #: (plus at most one retry period) after its last renewal.
    lease_duration_seconds: float = field(default=15.0, metadata={"env": "MODELMONITOR_LEASE_DURATION_SECONDS"})
    #: A replica that has not renewed its Lease and read the other replicas' Leases for this many seconds stops
    #: evaluating and acting; less than the Lease duration, so it has stopped before any takeover can begin
    #: (client-go's RenewDeadline). A joining replica waits this long before it acts.
    lease_renew_deadline_seconds: float = field(
        default=10.0, metadata={"env": "MODELMONITOR_LEASE_RENEW_DEADLINE_SECONDS"}
    )
    #: Seconds between renewals of the Lease (and reads of the others'): client-go's RetryPeriod.
    lease_retry_period_seconds: float = field(default=2.0, metadata={"env": "MODELMONITOR_LEASE_RETRY_PERIOD_SECONDS"})
    #: Seconds a Secret holding Prometheus credentials is cached: each Secret a monitor names is read at most once
    #: per this many seconds, shared by every monitor naming it, so a rotated credential is used at most this long
    #: after the change. A cache (of ``get``s) rather than a watch keeps the operator's RBAC at ``get`` on Secrets.
    secret_ttl_seconds: float = field(default=60.0, metadata={"env": "MODELMONITOR_SECRET_TTL_SECONDS"})
    #: The operator is unhealthy when no cycle has completed for this many seconds.
    stall_seconds: float = field(default=120.0, metadata={"env": "MODELMONITOR_STALL_SECONDS"})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Read every field from its variable; a bad value raises ValueError naming the variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            raw = environ.get(name)
            if raw is None or (raw.strip() == "" and f.name != "metrics_address"):
                continue
            raw = raw.strip()
            if f.name == "namespaces":
                values[f.name] = tuple(n.strip() for n in raw.split(",") if n.strip())
            elif f.name in _SECONDS:
                values[f.name] = _seconds(raw, name)
            elif f.name == "status_heartbeat_seconds":
                values[f.name] = 0.0 if raw in ("0", "0.0") else _seconds(raw, name)
            elif f.name in ("query_parallelism", "write_parallelism", "max_series_per_answer"):
                if not raw.isdigit() or int(raw) < 1:
                    raise ValueError(f"{name}={raw!r}: expected a positive integer")
                values[f.name] = int(raw)
            elif f.name == "prometheus_url":
                if not raw.startswith(("http://", "https://")):
                    raise ValueError(f"{name}={raw!r}: expected an http:// or https:// URL")
                values[f.name] = raw.rstrip("/")
            else:
                values[f.name] = raw
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check_leases()
        return settings

    def check_leases(self) -> None:
        """The Lease timings must leave a margin: retry period < renew deadline < Lease duration."""
        if not self.lease_retry_period_seconds < self.lease_renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError(
                "MODELMONITOR_LEASE_RETRY_PERIOD_SECONDS < MODELMONITOR_LEASE_RENEW_DEADLINE_SECONDS < "
                f"MODELMONITOR_LEASE_DURATION_SECONDS expected, got {self.lease_retry_period_seconds:g} / "
                f"{self.lease_renew_deadline_seconds:g} / {self.lease_duration_seconds:g}"
            )
