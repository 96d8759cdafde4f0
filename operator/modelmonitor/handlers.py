"""The Kopf shell: the only module that knows Kopf.

Kopf watches ModelMonitors and feeds every change into the loop's `Registry` (a raw event handler: no
finalizers, so deleting a monitor never hangs while the operator is down, and no per-object handler state).
`prepare` builds the clients once, before Kopf starts, and checks everything a start needs (the Kubernetes
configuration, the API server and the ModelMonitor CRD on it, the metrics port): a start that cannot complete
fails at once with a `StartupError` naming what failed, rather than retrying in the background while looking
alive. A startup handler then starts the evaluation task and the /metrics + /healthz server; the task calls
`Evaluator.cycle` on every tick from a worker thread, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import Any

import kopf
from aiohttp import web

from modelmonitor.actions import CrashHook, Remediator
from modelmonitor.adapters.alertmanager import HttpAlertSender
from modelmonitor.adapters.kubernetes import Kind, KubernetesClient, KubernetesError, load_config
from modelmonitor.adapters.registry import RegistryConnections
from modelmonitor.api import GROUP, KIND, PLURAL, VERSION
from modelmonitor.loop import Evaluator, Registry
from modelmonitor.operator_metrics import OperatorMetrics, health_app
from modelmonitor.settings import OperatorSettings

log = logging.getLogger("modelmonitor.operator")


@dataclass
class Runtime:
    """Everything built once at start, kept in Kopf's memo."""

    settings: OperatorSettings
    registry: Registry
    evaluator: Evaluator
    metrics: OperatorMetrics
    #: The /metrics and /healthz socket, bound by `prepare` so that a port in use stops the start.
    metrics_socket: socket.socket | None = None
    task: asyncio.Task[None] | None = None
    web_runner: web.AppRunner | None = None


class StartupError(RuntimeError):
    """The operator cannot start; the message names what failed (the kubeconfig, the API server, the CRD, the port)."""


def prepare(settings: OperatorSettings) -> Runtime:
    """Check what a start needs and build the clients once: one Kubernetes client shared by the loop and the
    actions. Raises `StartupError` naming the first thing that failed."""
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
    metrics = OperatorMetrics(monitors=registry)  # /metrics mirrors each monitor's last status
    registries = RegistryConnections(kube, secret_ttl_seconds=settings.secret_ttl_seconds)
    actions = Remediator(kube, HttpAlertSender(), crash=CrashHook.from_env(), registries=registries)
    evaluator = Evaluator(settings, registry, kube, actions, metrics)
    return Runtime(settings, registry, evaluator, metrics, metrics_socket)


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


async def evaluation_loop(runtime: Runtime) -> None:
    tick = runtime.settings.tick_seconds
    while True:
        loop_started = asyncio.get_running_loop().time()
        try:
            report = await asyncio.to_thread(runtime.evaluator.cycle)
            if report.evaluated or report.invalid:
                log.info(
                    "cycle: %d monitors evaluated, %d invalid, %d queries (%d failed), %.2f s",
                    report.evaluated, report.invalid, report.queries, report.failed_queries, report.seconds,
                )  # fmt: skip
        except Exception:
            # One bad cycle must not end evaluation for every monitor; /healthz reports a stall if it repeats.
            log.exception("evaluation cycle failed")
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


# A startup that fails stops the operator (Kopf's default retries it every 60 s while the process looks alive).
@kopf.on.startup(errors=kopf.ErrorsMode.PERMANENT)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    # Kopf logs every watch event of every object at INFO: one line per status write of every monitor.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Resolve the ModelMonitor resource once; no cluster-wide CRD watch (and no RBAC for it) is needed.
    settings.scanning.disabled = True
    prepared = memo.get("runtime")  # `modelmonitor run` prepares it before starting Kopf
    runtime = (
        prepared if isinstance(prepared, Runtime) else await asyncio.to_thread(prepare, OperatorSettings.from_env())
    )
    memo["runtime"] = runtime
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
