"""The Kopf shell: the only module that knows Kopf.

Kopf watches ModelMonitors and feeds every change into the loop's `Registry` (a raw event handler: no
finalizers, so deleting a monitor never hangs while the operator is down, and no per-object handler state).
A startup handler builds the clients once and starts the evaluation task and the /metrics + /healthz server;
the task calls `Evaluator.cycle` on every tick from a worker thread, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import kopf
from aiohttp import web

from modelmonitor.actions import Actions, CrashHook, Remediator
from modelmonitor.adapters.alertmanager import HttpAlertSender
from modelmonitor.adapters.kubernetes import KubernetesClient, load_config
from modelmonitor.adapters.registry import RegistryConnections
from modelmonitor.api import GROUP, PLURAL, VERSION
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
    task: asyncio.Task[None] | None = None
    web_runner: web.AppRunner | None = None


def build_runtime(settings: OperatorSettings, actions: Actions | None = None) -> Runtime:
    """Build the clients once: one Kubernetes client shared by the loop and the actions."""
    load_config()
    registry = Registry()
    metrics = OperatorMetrics(monitors=registry)  # /metrics mirrors each monitor's last status
    kube = KubernetesClient()
    if actions is None:
        registries = RegistryConnections(kube, secret_ttl_seconds=settings.secret_ttl_seconds)
        actions = Remediator(kube, HttpAlertSender(), crash=CrashHook.from_env(), registries=registries)
    evaluator = Evaluator(settings, registry, kube, actions, metrics)
    return Runtime(settings, registry, evaluator, metrics)


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
    address = runtime.settings.metrics_address
    if not address:
        return
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(health_app(runtime.metrics, runtime.settings.stall_seconds), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    runtime.web_runner = runner
    log.info("serving /metrics and /healthz on %s", address)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    # Kopf logs every watch event of every object at INFO: one line per status write of every monitor.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Resolve the ModelMonitor resource once; no cluster-wide CRD watch (and no RBAC for it) is needed.
    settings.scanning.disabled = True
    prepared = memo.get("runtime")  # tests may pass a prepared runtime in the memo
    runtime = (
        prepared
        if isinstance(prepared, Runtime)
        else await asyncio.to_thread(build_runtime, OperatorSettings.from_env())
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
