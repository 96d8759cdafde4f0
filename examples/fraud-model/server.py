"""A small fraud model served over the KServe v1 protocol, for the examples and the kind walkthrough.

Standard library only, so it runs in the stock python:3.11-slim image from a ConfigMap. The model is a fixed
logistic score over the transaction features; MODEL_VERSION names it and EXTRA_LATENCY_SECONDS slows every call
(to watch a latency policy fire).

    POST /v1/models/fraud:predict  {"instances": [{"amount": 1.2, "velocity": 0.3, ...}, ...]}
                                   -> {"predictions": [{"label": 1, "score": 0.83}, ...]}
    GET  /v1/models/fraud          -> {"name": "fraud", "version": ..., "ready": true}   (readiness)

Run: python server.py [--port 8080]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "fraud"
FEATURES = ("amount", "velocity", "account_age", "distance")


def score(row: dict[str, Any] | list[Any]) -> float:
    """Probability of fraud for one transaction (an object of features, or a list in FEATURES order)."""
    values = dict(zip(FEATURES, row, strict=False)) if isinstance(row, list) else row
    x = {name: float(values.get(name) or 0.0) for name in FEATURES}
    logit = 2.5 * x["amount"] - 2.0 * x["velocity"] + 1.5 * x["distance"]
    return 1.0 / (1.0 + math.exp(-logit))


class Handler(BaseHTTPRequestHandler):
    server_version = "fraud-model/1"

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == f"/v1/models/{MODEL}":
            self._send(200, {"name": MODEL, "version": os.environ.get("MODEL_VERSION", "v1"), "ready": True})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path != f"/v1/models/{MODEL}:predict":
            self._send(404, {"error": f"no route {self.path}"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            instances = body["instances"]
            scores = [score(row) for row in instances]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._send(400, {"error": f'expected {{"instances": [row, ...]}}: {exc}'})
            return
        time.sleep(float(os.environ.get("EXTRA_LATENCY_SECONDS") or 0))
        self._send(200, {"predictions": [{"label": int(s > 0.5), "score": round(s, 5)} for s in scores]})

    def log_message(self, format: str, *args: Any) -> None:  # one line per call is noise at any real rate
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
