"""A fault-injecting HTTPS proxy on loopback between a client (the operator) and the sandbox's API server.

The proxy terminates TLS with the API server's own certificate (its names include 127.0.0.1, so a kubeconfig
that trusts the sandbox's CA trusts the proxy), reads each request, and either forwards it to the real API
server over TLS or injects a fault (`Fault`): an HTTP status with a Kubernetes ``Status`` body (5xx, 409, 429),
a connection reset, an answer that never comes, or a slow answer. A fault can also strike *after* forwarding,
so the API server has done the write but the client sees a reset or an error: the case that makes a client
repeat what it already did.

Every connection carries one request (``Connection: close`` both ways), so requests are told apart without
parsing bodies, and watch streams are piped through as they come.

Beyond faults per request, the whole proxy can be made unreachable for its clients, as an API server on the
other side of a broken network would be: `stop` (connections refused, open ones cut), `blackhole` (connections
accepted, nothing answered, open streams stalled) and `restore`. Each instance has its own port, so one
operator replica can lose the API server while another keeps it.

Used as a context manager or with `close`; it runs its own event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
import ssl
import struct
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

_HEAD_LIMIT = 64 * 1024
_REASONS = {409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Fault:
    """What to do to the requests that match ``method`` (None: any) and ``path`` (a regex searched in the path
    and query, e.g. ``/status$`` or ``watch=``).

    Exactly one of ``status``, ``reset``, ``hang`` or ``delay`` says what happens. ``after=True`` forwards the
    request first and then injects the fault instead of the API server's answer. ``times`` bounds how many
    requests it strikes (None: every one); ``probability`` strikes only that share of the matching requests
    (drawn from the proxy's seeded random generator).
    """

    name: str
    method: str | None = None
    path: str = ""
    status: int | None = None
    reset: bool = False
    hang: bool = False
    delay: float = 0.0
    after: bool = False
    times: int | None = None
    probability: float = 1.0

    def __post_init__(self) -> None:
        chosen = [self.status is not None, self.reset, self.hang, self.delay > 0]
        if sum(chosen) != 1:
            raise ValueError(f"fault {self.name}: set exactly one of status, reset, hang, delay")
        self._pattern = re.compile(self.path)

    def matches(self, method: str, target: str) -> bool:
        return (self.method is None or self.method == method) and bool(self._pattern.search(target))


class FaultProxy:
    """The proxy. ``upstream`` is the API server's URL; ``pki`` the sandbox's pki directory (ca.crt,
    apiserver.crt, apiserver.key)."""

    def __init__(self, upstream: str, pki: Path, *, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", int(parts.port or 443)
        self._server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_tls.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
        self._client_tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.faults: list[Fault] = []
        #: Faults injected so far, by name; requests forwarded untouched count under "forwarded".
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        with socket.create_server(("127.0.0.1", 0)) as probe:
            self.port = int(probe.getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event = self._call(self._make_event())
        self.start()

    # --- control, from the test's thread ------------------------------------------------------------------------

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def start(self) -> None:
        """Listen (again) on the proxy's port and let traffic flow."""
        self._call(self._start())

    def stop(self) -> None:
        """Refuse new connections and cut the open ones, watch streams included."""
        self._call(self._stop())

    def blackhole(self) -> None:
        """Accept connections but answer nothing, and stall the open streams: an API server gone silent."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def restore(self) -> None:
        """Undo `blackhole`: held requests go through, stalled streams resume."""
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def kubeconfig(self, source: Path, destination: Path) -> Path:
        """A copy of the kubeconfig ``source`` whose clusters point at the proxy."""
        config = yaml.safe_load(source.read_text())
        for cluster in config.get("clusters") or []:
            cluster["cluster"]["server"] = self.url
        destination.write_text(json.dumps(config))  # JSON is YAML
        destination.chmod(0o600)
        return destination

    # --- the event loop's side -------------------------------------------------------------------------------

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=30)

    async def _make_event(self) -> asyncio.Event:
        event = asyncio.Event()
        event.set()
        return event

    async def _start(self) -> None:
        self._flowing.set()
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, ssl=self._server_tls, limit=_HEAD_LIMIT, reuse_address=True
            )

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._connections):
            _abort(writer)
        self._connections.clear()

    def _choose(self, method: str, target: str, after: bool) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.after != after or not fault.matches(method, target):
                    continue
                if fault.times is not None and fault.times <= 0:
                    continue
                if fault.probability < 1.0 and self._random.random() >= fault.probability:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                self.injected[fault.name] += 1
                return fault
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            await self._flowing.wait()
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, headers = _parse_head(head)
            method, target, _version = request_line.split(" ", 2)
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(length) if length else b""
            fault = self._choose(method, target, after=False)
            if fault is not None and await self._inject(fault, writer):
                return
            await self._forward(head, body, writer, method, target)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError, ValueError):
            pass
        finally:
            self._connections.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _inject(self, fault: Fault, writer: asyncio.StreamWriter) -> bool:
        """Carry out ``fault``; True when the request is done with (answered, reset or abandoned)."""
        if fault.delay:
            await asyncio.sleep(fault.delay)
            return False
        if fault.hang:
            await asyncio.sleep(3600)
            return True
        if fault.reset:
            _abort(writer)
            return True
        assert fault.status is not None
        writer.write(_status_answer(fault.status, f"injected by the test proxy ({fault.name})"))
        await writer.drain()
        return True

    async def _forward(self, head: bytes, body: bytes, writer: asyncio.StreamWriter, method: str, target: str) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            self.upstream_host, self.upstream_port, ssl=self._client_tls, server_hostname=self.upstream_host
        )
        self._connections.add(upstream_writer)
        try:
            upstream_writer.write(_with_close(head) + body)
            await upstream_writer.drain()
            answer_head = await upstream_reader.readuntil(b"\r\n\r\n")
            fault = self._choose(method, target, after=True)
            if fault is not None and await self._inject(fault, writer):
                return
            with self._lock:
                self.injected["forwarded"] += 1
            writer.write(_with_close(answer_head))
            while chunk := await upstream_reader.read(65536):
                await self._flowing.wait()
                writer.write(chunk)
                await writer.drain()
        finally:
            self._connections.discard(upstream_writer)
            with contextlib.suppress(Exception):
                upstream_writer.close()


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _with_close(head: bytes) -> bytes:
    """The head with ``Connection: close`` (one request per connection)."""
    lines = [line for line in head.decode("latin-1").split("\r\n") if line]
    kept = [lines[0], *(line for line in lines[1:] if not line.lower().startswith(("connection:", "keep-alive:")))]
    return ("\r\n".join([*kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1")


def _status_answer(code: int, message: str) -> bytes:
    """An answer as the API server gives it: a ``Status`` object with the code and reason."""
    reason = _REASONS.get(code, "Error")
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason.replace(" ", ""),
        "code": code,
    }
    if code == 429:
        status["details"] = {"retryAfterSeconds": 1}
    payload = json.dumps(status).encode()
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + payload


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
