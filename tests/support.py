"""Helpers shared by tests: the sandbox as tests see it, polling with a clear failure message."""

from __future__ import annotations

import csv
import json
import math
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelmonitor_sandbox.devcluster import cluster as sandbox
from modelmonitor_sandbox.devcluster import targets
from modelmonitor_sandbox.devcluster.mlflow_server import MlflowServer


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


def http_get(url: str, timeout: float = 2.0) -> bytes | None:
    """The body of a 2xx answer, or None when the server is down or answers otherwise."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read())
    except OSError:
        return None


class ExporterProcess:
    """A real exporter process (tests/fake_model_exporter.py) whose series a test sets at run time."""

    def __init__(self, directory: Path) -> None:
        from modelmonitor_sandbox.devcluster.processes import free_port

        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.state_file = directory / f"exporter-{self.port}.json"
        self.set([])
        script = Path(__file__).with_name("fake_model_exporter.py")
        self.process = subprocess.Popen([sys.executable, str(script), str(self.port), str(self.state_file)])
        wait_for(
            "the exporter to serve /metrics",
            lambda: http_get(f"http://{self.address}/metrics") is not None,
            timeout=20,
        )

    def set(self, series: list[dict[str, Any]]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"series": series}))
        tmp.replace(self.state_file)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class PrometheusProcess:
    """A Prometheus of a test's own (Debian's binary), scraping static targets every second.

    For tests that stop and restart Prometheus without disturbing the sandbox's shared one. ``web_config`` (a
    Prometheus web configuration: ``tls_server_config``, ``basic_auth_users``) puts TLS and basic auth in front of
    its API; Prometheus reads that file on every request, so `set_web_config` changes it while running.
    """

    def __init__(
        self,
        directory: Path,
        targets: list[str],
        labels: dict[str, str] | None = None,
        web_config: dict[str, Any] | None = None,
    ) -> None:
        from modelmonitor_sandbox.devcluster.processes import free_port

        self.directory = directory
        self.port = free_port()
        tls = web_config is not None and "tls_server_config" in web_config
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.web_config_file: Path | None = None
        if web_config is not None:
            self.web_config_file = directory / "web.yml"
            self.set_web_config(web_config)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "models", "static_configs": [{"targets": targets, "labels": dict(labels or {})}]}
            ],
        }
        (directory / "prometheus.yml").write_text(json.dumps(config))
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = (self.directory / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                *([f"--web.config.file={self.web_config_file}"] if self.web_config_file else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for("the test Prometheus to be ready", self._ready, timeout=60)

    def set_web_config(self, config: dict[str, Any]) -> None:
        assert self.web_config_file is not None, "started without a web config"
        tmp = self.web_config_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(config))  # JSON is YAML
        tmp.replace(self.web_config_file)

    def _ready(self) -> bool:
        if self.web_config_file is None:
            return http_get(f"{self.url}/-/ready") is not None
        # Behind TLS and basic auth every path asks for credentials: any HTTP answer means it serves.
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2, context=ssl._create_unverified_context()):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


class MlflowProcess(MlflowServer):
    """A real MLflow tracking server (``mlflow server``, from the test dependencies) with a sqlite backend store
    in ``directory``, on a free loopback port, started at once. `freeze` and `thaw` stop and resume its processes
    (the registry hanging, then back: a restart would take a minute on a loaded machine). `register` plays the
    trainer: it registers a version and tags it."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        # Two imports of mlflow (its CLI, then the uvicorn worker) and the sqlite schema: slow to start, minutes on
        # a loaded machine.
        self.start(timeout=400)


def token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path, duration: str = "2h") -> Path:
    """A kubeconfig that authenticates as ServiceAccount `account` with a fresh token (no admin certificate)
    and trusts the sandbox's CA: how the tests run the operator under its own least-privilege identity."""
    token = cluster.kubectl("create", "token", account, "-n", namespace, f"--duration={duration}").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sandbox",
                "cluster": {
                    "server": cluster.state.server,
                    "certificate-authority": str(Path(cluster.state.root) / "pki" / "ca.crt"),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        # The ServiceAccount's namespace, as in its pod: where the operator keeps its replicas' Leases.
        "contexts": [{"name": account, "context": {"cluster": "sandbox", "user": account, "namespace": namespace}}],
        "current-context": account,
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    path.chmod(0o600)
    return path


class OperatorProcess:
    """`modelmonitor run` as a real process watching one namespace.

    `env` carries the identity (KUBECONFIG) and the Prometheus URL; /metrics and /healthz get a free port. Each
    OperatorProcess is one replica (``replica`` names it, and its Lease), the same across restarts, as a pod's.
    """

    def __init__(self, env: dict[str, str], namespace: str, directory: Path, replica: str = "") -> None:
        from modelmonitor.actions.testhooks import CRASH_ENV
        from modelmonitor_sandbox.devcluster.processes import free_port

        self.namespace = namespace
        self.metrics_port = free_port()
        self.replica = replica or f"operator-{self.metrics_port}"
        self.log = directory / (f"{replica}.log" if replica else "operator.log")
        self.env = {
            **env,
            "MODELMONITOR_METRICS_ADDRESS": f"127.0.0.1:{self.metrics_port}",
            "MODELMONITOR_TICK_SECONDS": "0.5",
            "MODELMONITOR_REPLICA_NAME": self.replica,
        }
        self.env.pop(CRASH_ENV, None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, crash_at: str | None = None, wait: bool = True) -> None:
        """Start and (unless `wait` is False) wait for /healthz; `crash_at` arms the test hook (docs/actions.md)."""
        from modelmonitor.actions.testhooks import CRASH_ENV

        env = dict(self.env)
        if crash_at:
            env[CRASH_ENV] = crash_at
        sink = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelmonitor", "run", "--namespace", self.namespace],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        if not wait:
            return
        wait_for(
            "the operator's /healthz",
            lambda: http_get(f"http://127.0.0.1:{self.metrics_port}/healthz") or self._exited(),
            timeout=60,
        )

    def _exited(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the operator exited: {self.log_text()[-3000:]}")

    def wait_for_crash(self, timeout: float = 90) -> None:
        """Wait for the test hook to stop the process; fail if it exits any other way."""
        from modelmonitor.actions.testhooks import CRASH_EXIT_CODE

        assert self.process is not None
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the operator did not reach the crash point: {self.log_text()[-3000:]}") from None
        self.process = None
        assert code == CRASH_EXIT_CODE, f"exit {code}, not the test hook's: {self.log_text()[-3000:]}"

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a crashed pod."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


#: The prefixes of the series the operator's own /metrics exports (the rest belong to the sidecar).
OPERATOR_METRIC_PREFIXES = ("modelmonitor_operator_", "modelmonitor_monitor_", "modelmonitor_policy_")


def operator_metric_names() -> set[str]:
    """Every series name the operator's /metrics can export, read from the real collectors with one evaluated
    monitor known (counters with their ``_total``, histograms with ``_bucket``/``_count``/``_sum``)."""
    from datetime import UTC, datetime

    from prometheus_client import CollectorRegistry

    from modelmonitor.loop import Registry
    from modelmonitor.operator_metrics import OperatorMetrics
    from modelmonitor.policy import Measurement, MonitorSpec, Rule, evaluate, render_status

    spec = MonitorSpec("ml", "fraud", (Rule("accuracy", "<", 0.85),))
    now = datetime(2026, 12, 6, tzinfo=UTC)
    status = render_status(spec, evaluate(spec, {}, {"accuracy": Measurement.value(0.8, 10)}, now))
    monitors = Registry()
    monitors.upsert({"metadata": {"namespace": "ml", "name": "fraud", "uid": "u"}, "spec": {}, "status": status})
    registry = CollectorRegistry()
    OperatorMetrics(registry, monitors=monitors)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def write_training_csv(path: Path, rows: int = 3000) -> None:
    """A churn model's training data with its label (`churned`) and a group column (`gender`)."""
    rng = np.random.default_rng(11)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["age", "income", "country", "gender", "churned"])
        for _ in range(rows):
            age = rng.normal(40, 10)
            writer.writerow(
                [
                    f"{age:.2f}",
                    f"{rng.lognormal(10, 0.5):.1f}",
                    rng.choice(["us", "de", "fr"]),
                    rng.choice(["f", "m"]),
                    int(rng.random() < 1 / (1 + math.exp(-(age - 40) / 10))),
                ]
            )


def build_churn_profile(workdir: Path, rows: int) -> Path:
    """`workdir`/profile.json built by the real `modelmonitor profile build` from `rows` rows of
    `write_training_csv` (small windows and bootstrap, for tests)."""
    write_training_csv(workdir / "train.csv", rows=rows)
    build = subprocess.run(
        [sys.executable, "-m", "modelmonitor", "profile", "build", "train.csv", "-o", "profile.json",
         "--label", "churned", "--group", "gender", "--window-size", "100", "--n-boot", "50"],
        cwd=workdir, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    return workdir / "profile.json"
