"""Helpers shared by tests: the sandbox as tests see it, polling with a clear failure message."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelmonitor.devcluster import cluster as sandbox
from modelmonitor.devcluster import targets


@dataclass
class Cluster:
    """The running sandbox as tests see it."""

    state: sandbox.ClusterState
    kubectl_path: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state.kubeconfig

    @property
    def prometheus_url(self) -> str:
        return self.state.prometheus_url

    @property
    def alertmanager_url(self) -> str:
        return self.state.alertmanager_url

    @property
    def log_dir(self) -> Path:
        return self.state.log_dir

    def env(self) -> dict[str, str]:
        """os.environ plus the sandbox's KUBECONFIG and URLs, for subprocesses."""
        return {**os.environ, **self.state.env()}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def add_scrape_target(self, name: str, address: str, labels: dict[str, str] | None = None) -> None:
        targets.add(self.state.targets_dir, name, address, labels)

    def remove_scrape_target(self, name: str) -> None:
        targets.remove(self.state.targets_dir, name)

    def prometheus_query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])


def wait_for(what: str, check: Any, timeout: float = 60.0, interval: float = 0.5) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")
