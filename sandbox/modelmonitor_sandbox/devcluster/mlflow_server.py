"""A throwaway MLflow tracking server: the model registry of the demo and of the registry integration tests.

``mlflow server`` (from the development dependencies, beside this interpreter) with a sqlite backend store and
its artifact store in its own directory, on a free loopback port. The few REST calls a trainer or a person makes
of the registry (register a version, tag it, move an alias) are here too, for the demo and the tests to play
them; the operator's own client is ``modelmonitor.mlflowrest``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from modelmonitor_sandbox.devcluster.processes import SandboxError, free_port, log_tail


def mlflow_binary() -> Path:
    """The ``mlflow`` command installed beside this interpreter (the development extras)."""
    binary = Path(sys.executable).with_name("mlflow")
    if not binary.exists():
        raise SandboxError(f"{binary} not found: install the development extras (pip install -e '.[dev]')")
    return binary


class MlflowRest:
    """The few REST calls a trainer or a person makes of an MLflow registry at ``url``: register a version, tag
    it, move an alias, read them back."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One REST call (``/api/2.0/mlflow`` + ``path``); GET bodies go as query parameters."""
        url = f"{self.url}/api/2.0/mlflow{path}"
        data = None
        if method == "GET" and body:
            url += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read() or b"{}"))

    def create_run(self, experiment_id: str = "0") -> tuple[str, str]:
        """A new run in ``experiment_id`` (MLflow's default experiment): its id and artifact URI."""
        info = self.call("POST", "/runs/create", {"experiment_id": experiment_id})["run"]["info"]
        return str(info["run_id"]), str(info["artifact_uri"])

    def finish_run(self, run_id: str) -> None:
        self.call("POST", "/runs/update", {"run_id": run_id, "status": "FINISHED"})

    def register(self, model: str, source: str, tags: dict[str, str] | None = None, run_id: str = "") -> str:
        """Register a version of ``model`` (created if needed) with ``source`` (of run ``run_id``, which MLflow
        requires for a source in its own artifact store), tagged ``tags``; its number."""
        try:
            self.call("POST", "/registered-models/create", {"name": model})
        except urllib.error.HTTPError as exc:
            if exc.code != 400:  # RESOURCE_ALREADY_EXISTS
                raise
        body = {"name": model, "source": source, **({"run_id": run_id} if run_id else {})}
        created = self.call("POST", "/model-versions/create", body)
        version = str(created["model_version"]["version"])
        for key, value in (tags or {}).items():
            self.set_tag(model, version, key, value)
        return version

    def set_tag(self, model: str, version: str, key: str, value: str) -> None:
        self.call("POST", "/model-versions/set-tag", {"name": model, "version": version, "key": key, "value": value})

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.call("POST", "/registered-models/alias", {"name": model, "alias": alias, "version": version})

    def delete_model(self, model: str) -> None:
        """Delete the registered model and its versions, if it exists."""
        try:
            self.call("DELETE", "/registered-models/delete", {"name": model})
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # RESOURCE_DOES_NOT_EXIST
                raise

    def alias(self, model: str, alias: str) -> str | None:
        """The version number ``alias`` points at, or None."""
        try:
            return str(
                self.call("GET", "/registered-models/alias", {"name": model, "alias": alias})["model_version"][
                    "version"
                ]
            )
        except urllib.error.HTTPError:
            return None

    def tags(self, model: str, version: str) -> dict[str, str]:
        found = self.call("GET", "/model-versions/get", {"name": model, "version": version})["model_version"]
        return {t["key"]: t["value"] for t in found.get("tags") or []}


class MlflowServer(MlflowRest):
    """``mlflow server`` as a process group of its own. :meth:`launch` starts it without waiting (it takes tens of
    seconds to import MLflow and create its schema: minutes on a loaded machine), :meth:`wait_ready` waits for
    ``/health``; :meth:`start` does both. :meth:`freeze` and :meth:`thaw` stop and resume its processes (a
    registry that hangs, then is back)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "mlflow.log"
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 400) -> MlflowServer:
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(mlflow_binary()), "server",
                    "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
                    "--artifacts-destination", str(self.directory / "artifacts"),
                    "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                ],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                # The registry needs none of MLflow's job runner (a handful of huey consumer processes).
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )  # fmt: skip

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 400) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                why = (
                    "exited"
                    if self.process is None or self.process.poll() is not None
                    else f"not ready in {timeout:.0f} s"
                )
                self.stop()  # no server left behind when it never came up
                raise SandboxError(f"the MLflow server {why}:\n{log_tail(self.log)}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            # mlflow server runs uvicorn/gunicorn workers in its session: end them all.
            try:
                os.killpg(self.process.pid, signal.SIGCONT)  # if frozen
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:  # its job runner may not heed SIGTERM
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
            self.process = None

    def freeze(self) -> None:
        """Stop the server's processes (SIGSTOP): connections hang and time out, as with a registry that hangs."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)
