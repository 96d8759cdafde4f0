"""A synthetic sidecar fleet in one process: the modelmonitor_* series of N models on one /metrics endpoint.

For the operator scale benchmark: Prometheus scrapes this one target (its scrape config adds the ``namespace``
label), and every model looks like a healthy sidecar (docs/metrics.md names and labels): label-joined outcomes
(accuracy about 0.98), requests and errors (error rate about 0.5 %), a latency histogram (p95 about 80 ms).
Rates differ per model by a fixed factor so the series are not all identical.

A model is switched to "bad" (accuracy near 0, error rate 50 %, latency p95 about 2 s) at run time with
``POST /models/<name>/bad`` (``/good`` switches it back); the answer holds the wall time of the switch. Counters
stay monotonic across switches: each is integrated piecewise from the rates in force.

Run as ``python bench/synthetic_exporter.py --port PORT --models N``; ``GET /healthz`` answers once serving.
Only the standard library and numpy: the exporter must cost little next to what is measured.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

VERSION = "v1"
#: Latency bucket bounds (seconds), as a sidecar profile would set them.
LATENCY_BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class Rates:
    """Per-second rates of one model's counters in one state."""

    tp: float
    fp: float
    tn: float
    fn: float
    requests_ok: float
    requests_error: float
    #: Share of requests at or below each bound of LATENCY_BOUNDS (cumulative), +Inf implied at 1.
    latency_cdf: tuple[float, ...]
    latency_mean: float


GOOD = Rates(
    tp=5.0, fp=0.1, tn=4.8, fn=0.1, requests_ok=10.0, requests_error=0.05,
    latency_cdf=(0.05, 0.3, 0.7, 0.97, 0.995, 0.999, 1.0, 1.0), latency_mean=0.045,
)  # fmt: skip
BAD = Rates(
    tp=0.0, fp=200.0, tn=0.0, fn=200.0, requests_ok=10.0, requests_error=10.0,
    latency_cdf=(0.0, 0.0, 0.01, 0.05, 0.2, 0.4, 0.7, 0.96), latency_mean=1.2,
)  # fmt: skip


def model_name(index: int) -> str:
    """The model (and ModelMonitor) name of the index-th model: sortable, so creation order is name order."""
    return f"model-{index:05d}"


class Fleet:
    """Counter totals of every model, integrated from the rates in force since each model's last switch."""

    def __init__(self, models: int, rng: np.random.Generator) -> None:
        self.names = [model_name(i) for i in range(models)]
        self.index = {name: i for i, name in enumerate(self.names)}
        # A fixed per-model traffic factor: models differ, but each keeps its own shape.
        self.factor = rng.uniform(0.5, 2.0, size=models)
        self.lock = threading.Lock()
        self.started = time.time()
        # Totals accumulated up to `since` under earlier states, and the state in force since then.
        self.since = np.full(models, self.started)
        self.bad = np.zeros(models, dtype=bool)
        self.base: dict[str, np.ndarray] = {key: np.zeros(models) for key in self._keys()}
        prefix = [f'model="{name}",version="{VERSION}"' for name in self.names]
        self.prefix = prefix

    @staticmethod
    def _keys() -> list[str]:
        keys = ["tp", "fp", "tn", "fn", "ok", "error", "sum"]
        keys += [f"le{i}" for i in range(len(LATENCY_BOUNDS))]
        return keys

    @staticmethod
    def _rate(rates: Rates, key: str) -> float:
        requests = rates.requests_ok + rates.requests_error
        if key in ("tp", "fp", "tn", "fn"):
            return float(getattr(rates, key))
        if key == "ok":
            return rates.requests_ok
        if key == "error":
            return rates.requests_error
        if key == "sum":
            return requests * rates.latency_mean
        return requests * rates.latency_cdf[int(key[2:])]

    def _rates(self, key: str) -> np.ndarray:
        """Per-model rate of one counter under each model's current state."""
        return np.where(self.bad, self._rate(BAD, key), self._rate(GOOD, key)) * self.factor

    def totals(self, now: float) -> dict[str, np.ndarray]:
        with self.lock:
            elapsed = now - self.since
            return {key: self.base[key] + self._rates(key) * elapsed for key in self.base}

    def switch(self, name: str, bad: bool) -> float:
        """Put one model in the bad (or good) state from now on; returns the wall time of the switch."""
        i = self.index[name]
        with self.lock:
            now = time.time()
            elapsed = now - self.since[i]
            for key in self.base:
                self.base[key][i] += self._rates(key)[i] * elapsed
            self.since[i] = now
            self.bad[i] = bad
            return now

    def exposition(self) -> bytes:
        """The text exposition format of every series of every model."""
        totals = self.totals(time.time())
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")

        def rows(metric: str, extra: str, values: np.ndarray) -> None:
            text = values.astype(str)  # numpy formats all values in one call; plain Python would dominate
            out.extend(f"{metric}{{{p}{extra}}} {v}\n" for p, v in zip(self.prefix, text, strict=True))

        family("modelmonitor_labeled_predictions_total", "counter", "predictions joined with a late label")
        for outcome in ("tp", "fp", "tn", "fn"):
            rows("modelmonitor_labeled_predictions_total", f',group="all",outcome="{outcome}"', totals[outcome])
        family("modelmonitor_requests_total", "counter", "prediction requests seen")
        rows("modelmonitor_requests_total", ',code="2xx"', totals["ok"])
        rows("modelmonitor_requests_total", ',code="5xx"', totals["error"])
        family("modelmonitor_request_errors_total", "counter", "requests the model answered with an error")
        rows("modelmonitor_request_errors_total", "", totals["error"])
        family("modelmonitor_request_duration_seconds", "histogram", "model latency as seen by the sidecar")
        count = totals["ok"] + totals["error"]
        for i, bound in enumerate(LATENCY_BOUNDS):
            rows("modelmonitor_request_duration_seconds_bucket", f',le="{bound}"', totals[f"le{i}"])
        rows("modelmonitor_request_duration_seconds_bucket", ',le="+Inf"', count)
        rows("modelmonitor_request_duration_seconds_sum", "", totals["sum"])
        rows("modelmonitor_request_duration_seconds_count", "", count)
        return "".join(out).encode()

    @property
    def series_per_model(self) -> int:
        return 4 + 2 + 1 + len(LATENCY_BOUNDS) + 3


def make_handler(fleet: Fleet) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, fleet.exposition(), "text/plain; version=0.0.4; charset=utf-8")
            elif self.path == "/healthz":
                self._reply(200, b"ok\n", "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def do_POST(self) -> None:
            parts = self.path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "models" or parts[2] not in ("bad", "good"):
                self._reply(404, b"expected POST /models/<name>/bad or /good\n", "text/plain")
                return
            if parts[1] not in fleet.index:
                self._reply(404, f"no model {parts[1]!r}\n".encode(), "text/plain")
                return
            switched = fleet.switch(parts[1], bad=parts[2] == "bad")
            body = json.dumps({"model": parts[1], "state": parts[2], "switched_at": switched}).encode()
            self._reply(200, body, "application/json")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per scrape would only be noise

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to serve on (127.0.0.1)")
    parser.add_argument("--models", type=int, required=True, help="number of models to export")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-model traffic factors")
    args = parser.parse_args()
    if args.models < 1:
        parser.error(f"--models {args.models}: expected at least 1")
    fleet = Fleet(args.models, np.random.default_rng(args.seed))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(fleet))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
