"""A fake Prometheus query API on loopback whose answers go wrong in chosen ways, one way per URL prefix.

A monitor whose ``spec.prometheus.url`` is ``<server.url>/<mode>`` gets the answers of ``mode`` for every query:

- ``breach``: a well-formed vector with one sample of value 5 (the control: a monitor acts on it);
- ``empty``: a well-formed empty vector (NoData);
- ``slow``: the whole answer after ``slow_seconds``;
- ``trickle``: a well-formed answer sent one byte every 0.2 s, so no single read times out;
- ``truncated``: half of a well-formed answer, then the connection closes;
- ``garbage``: bytes that are not JSON;
- ``html``: an HTML error page with status 502, as a gateway sends;
- ``wrongshape``: JSON, but ``data.result`` is a string;
- ``huge``: a well-formed vector of ``huge_bytes`` bytes, generated while sent (never held in memory here).

Counts the queries it answered per mode in ``served``. Runs in a daemon thread; `close` stops it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("breach", "empty", "slow", "trickle", "truncated", "garbage", "html", "wrongshape", "huge")


def _vector(samples: list[tuple[dict[str, str], float]]) -> bytes:
    result = [{"metric": labels, "value": [time.time(), str(value)]} for labels, value in samples]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


class FaultyPrometheus:
    def __init__(self, slow_seconds: float = 30.0, huge_bytes: int = 256 * 1024 * 1024) -> None:
        self.slow_seconds = slow_seconds
        self.huge_bytes = huge_bytes
        self.served: Counter[str] = Counter()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                mode = self.path.lstrip("/").split("/", 1)[0]
                if mode not in MODES or "/api/v1/query" not in self.path:
                    self.send_error(404)
                    return
                with owner._lock:
                    owner.served[mode] += 1
                # The operator may give up on an answer midway, as it should.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    owner._answer(self, mode)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultyprometheus", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler, mode: str) -> None:
        good = _vector([({"model": "fraud"}, 5.0)])

        def send(status: int, body: bytes, content_type: str = "application/json", length: int | None = None) -> None:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body) if length is None else length))
            handler.end_headers()
            handler.wfile.write(body)

        if mode == "breach":
            send(200, good)
        elif mode == "empty":
            send(200, _vector([]))
        elif mode == "slow":
            time.sleep(self.slow_seconds)
            send(200, good)
        elif mode == "trickle":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(good)))
            handler.end_headers()
            for byte in good:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(0.2)
        elif mode == "truncated":
            # Declares the whole length, sends half, closes: the client sees the connection end early.
            send(200, good[: len(good) // 2], length=len(good))
            handler.close_connection = True
        elif mode == "garbage":
            send(200, b"\x00\xff{{{ not json at all \x89PNG")
        elif mode == "html":
            send(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        elif mode == "wrongshape":
            send(200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": "5"}}).encode())
        elif mode == "huge":
            # Chunked, no Content-Length: the size is only known by reading it.
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for chunk in _huge_vector(self.huge_bytes):
                handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")


def _huge_vector(size: int) -> Iterator[bytes]:
    """A well-formed vector answer of about ``size`` bytes, in chunks of 1 MiB (the same series repeated: the
    reader gives up on the size long before it could notice)."""
    yield b'{"status":"success","data":{"resultType":"vector","result":['
    series = b'{"metric":{"model":"fraud","pod":"p"},"value":[1700000000,"5"]},'
    chunk = series * ((1024 * 1024) // len(series))
    for _ in range(0, size, len(chunk)):
        yield chunk
    yield series.rstrip(b",") + b"]}}"
