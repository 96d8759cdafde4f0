"""The demo's clients: real HTTP prediction requests through the sidecars, and the true labels a little later.

Requests arrive at random (a Poisson process at ``rate`` per second), each carrying a few transactions of the
world's current era as KServe v1 ``instances`` and an ``X-Request-Id``. Each goes to one of the live sidecars
(the Service's endpoints: one per Running pod), which forwards it to its model server and records what went in
and out. ``label_delay`` seconds after an answer, the truth about each transaction is posted to whichever live
sidecar the Service picks (``/v1/labels``, ids ``<request id>:<row>``; the sidecars share a Redis label store, so
any replica joins any label), like chargebacks arriving after the fact from a pipeline that knows nothing of pods,
and kept in the `Warehouse` where a retraining pipeline finds fresh labeled data.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import orjson

from modelmonitor_sandbox.demo.world import BEFORE, Era, Transactions, sample

PREDICT_PATH = "/v1/models/fraud:predict"


class Endpoints:
    """The live sidecars traffic may go to (what a Service's endpoints would list). Thread-safe."""

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, pod: str, url: str) -> None:
        with self._lock:
            self._urls[pod] = url

    def remove(self, pod: str) -> None:
        with self._lock:
            self._urls.pop(pod, None)

    def urls(self) -> list[str]:
        with self._lock:
            return list(self._urls.values())


class Warehouse:
    """Labeled transactions in arrival order (the label pipeline's sink); bounded. Thread-safe."""

    def __init__(self, max_chunks: int = 20_000) -> None:
        self._chunks: deque[tuple[float, Transactions]] = deque(maxlen=max_chunks)
        self._lock = threading.Lock()

    def add(self, batch: Transactions, at: float | None = None) -> None:
        with self._lock:
            self._chunks.append((time.time() if at is None else at, batch))

    def since(self, start: float) -> Transactions | None:
        """Everything labeled at or after ``start`` (epoch seconds), or None."""
        with self._lock:
            parts = [batch for at, batch in self._chunks if at >= start]
        return Transactions.concat(parts) if parts else None

    def rows_since(self, start: float) -> int:
        with self._lock:
            return sum(len(batch) for at, batch in self._chunks if at >= start)


@dataclass
class TrafficStats:
    """Counters since the start (a snapshot is a copy)."""

    requests: int = 0
    answered: int = 0
    shed: int = 0  # 503: a replica's queue was full
    failed: int = 0  # other errors, timeouts, unreachable sidecars
    no_endpoint: int = 0
    rows: int = 0
    labels: int = 0


@dataclass
class Traffic:
    """Open-loop load: ``rate`` requests per second of ``rows`` transactions each, of the world's ``era``.
    ``rate`` and ``era`` may be changed while it runs."""

    endpoints: Endpoints
    warehouse: Warehouse
    rate: float = 50.0
    era: Era = BEFORE
    rows: tuple[int, int] = (2, 8)
    label_delay: float = 2.0
    seed: int = 7
    stats: TrafficStats = field(default_factory=TrafficStats)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="demo-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def snapshot(self) -> TrafficStats:
        with self._lock:
            return TrafficStats(**vars(self.stats))

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    async def _main(self) -> None:
        rng = np.random.default_rng(self.seed)
        choose = random.Random(self.seed)  # which replica serves a request (a Service's load balancing)
        pending: deque[tuple[float, list[str], Transactions]] = deque()
        in_flight: set[asyncio.Task[None]] = set()
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            labels = asyncio.create_task(self._deliver_labels(session, pending, random.Random(self.seed + 1)))
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            counter = 0
            while not self._stop.is_set():
                next_at += rng.exponential(1.0 / max(self.rate, 0.1))
                wait = next_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif wait < -1.0:
                    next_at = loop.time()  # fell behind (a stalled machine): no burst to catch up
                urls = self.endpoints.urls()
                if not urls:
                    self._count(no_endpoint=1)
                    continue
                counter += 1
                batch = sample(rng, int(rng.integers(self.rows[0], self.rows[1] + 1)), self.era)
                task = asyncio.create_task(self._call(session, choose.choice(urls), f"r{counter}", batch, pending))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            labels.cancel()
            for task in list(in_flight):
                task.cancel()
            await asyncio.gather(labels, *in_flight, return_exceptions=True)

    async def _call(
        self,
        session: aiohttp.ClientSession,
        url: str,
        request_id: str,
        batch: Transactions,
        pending: deque[tuple[float, list[str], Transactions]],
    ) -> None:
        body = orjson.dumps({"instances": batch.instances()})
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        self._count(requests=1)
        try:
            async with session.post(url + PREDICT_PATH, data=body, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            self._count(failed=1)
            return
        if status == 503:
            self._count(shed=1)
        elif status != 200:
            self._count(failed=1)
        else:
            self._count(answered=1, rows=len(batch))
            ids = [f"{request_id}:{i}" for i in range(len(batch))]
            pending.append((time.monotonic() + self.label_delay, ids, batch))

    async def _deliver_labels(
        self,
        session: aiohttp.ClientSession,
        pending: deque[tuple[float, list[str], Transactions]],
        choose: random.Random,
    ) -> None:
        while True:
            await asyncio.sleep(0.25)
            due: list[tuple[list[str], Transactions]] = []
            now = time.monotonic()
            # Answers arrive roughly in order; a late one waits for the next round.
            while pending and pending[0][0] <= now:
                _, ids, batch = pending.popleft()
                due.append((ids, batch))
            if not due:
                continue
            labels = [
                {"request_id": rid, "label": int(truth)}
                for ids, batch in due
                for rid, truth in zip(ids, batch.fraud, strict=True)
            ]
            for _, batch in due:
                self.warehouse.add(batch)  # the truth is known whether or not a sidecar can still join it
            urls = self.endpoints.urls()
            if not urls:
                continue  # no replica to take them: lost, as in production without a queue in front
            try:
                # The Service's choice, not the replica that served: the shared label store joins them anywhere.
                url = choose.choice(urls) + "/v1/labels"
                async with session.post(url, data=orjson.dumps({"labels": labels})) as response:
                    await response.read()
                    if response.status == 200:
                        self._count(labels=len(labels))
            except (aiohttp.ClientError, TimeoutError):
                pass  # the replica went away mid-request: these labels are lost, as in production
