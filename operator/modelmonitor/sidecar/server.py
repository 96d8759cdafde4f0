"""The sidecar's HTTP server (aiohttp): push API, label API, /metrics, /healthz, and the reverse proxy.

Proxy mode forwards every other path to the model server unchanged (method, path, query, headers, body) and
returns the model's answer unchanged. What it learns from the call (features, predictions, latency, status) is
recorded *after* the answer is handed back, in a callback that can fail without the client noticing: a
monitoring failure never breaks the model call, it is counted in ``modelmonitor_proxy_unmonitored_total``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from modelmonitor.sidecar.encode import BatchError
from modelmonitor.sidecar.events import decode_json, parse_event_document, parse_label_document
from modelmonitor.sidecar.monitor import EventBatch, Monitor
from modelmonitor.sidecar.payloads import Extracted, FieldMapping, extract

log = logging.getLogger("modelmonitor.sidecar")

# Headers that describe one connection, not the message (RFC 9110 section 7.6.1), plus the ones aiohttp sets
# itself from the body it sends.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length",
    }
)  # fmt: skip

REQUEST_ID_HEADERS = ("x-request-id", "ce-id", "x-b3-traceid")


@dataclass(frozen=True)
class ServerSettings:
    """Limits and the upstream of one sidecar server."""

    upstream: str | None = None
    """Base URL of the model server (proxy mode); None: push mode only."""
    mapping: FieldMapping | None = None
    """Where features and predictions are in proxied payloads other than KServe v1 / OIP v2."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest /v1/events or /v1/labels body; bigger ones get 413 (``too_large``)."""
    max_events: int = 100_000
    """Most events (or labels) in one push batch."""
    max_proxy_body_bytes: int = 64 * 1024 * 1024
    """Largest proxied request body (the model server may have its own, smaller limit)."""
    upstream_timeout_seconds: float = 60.0
    """How long a proxied call may take before the client gets 504."""
    offload_bytes: int = 256 * 1024
    """Push bodies above this size are decoded and ingested in a worker thread, keeping the proxy responsive."""
    flush_seconds: float = 0.05
    """Proxied calls are ingested in batches at most this old: one numpy pass for many calls."""


class PayloadTooLarge(Exception):
    """A body over the configured limit."""


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The request body, refusing (before reading it all) anything over ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body: {request.content_length} bytes, at most {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body: more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _ProxyCounters(Collector):
    """Counts proxied calls whose monitoring was skipped (the call itself went through)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.skipped: dict[str, int] = {}

    def count(self, reason: str, calls: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + calls

    def collect(self) -> Any:
        family = CounterMetricFamily(
            "modelmonitor_proxy_unmonitored",
            "Proxied calls passed to the model but not monitored, by reason.",
            labels=["model", "version", "reason"],
        )
        for reason in ("unrecognized_payload", "monitoring_error", *sorted(self.skipped)):
            family.add_metric([self.monitor.model, self.monitor.version, reason], self.skipped.get(reason, 0))
            self.skipped.setdefault(reason, 0)
        yield family

    def describe(self) -> Any:
        yield CounterMetricFamily("modelmonitor_proxy_unmonitored", "", labels=["model", "version", "reason"])


class SidecarServer:
    """Routes and state of one sidecar; :meth:`app` builds the aiohttp application."""

    def __init__(self, monitor: Monitor, settings: ServerSettings, registry: CollectorRegistry) -> None:
        self.monitor = monitor
        self.settings = settings
        self.registry = registry
        self.proxy_counters = _ProxyCounters(monitor)
        registry.register(monitor.collector())
        registry.register(self.proxy_counters)
        self._session: aiohttp.ClientSession | None = None
        self._last_warning = 0.0
        self._queue: list[Extracted] = []
        self._flush_handle: asyncio.TimerHandle | None = None

    def app(self) -> web.Application:
        """The aiohttp application (the proxy catch-all only when an upstream is set)."""
        app = web.Application(client_max_size=self.settings.max_proxy_body_bytes)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/v1/events", self.events)
        app.router.add_post("/v1/labels", self.labels)
        if self.settings.upstream:
            app.router.add_route("*", "/{tail:.*}", self.proxy)
            app.cleanup_ctx.append(self._client_session)
        app.on_cleanup.append(self._close_label_store)
        return app

    async def _close_label_store(self, app: web.Application) -> None:
        # The last proxied calls' predictions go to the store before it writes its queue one last time.
        self.flush()
        await asyncio.to_thread(self.monitor.labels.close)

    async def _client_session(self, app: web.Application) -> Any:
        # One pooled session for the sidecar's lifetime, created inside the running loop (not at import).
        timeout = aiohttp.ClientTimeout(total=self.settings.upstream_timeout_seconds)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False)
        yield
        await self._session.close()

    # --- plain endpoints --------------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness/readiness: the sidecar serves; says which model and profile."""
        m = self.monitor
        return web.json_response(
            {
                "status": "ok",
                "model": m.model,
                "version": m.version,
                "mode": "proxy" if self.settings.upstream else "push",
                "features": len(m.profile.features),
                "window_size": m.window_size,
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus exposition; scores are computed in a worker thread so the proxy keeps flowing."""
        self.flush()
        body = await asyncio.to_thread(generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _refuse(self, error: BatchError | PayloadTooLarge) -> web.Response:
        reason = error.reason if isinstance(error, BatchError) else "too_large"
        self.monitor.reject(reason)
        status = 413 if reason in {"too_large", "too_many_events"} else 400
        return web.json_response({"error": str(error), "reason": reason}, status=status)

    async def events(self, request: web.Request) -> web.Response:
        """``POST /v1/events``: a JSON batch of prediction events (see docs/sidecar.md)."""
        try:
            body = await read_limited(request, self.settings.max_body_bytes)
            if len(body) > self.settings.offload_bytes:
                count = await asyncio.to_thread(self._ingest_events, body)
            else:
                count = self._ingest_events(body)
        except (BatchError, PayloadTooLarge) as error:
            return self._refuse(error)
        return web.json_response({"accepted": count}, status=202)

    def _ingest_events(self, body: bytes) -> int:
        batch = parse_event_document(decode_json(body), self.monitor.encoder, max_events=self.settings.max_events)
        self.monitor.ingest(batch)
        return batch.size

    async def labels(self, request: web.Request) -> web.Response:
        """``POST /v1/labels``: true labels joined to stored predictions by request id."""
        try:
            body = await read_limited(request, self.settings.max_body_bytes)
            pairs = parse_label_document(decode_json(body), max_labels=self.settings.max_events)
        except (BatchError, PayloadTooLarge) as error:
            return self._refuse(error)
        # Proxied predictions wait up to flush_seconds for their batched ingest: a label that follows its
        # prediction closely must still find it.
        self.flush()
        # A shared store answers over the network: off the event loop, so the proxy keeps flowing.
        results = await asyncio.to_thread(self.monitor.log_labels, pairs)
        return web.json_response({k: results.get(k, 0) for k in ("joined", "unmatched", "duplicate", "deferred")})

    # --- proxy ------------------------------------------------------------------------------------------------

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """Forward to the model server unchanged; observe the exchange after answering."""
        assert self._session is not None and self.settings.upstream is not None
        try:
            body = await read_limited(request, self.settings.max_proxy_body_bytes)
        except PayloadTooLarge as error:
            return web.json_response({"error": str(error)}, status=413)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        url = self.settings.upstream.rstrip("/") + request.rel_url.raw_path_qs
        started = time.perf_counter()
        try:
            async with self._session.request(request.method, url, headers=headers, data=body) as upstream:
                payload = await upstream.read()
                status = upstream.status
                response_headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP]
        except TimeoutError:
            self._observe_failure(504, time.perf_counter() - started)
            return web.json_response({"error": "model server timed out"}, status=504)
        except aiohttp.ClientError as error:
            self._observe_failure(502, time.perf_counter() - started)
            return web.json_response({"error": f"model server unreachable: {error}"}, status=502)
        latency = time.perf_counter() - started
        response = web.Response(body=payload, status=status)
        for key, value in response_headers:
            response.headers.add(key, value)
        if request.method == "POST":
            # After the response is handed to aiohttp: monitoring never delays or breaks the answer.
            request_id = next((request.headers[h] for h in REQUEST_ID_HEADERS if h in request.headers), None)
            asyncio.get_running_loop().call_soon(self._observe, body, payload, status, latency, request_id)
        else:
            self.monitor.record_request(status, latency)
        return response

    def _observe_failure(self, status: int, latency: float) -> None:
        try:
            self.monitor.record_request(status, latency)
        except Exception:  # never let monitoring turn a 502 into a 500
            log.exception("recording a failed model call")

    def _observe(self, body: bytes, payload: bytes, status: int, latency: float, request_id: str | None) -> None:
        """Count the call now; queue what it carried for the next batched ingest (one numpy pass per batch)."""
        monitor = self.monitor
        try:
            monitor.record_request(status, latency)
            request = decode_json(body)
            response = decode_json(payload) if status < 400 else None
            found = extract(
                request,
                response,
                feature_names=monitor.encoder.names,
                positive_class=monitor.profile.positive_class,
                header_request_id=request_id if status < 400 else None,
                mapping=self.settings.mapping,
            )
            if status >= 400:
                found = replace(found, request_ids=None)  # no prediction to join a label to
        except BatchError as error:
            self.proxy_counters.count("unrecognized_payload")
            self._warn(f"proxied call not monitored: {error}")
            return
        except Exception as error:  # a monitoring bug must not take the proxy down
            self.proxy_counters.count("monitoring_error")
            self._warn(f"proxied call not monitored (internal error): {error!r}")
            return
        self._queue.append(found)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self.settings.flush_seconds, self.flush)

    def flush(self) -> None:
        """Ingest the queued proxied calls as one batch (also run before every scrape)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        queued, self._queue = self._queue, []
        if not queued:
            return
        try:
            for batch in _batches(queued, self.monitor):
                self.monitor.ingest(batch, count_requests=False)
        except BatchError as error:
            self.proxy_counters.count("unrecognized_payload", len(queued))
            self._warn(f"proxied calls not monitored: {error}")
        except Exception as error:
            self.proxy_counters.count("monitoring_error", len(queued))
            self._warn(f"proxied calls not monitored (internal error): {error!r}")

    def _warn(self, message: str) -> None:
        # At most one line per 10 s: a client sending a shape we do not understand must not flood the log.
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning(message)


def _batches(queued: list[Extracted], monitor: Monitor) -> list[EventBatch]:
    """One batch for all queued row-shaped calls (plus one per column-shaped OIP v2 call, rare)."""
    batches: list[EventBatch] = []
    rows: list[Any] = []
    predictions: list[Any] = []
    scores: list[float | None] = []
    request_ids: list[str | None] = []
    groups: list[Any] = []
    any_prediction = any_score = any_group = False
    for found in queued:
        if found.columns is not None:
            batches.append(
                EventBatch(
                    features=monitor.encoder.encode_columns(found.columns, found.size),
                    request_ids=found.request_ids,
                    predictions=found.predictions,
                    scores=None if found.scores is None else _float_array(found.scores),
                    groups=found.groups,
                )
            )
            continue
        n = found.size
        rows.extend(found.rows or [])
        predictions.extend(found.predictions if found.predictions is not None else [None] * n)
        scores.extend(found.scores if found.scores is not None else [None] * n)
        request_ids.extend(found.request_ids if found.request_ids is not None else [None] * n)
        groups.extend(found.groups if found.groups is not None else [None] * n)
        any_prediction |= found.predictions is not None
        any_score |= found.scores is not None
        any_group |= found.groups is not None
    if rows:
        batches.append(
            EventBatch(
                features=monitor.encoder.encode_rows(rows),
                request_ids=request_ids,
                predictions=predictions if any_prediction else None,
                scores=_float_array(scores) if any_score else None,
                groups=groups if any_group else None,
            )
        )
    return batches


def _float_array(values: list[float | None]) -> Any:
    import numpy as np

    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
