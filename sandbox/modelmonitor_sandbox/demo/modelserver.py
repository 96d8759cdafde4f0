"""A small model server for the demo: one model version behind KServe's v1 protocol, with a finite capacity.

``POST /v1/models/<name>:predict`` takes ``{"instances": [{feature: value, ...}, ...]}`` and answers
``{"predictions": [{"prediction": 0 | 1, "score": p}, ...]}``. The server works like a single inference worker:
requests are served one at a time, each taking ``service`` + ``per_row`` x rows seconds (as if the model
computed that long), so requests arriving faster than it can serve wait in its queue, and latency grows with the
load. When ``max_queue`` requests are already waiting it sheds the next with 503, as Triton or TorchServe do
with a bounded queue, so an overloaded replica answers "busy" instead of holding requests for ever.

Run: ``python -m modelmonitor_sandbox.demo.modelserver --model registry/v1/model.json --listen 127.0.0.1:8080``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np
from aiohttp import web

from modelmonitor_sandbox.demo.world import COUNTRIES, FEATURES, Model

MODEL_KEY = web.AppKey("model", Model)


class Worker:
    """One inference worker: a FIFO queue in front of a fixed service time."""

    def __init__(self, service: float, per_row: float, max_queue: int) -> None:
        self.service = service
        self.per_row = per_row
        self.max_queue = max_queue
        self.waiting = 0
        self._lock = asyncio.Lock()  # asyncio.Lock wakes waiters in arrival order

    async def run(self, rows: int) -> bool:
        """Hold the worker for one request's service time; False when the queue is full (shed)."""
        if self.waiting >= self.max_queue:
            return False
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        try:
            await asyncio.sleep(self.service + self.per_row * rows)
        finally:
            self._lock.release()
        return True


WORKER_KEY = web.AppKey("worker", Worker)


def _rows(instances: list[object]) -> tuple[np.ndarray, np.ndarray]:
    numbers = np.empty((len(instances), len(FEATURES)))
    countries = np.empty(len(instances), dtype=object)
    for i, row in enumerate(instances):
        if isinstance(row, dict):
            numbers[i] = [float(row[name]) for name in FEATURES]
            countries[i] = str(row["country"])
        elif isinstance(row, list) and len(row) == len(FEATURES) + 1:
            numbers[i] = [float(v) for v in row[: len(FEATURES)]]
            countries[i] = str(row[-1])
        else:
            raise ValueError(f"instances[{i}]: expected an object with {', '.join(FEATURES)}, country")
    return numbers, countries


async def predict(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise ValueError("instances: expected a non-empty list")
        numbers, countries = _rows(instances)
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": f"bad request: {exc}"}, status=400)
    if not await request.app[WORKER_KEY].run(len(instances)):
        return web.json_response({"error": "overloaded: the queue is full"}, status=503)
    scores = request.app[MODEL_KEY].scores(numbers, countries.astype(str))
    predictions = [{"prediction": int(s >= 0.5), "score": round(float(s), 5)} for s in scores]
    return web.json_response({"predictions": predictions})


async def ready(request: web.Request) -> web.Response:
    model = request.app[MODEL_KEY]
    return web.json_response({"name": request.match_info["name"], "ready": True, "version": model.version})


def build_app(model: Model, worker: Worker) -> web.Application:
    app = web.Application()
    app[MODEL_KEY] = model
    app[WORKER_KEY] = worker
    app.router.add_post("/v1/models/{name}:predict", predict)
    app.router.add_get("/v1/models/{name}", ready)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelmonitor_sandbox.demo.modelserver", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", required=True, type=Path, help="the model version's model.json")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT")
    parser.add_argument("--service-ms", type=float, default=15.0, help="fixed time per request, in ms")
    parser.add_argument("--per-row-ms", type=float, default=2.0, help="extra time per instance, in ms")
    parser.add_argument("--max-queue", type=int, default=40, help="requests that may wait; more get 503")
    args = parser.parse_args(argv)
    model = Model.from_json(json.loads(args.model.read_text()))
    if len(model.weights) != len(FEATURES) + len(COUNTRIES) - 1:
        parser.error(f"{args.model}: {len(model.weights)} weights, expected {len(FEATURES) + len(COUNTRIES) - 1}")
    host, _, port = args.listen.rpartition(":")
    worker = Worker(args.service_ms / 1000, args.per_row_ms / 1000, args.max_queue)
    web.run_app(build_app(model, worker), host=host or "127.0.0.1", port=int(port), access_log=None, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
