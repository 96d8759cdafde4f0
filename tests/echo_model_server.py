"""A real model-server process for tests of the proxy: answers KServe v1 and Open Inference Protocol v2 calls
with predictions derived from a digest of the request body, so a test can tell byte for byte whether the answer
it got through the sidecar is the one the model gave.

Run as ``python tests/echo_model_server.py PORT``.

* ``POST /v1/models/<name>:predict`` with ``{"instances": [...]}``: ``{"predictions": [{"prediction": 0|1,
  "score": s}, ...]}``, one per instance.
* ``POST /v2/models/<name>/infer`` with ``{"inputs": [...]}``: one ``FP32`` output tensor of probabilities, one
  per row of the first input.
* Anything else the model cannot read: 400 with the model's own error body; ``GET`` anything: 200 ``ok``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

from aiohttp import web


def _scores(body: bytes, count: int) -> list[float]:
    digest = hashlib.sha256(body).digest()
    return [round(digest[i % len(digest)] / 255, 4) for i in range(count)]


def _rows(document: Any, key: str) -> int | None:
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        return None
    items = document[key]
    if key == "inputs":
        first = items[0] if items else None
        shape = first.get("shape") if isinstance(first, dict) else None
        return int(shape[0]) if isinstance(shape, list) and shape and isinstance(shape[0], int) else None
    return len(items)


async def predict(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        document = json.loads(body)
    except ValueError:
        return web.json_response({"error": "model: request is not JSON"}, status=400)
    if request.path.startswith("/v1/"):
        rows = _rows(document, "instances")
        if rows is None or rows > 10_000:
            return web.json_response({"error": "model: expected {'instances': [...]}"}, status=400)
        scores = _scores(body, rows)
        return web.json_response({"predictions": [{"prediction": int(s >= 0.5), "score": s} for s in scores]})
    rows = _rows(document, "inputs")
    if rows is None or not 0 <= rows <= 10_000:
        return web.json_response({"error": "model: expected {'inputs': [tensor, ...]}"}, status=400)
    outputs = [{"name": "probability", "shape": [rows], "datatype": "FP32", "data": _scores(body, rows)}]
    return web.json_response({"model_name": request.match_info.get("name", ""), "outputs": outputs})


async def ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/models/{name}:predict", predict)
    app.router.add_post("/v2/models/{name}/infer", predict)
    app.router.add_post("/{tail:.*}", predict)
    app.router.add_get("/{tail:.*}", ok)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
