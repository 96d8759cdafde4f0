"""A throwaway redis-server: the sidecars' shared label store in the tests, the benchmark and the demo.

Debian's binary (installed by ``modelmonitor cluster build`` when missing), on a free loopback port, with its own
directory. ``durable=True`` turns on the append-only file synced on every write, so stopping and starting the same
server keeps its data: a shared store going away and coming back.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from modelmonitor_sandbox.devcluster.build import redis_server_binary
from modelmonitor_sandbox.devcluster.processes import SandboxError, free_port, log_tail


class RedisServer:
    """``redis-server`` as a child process; :meth:`start` waits until it answers PING."""

    def __init__(self, directory: Path, *, password: str | None = None, durable: bool = True) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "redis.log"
        self.port = free_port()
        self.password = password
        self.durable = durable
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
                    "--save", "", *persistence, *(["--requirepass", self.password] if self.password else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.ping():
            if time.monotonic() > deadline:
                raise SandboxError(f"redis-server did not answer PING within 30 s:\n{log_tail(self.log)}")
            time.sleep(0.1)
        return self

    def client(self) -> Any:
        """A redis-py client of this server."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)

    def ping(self) -> bool:
        import redis

        if self.process is not None and self.process.poll() is not None:
            raise SandboxError(f"redis-server exited with code {self.process.returncode}:\n{log_tail(self.log)}")
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """SIGTERM: Redis syncs its append-only file and exits, as a restarted server does."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None
