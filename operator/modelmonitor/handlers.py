"""The Kopf shell: the only module that knows Kopf.

Kopf watches ModelMonitors and feeds every change into the loop's `Registry` (a raw event handler: no
finalizers, so deleting a monitor never hangs while the operator is down, and no per-object handler state).
`prepare` builds the clients once, before Kopf starts, and checks everything a start needs (the Kubernetes
configuration, the API server and the ModelMonitor CRD on it, the metrics port): a start that cannot complete
fails at once with a `StartupError` naming what failed, rather than retrying in the background while looking
alive. A startup handler then starts the evaluation task, the Lease thread and the /metrics + /healthz server;
the evaluation task calls `Evaluator.cycle` on every tick from a worker thread, so the event loop never blocks.
The Lease thread renews this replica's Lease every retry period (`modelmonitor.sharding`): every replica watches
every monitor, and evaluates and acts on its share only.

Kopf runs standalone: its own peering (KopfPeering objects, priorities) would pause every replica but one, and
the raw event handler stores no per-object state, so replicas never write anything Kopf-specific to a monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import kopf
from aiohttp import web

from modelmonitor.actions import CrashHook, Remediator
from modelmonitor.adapters.alertmanager import HttpAlertSender
from modelmonitor.adapters.kubernetes import Kind, KubernetesClient, KubernetesError, current_namespace, load_config
from modelmonitor.adapters.registry import RegistryConnections
from modelmonitor.api import GROUP, KIND, PLURAL, VERSION
from modelmonitor.collection import CollectionPacing
from modelmonitor.loop import Evaluator, MonitorEntry, Registry
from modelmonitor.operator_metrics import OperatorMetrics, health_app
from modelmonitor.settings import OperatorSettings
from modelmonitor.sharding import LeaseTimings, Membership, Ownership, default_replica_name, group_of

log = logging.getLogger("modelmonitor.operator")


@dataclass
class Runtime:
    """Everything built once at start, kept in Kopf's memo."""

    settings: OperatorSettings
    registry: Registry
    evaluator: Evaluator
    metrics: OperatorMetrics
    membership: Membership | None = None
    #: The /metrics and /healthz socket, bound by `prepare` so that a port in use stops the start.
    metrics_socket: socket.socket | None = None
    task: asyncio.Task[None] | None = None
    web_runner: web.AppRunner | None = None
    lease_thread: threading.Thread | None = None
    lease_stop: threading.Event = field(default_factory=threading.Event)


class OwnedMonitors:
    """The monitors this replica owns: /metrics mirrors their statuses only, so two replicas never export the
    same monitor's series twice."""

    def __init__(self, registry: Registry, ownership: Ownership) -> None:
        self.registry = registry
        self.ownership = ownership

    def all(self) -> list[MonitorEntry]:
        return [e for e in self.registry.all() if self.ownership.owns(e.namespace, e.name)]


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: the raw event handler compares nothing, and Kopf's own storage deep-copies every watched
    body (managedFields and status included) on every event to build one. Every status write comes back as a
    watch event: at 10,000 monitors Kopf's share of the operator's CPU went from 18 % to 6 % without it."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


#: Monitors per page when Kopf lists them (at start, and again when the watch's resource version has expired):
#: one unpaged List of 10,000 monitors, managedFields included, is tens of megabytes of JSON decoded at once.
LIST_CHUNK = 500


#: Seconds Kopf keeps a monitor's worker after its last watch event. Kopf's default of 5 s keeps every monitor's
#: last watched object (spec, status and managedFields, tens of kB decoded) alive that long: at the listing and while
#: a cycle's writes come back as events, that is thousands of objects at once. Workers are cheap to start again,
#: and every echo of a status write is 30 s or more from the next one anyway.
WORKER_IDLE_SECONDS = 0.2


class StartupError(RuntimeError):
    """The operator cannot start; the message names what failed (the kubeconfig, the API server, the CRD, the port)."""


def prepare(settings: OperatorSettings) -> Runtime:
    """Check what a start needs and build the clients once: one Kubernetes client shared by the loop, the actions
    and the Lease. Raises `StartupError` naming the first thing that failed."""
    try:
        source = load_config()
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    kube = KubernetesClient()
    resource = Kind(f"{GROUP}/{VERSION}", KIND)
    try:
        kube.resource_name(resource)
    except KubernetesError as exc:
        if exc.status == 404:
            raise StartupError(
                f"the API server at {kube.server} does not serve {resource}: the ModelMonitor CRD is not installed "
                "(kubectl apply -f crds/, or install the chart)"
            ) from exc
        what = "cannot reach" if exc.status == 0 else "refused by"
        raise StartupError(f"{what} the API server at {kube.server} (configured by {source}): {exc}") from exc
    metrics_socket = bind_metrics(settings.metrics_address)
    registry = Registry()
    membership = Membership(
        kube,
        settings.lease_namespace or current_namespace(),
        settings.replica_name or default_replica_name(),
        group_of(settings.namespaces),
        LeaseTimings(
            settings.lease_duration_seconds, settings.lease_renew_deadline_seconds, settings.lease_retry_period_seconds
        ),
    )
    metrics = OperatorMetrics(monitors=OwnedMonitors(registry, membership))  # each owned monitor's last status
    metrics.lease_overdue = membership.renewal_overdue  # /healthz: a replica cut off evaluates nothing
    registries = RegistryConnections(kube, secret_ttl_seconds=settings.secret_ttl_seconds)
    actions = Remediator(kube, HttpAlertSender(), crash=CrashHook.from_env(), registries=registries)
    evaluator = Evaluator(settings, registry, kube, actions, metrics, ownership=membership)
    return Runtime(settings, registry, evaluator, metrics, membership, metrics_socket)


def bind_metrics(address: str) -> socket.socket | None:
    """The listening socket of /metrics and /healthz (none when the address is empty)."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, int(port)), family=family)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartupError(
            f"cannot serve /metrics and /healthz on {address} (MODELMONITOR_METRICS_ADDRESS): {reason}"
        ) from exc


def lease_loop(runtime: Runtime, membership: Membership, stop: threading.Event) -> None:
    """Renew this replica's Lease and read the others' every retry period until ``stop``; log what changes.

    A thread of its own, not a task on the event loop: with thousands of monitors the event loop is busy with
    Kopf's watch events, and a renewal waiting behind them would let the Lease lapse."""
    period = runtime.settings.lease_retry_period_seconds
    failure: str | None = None
    seen: tuple[tuple[str, ...], bool] | None = None
    log.info("replica %s: Lease in namespace %s, group %s", membership.identity, membership.namespace, membership.group)
    while not stop.is_set():
        started = time.monotonic()
        try:
            membership.renew()
            if failure is not None:
                log.info("Lease renewed again")
            failure = None
        except KubernetesError as exc:
            if str(exc) != failure:
                log.warning("cannot renew the Lease (this replica stops acting if it goes on): %s", exc)
            failure = str(exc)
        now = (membership.live(), membership.acting())
        if now != seen:
            log.info("live replicas: %s; this one (%s) %s", ", ".join(now[0]) or "none", membership.identity,
                     "acts on its share" if now[1] else "does not act")  # fmt: skip
            seen = now
        runtime.metrics.membership(len(now[0]), now[1])
        stop.wait(max(0.0, period - (time.monotonic() - started)))


async def evaluation_loop(runtime: Runtime) -> None:
    tick = runtime.settings.tick_seconds
    collection = CollectionPacing()
    collection.install()
    while True:
        loop_started = asyncio.get_running_loop().time()
        evaluated = False
        try:
            report = await asyncio.to_thread(runtime.evaluator.cycle)
            evaluated = bool(report.evaluated or report.invalid)
            if evaluated:
                log.info(
                    "cycle: %d monitors evaluated, %d invalid, %d queries (%d failed), %.2f s "
                    "(queries done at %.2f s, every monitor evaluated at %.2f s); "
                    "%d heartbeat writes to follow, %d of earlier cycles were still waiting",
                    report.evaluated, report.invalid, report.queries, report.failed_queries, report.seconds,
                    report.queried_seconds, report.evaluated_seconds, report.heartbeats, report.heartbeats_behind,
                )  # fmt: skip
        except Exception:
            # One bad cycle must not end evaluation for every monitor; /healthz reports a stall if it repeats.
            log.exception("evaluation cycle failed")
        collection.after_tick(evaluated)
        elapsed = asyncio.get_running_loop().time() - loop_started
        await asyncio.sleep(max(0.0, tick - elapsed))


async def _serve_health(runtime: Runtime) -> None:
    if runtime.metrics_socket is None:
        return
    runner = web.AppRunner(health_app(runtime.metrics, runtime.settings.stall_seconds), access_log=None)
    await runner.setup()
    await web.SockSite(runner, runtime.metrics_socket).start()
    runtime.web_runner = runner
    log.info("serving /metrics and /healthz on %s", runtime.settings.metrics_address)


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Kopf's settings for one raw event handler watching thousands of monitors."""
    settings.posting.level = logging.WARNING
    # Kopf logs every watch event of every object at INFO: one line per status write of every monitor.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.chunk_size = LIST_CHUNK
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    settings.persistence.diffbase_storage = NoDiffBase()
    # Resolve the ModelMonitor resource once; no cluster-wide CRD watch (and no RBAC for it) is needed.
    settings.scanning.disabled = True


# A startup that fails stops the operator (Kopf's default retries it every 60 s while the process looks alive).
@kopf.on.startup(errors=kopf.ErrorsMode.PERMANENT)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_kopf(settings)
    prepared = memo.get("runtime")  # `modelmonitor run` prepares it before starting Kopf
    runtime = (
        prepared if isinstance(prepared, Runtime) else await asyncio.to_thread(prepare, OperatorSettings.from_env())
    )
    memo["runtime"] = runtime
    if runtime.membership is not None:
        runtime.lease_thread = threading.Thread(
            target=lease_loop, args=(runtime, runtime.membership, runtime.lease_stop), name="lease", daemon=True
        )
        runtime.lease_thread.start()
    await _serve_health(runtime)
    runtime.task = asyncio.create_task(evaluation_loop(runtime), name="modelmonitor-evaluation")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        return
    if runtime.task is not None:
        runtime.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runtime.task
    runtime.lease_stop.set()
    if runtime.membership is not None:
        await asyncio.to_thread(runtime.membership.release)
    if runtime.web_runner is not None:
        await runtime.web_runner.cleanup()
    await asyncio.to_thread(runtime.evaluator.close)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def watched(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        return
    body = event["object"]
    meta = body.get("metadata", {})
    if event["type"] == "DELETED":
        runtime.registry.remove(meta.get("namespace", ""), meta.get("name", ""))
        return
    entry = runtime.registry.upsert(body)
    if entry.invalid_reason:
        log.warning("%s/%s: %s", entry.namespace, entry.name, entry.invalid_reason)
