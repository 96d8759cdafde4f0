"""The fleet: what the kubelet would run for each Running pod of the model's Deployment.

kwok makes pods Running but runs nothing. For every Running pod the fleet starts the two containers the pod
stands for, as real processes on 127.0.0.1: a model server (`modelmonitor_sandbox.demo.modelserver`) loaded with the
model the pod's ``model`` container pins in its ``MODEL_URI`` (a registered version's immutable source, read from
MLflow's artifact store), and the sidecar in proxy mode in front of it with that version's reference profile,
which it loads from the registry itself (``--profile-from-registry``). The sidecar is registered as a
Prometheus scrape target labelled with the pod's namespace and name, and joins the endpoints the traffic goes
to. When the pod goes away (scaled down, replaced by a rollout) the fleet takes it out of the endpoints, removes
the target and stops both processes. A new pair takes traffic once Prometheus has scraped it (a readiness
check). So a scale step adds real serving capacity, and a rollout really changes
which model answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from modelmonitor.adapters.kubernetes import POD, KubernetesError, Workloads
from modelmonitor.promql import quote
from modelmonitor_sandbox.demo import prometheus
from modelmonitor_sandbox.demo.traffic import Endpoints
from modelmonitor_sandbox.demo.world import REGISTERED_MODEL, Registry
from modelmonitor_sandbox.devcluster import targets
from modelmonitor_sandbox.devcluster.processes import free_port

MODEL_NAME = "fraud"
MODEL_URI = "MODEL_URI"


@dataclass(frozen=True)
class Capacity:
    """How fast one replica's model server works (see `modelmonitor_sandbox.demo.modelserver`)."""

    service_ms: float = 15.0
    per_row_ms: float = 2.0
    max_queue: int = 40
    mean_rows: float = 5.0  # what the demo's clients send on average

    @property
    def requests_per_second(self) -> float:
        """About how many requests one replica serves per second at most."""
        return 1000.0 / (self.service_ms + self.per_row_ms * self.mean_rows)


@dataclass
class Replica:
    """The processes serving one pod."""

    pod: str
    version: str
    model_port: int
    sidecar_port: int
    model: subprocess.Popen[bytes]
    sidecar: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sidecar_port}"

    def stop(self) -> None:
        for process in (self.sidecar, self.model):
            if process.poll() is None:
                process.terminate()
        for process in (self.sidecar, self.model):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def model_uri(pod: dict[str, Any], container: str) -> str | None:
    """The value of ``MODEL_URI`` in ``container`` of the pod or pod template (what the model server loads), or
    None."""
    for spec in (pod.get("spec") or {}).get("containers") or []:
        if spec.get("name") == container:
            return next((str(e["value"]) for e in spec.get("env") or [] if e.get("name") == MODEL_URI), None)
    return None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Fleet:
    """Keeps one model server + sidecar pair running per Running pod matching ``selector``. Thread-safe."""

    def __init__(
        self,
        workloads: Workloads,
        namespace: str,
        selector: str,
        registry: Registry,
        endpoints: Endpoints,
        targets_dir: Path,
        prometheus_url: str,
        logs: Path,
        say: Callable[[str], None],
        capacity: Capacity = Capacity(),
        container: str = "model",
        label_store: str = "memory",
    ) -> None:
        self.workloads = workloads
        self.namespace = namespace
        self.selector = selector
        self.registry = registry
        self.endpoints = endpoints
        self.targets_dir = targets_dir
        self.prometheus_url = prometheus_url
        self.logs = logs
        self.say = say
        self.capacity = capacity
        self.container = container
        self.label_store = label_store  # the sidecars' --label-store: shared, so labels may go to any replica
        self._replicas: dict[str, Replica] = {}
        self._busy: set[str] = set()  # pods being started or stopped
        self._refused: dict[str, str] = {}  # pods that cannot be served, and why (said once)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    # --- what runs -----------------------------------------------------------------------------------------

    def serving(self) -> Counter[str]:
        """Serving replicas per model version."""
        with self._lock:
            return Counter(r.version for r in self._replicas.values())

    def replicas(self) -> list[Replica]:
        with self._lock:
            return list(self._replicas.values())

    # --- the loop -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-fleet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for replica in self.replicas():
            self._teardown(replica, drain=0.0, reason="the demo ends")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except KubernetesError as exc:
                self.errors.append(str(exc))
            self._stop.wait(0.5)

    def sync(self) -> None:
        """One pass: start pairs for new Running pods, stop those whose pod is gone or leaving."""
        pods = self.workloads.list(POD, self.namespace, label_selector=self.selector)
        running = {
            p["metadata"]["name"]: p
            for p in pods
            if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        }
        with self._lock:
            current = dict(self._replicas)
            busy = set(self._busy)
        for name, replica in current.items():
            if name in busy:
                continue
            died = next((p for p in (replica.model, replica.sidecar) if p.poll() is not None), None)
            if name not in running:
                self._background(name, partial(self._teardown, replica, 1.0, "the pod is gone"))
            elif died is not None:
                what = "model server" if died is replica.model else "sidecar"
                self._background(name, partial(self._teardown, replica, 0.0, f"its {what} exited"))
        for name, pod in running.items():
            if name in current or name in busy or name in self._refused:
                continue
            source = model_uri(pod, self.container)
            if source is None or self.registry.find(source=source) is None:
                why = f"its {self.container} container's {MODEL_URI} is no registered version ({source or 'not set'})"
                self._refused[name] = why
                self.say(f"fleet: pod {name} cannot serve: {why}")
                continue
            self._background(name, partial(self._start, name, source))

    def _background(self, pod: str, work: Callable[[], None]) -> None:
        with self._lock:
            self._busy.add(pod)

        def run() -> None:
            try:
                work()
            except Exception as exc:  # a pod that cannot be started must not stop the fleet
                self.errors.append(f"{pod}: {exc}")
                self.say(f"fleet: pod {pod}: {exc}")
            finally:
                with self._lock:
                    self._busy.discard(pod)

        threading.Thread(target=run, name=f"fleet-{pod}", daemon=True).start()

    def _start(self, pod: str, source: str) -> None:
        began = time.monotonic()
        # What the model server's image would do at start: fetch the model the pod pins.
        model_file = self.logs / f"model-{pod}.json"
        loaded = self.registry.load(source)
        model_file.write_text(json.dumps(loaded.to_json()))
        version = loaded.version
        model_port, sidecar_port = free_port(), free_port()
        log = (self.logs / f"model-{pod}.log").open("ab")
        model = subprocess.Popen(
            [
                sys.executable, "-m", "modelmonitor_sandbox.demo.modelserver",
                "--model", str(model_file), "--listen", f"127.0.0.1:{model_port}",
                "--service-ms", str(self.capacity.service_ms), "--per-row-ms", str(self.capacity.per_row_ms),
                "--max-queue", str(self.capacity.max_queue),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log = (self.logs / f"sidecar-{pod}.log").open("ab")
        sidecar = subprocess.Popen(
            [
                sys.executable, "-m", "modelmonitor", "sidecar", "--profile-from-registry", self.registry.mlflow.url,
                "--registered-model", REGISTERED_MODEL, "--model-uri", source,
                "--listen", f"127.0.0.1:{sidecar_port}", "--upstream", f"http://127.0.0.1:{model_port}",
                "--model", MODEL_NAME, "--version", version, "--label-ttl", "10m", "--label-store", self.label_store,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        replica = Replica(pod, version, model_port, sidecar_port, model, sidecar)
        deadline = time.monotonic() + 60
        checks = (f"http://127.0.0.1:{model_port}/v1/models/{MODEL_NAME}", f"{replica.url}/healthz")
        while not all(_healthy(url) for url in checks):
            if model.poll() is not None or sidecar.poll() is not None or time.monotonic() > deadline:
                replica.stop()
                raise RuntimeError(f"the model server or sidecar of {version} did not start (logs in {self.logs})")
            time.sleep(0.2)
        targets.add(
            self.targets_dir,
            self._target(pod),
            f"127.0.0.1:{sidecar_port}",
            {"namespace": self.namespace, "pod": pod},
        )
        # Traffic only once Prometheus has scraped the new sidecar: counters it first sees at 0 give exact
        # increase() values, while counters first seen mid-count are extrapolated differently per series, which
        # distorts the bucket distributions (a false drift alarm for a few seconds after a rollout).
        self._wait_for_scrape(pod)
        with self._lock:
            self._replicas[pod] = replica
        self.endpoints.add(pod, replica.url)
        self.say(
            f"fleet: pod {pod} serving {version}: model server on :{model_port}, sidecar on :{sidecar_port}, "
            f"scraped by Prometheus ({time.monotonic() - began:.0f} s after the pod was seen Running)"
        )

    def _wait_for_scrape(self, pod: str, timeout: float = 15.0) -> None:
        selector = f"up{{namespace={quote(self.namespace)}, pod={quote(pod)}}}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                if any(value == 1 for _, value in prometheus.query(self.prometheus_url, selector)):
                    return
            except (OSError, RuntimeError):
                pass
            time.sleep(0.5)
        self.say(f"fleet: Prometheus has not scraped pod {pod} after {timeout:.0f} s; sending it traffic anyway")

    def _teardown(self, replica: Replica, drain: float, reason: str) -> None:
        self.endpoints.remove(replica.pod)
        time.sleep(drain)  # let requests already sent to it finish, as a terminating pod would
        targets.remove(self.targets_dir, self._target(replica.pod))
        replica.stop()
        with self._lock:
            self._replicas.pop(replica.pod, None)
        self.say(f"fleet: pod {replica.pod} ({replica.version}) stopped: {reason}")

    def _target(self, pod: str) -> str:
        return f"{self.namespace}-{pod}"[:121]
