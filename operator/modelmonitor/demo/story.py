"""`modelmonitor demo`: the operator against the local sandbox, watching a model served by real sidecars.

1. the sandbox starts (or is reused) and the CRD is applied;
2. a Deployment `fraud-model` gets Running pods; one real sidecar process per Running pod, each registered as a
   Prometheus scrape target with its namespace and pod;
3. the operator runs as a real process, and a ModelMonitor guards the model's accuracy and data drift;
4. traffic flows healthy, then drifts and goes wrong, then recovers; `kubectl get mm` and the Events tell it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelmonitor.demo.traffic import Traffic, write_training_data
from modelmonitor.devcluster import cluster as sandbox
from modelmonitor.devcluster import targets
from modelmonitor.devcluster.build import kubectl_binary
from modelmonitor.devcluster.processes import SandboxError, free_port

NAMESPACE = "modelmonitor-demo"
CALIBRATED_WINDOW_ROWS = 1000
CRD = Path(__file__).resolve().parents[3] / "crds" / "modelmonitor.dev_modelmonitors.yaml"


@dataclass(frozen=True)
class Pacing:
    """How long each act lasts, in seconds."""

    healthy: float
    drifted: float
    recovered: float
    interval: str
    window: str
    hold: str

    @classmethod
    def full(cls) -> Pacing:
        return cls(healthy=40, drifted=70, recovered=70, interval="5s", window="30s", hold="10s")

    @classmethod
    def quick(cls) -> Pacing:
        return cls(healthy=20, drifted=45, recovered=50, interval="2s", window="15s", hold="4s")


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.argv = [str(kubectl_binary()), f"--kubeconfig={kubeconfig}"]

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run([*self.argv, *args], input=input, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise SandboxError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout


def monitor_manifest(pacing: Pacing) -> dict[str, object]:
    return {
        "apiVersion": "modelmonitor.dev/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": "fraud", "namespace": NAMESPACE},
        "spec": {
            "target": {"kind": "Deployment", "name": "fraud-model"},
            "model": {"name": "fraud"},
            "interval": pacing.interval,
            "policies": [
                {
                    "name": "accuracy-drop",
                    "signal": "accuracy",
                    "window": pacing.window,
                    "condition": {"op": "<", "threshold": 0.8, "clearThreshold": 0.85},
                    "for": pacing.hold,
                    "keepFiringFor": pacing.hold,
                    "minSamples": 100,
                    "severity": "critical",
                    "actions": ["page"],
                },
                {
                    "name": "input-drift",
                    "signal": "dataDrift",
                    "window": pacing.window,
                    "condition": {"op": ">", "autoThreshold": True},
                    # The threshold is calibrated for 1,000-row windows (--window-size below); fewer rows are
                    # noisier and would breach it by chance.
                    "minSamples": CALIBRATED_WINDOW_ROWS,
                    "for": pacing.hold,
                    "keepFiringFor": pacing.hold,
                    "severity": "warning",
                    "actions": ["page"],
                },
            ],
            "actions": {"page": {"type": "alert"}},
        },
    }


def deployment_manifest(replicas: int) -> dict[str, object]:
    labels = {"app": "fraud-model"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fraud-model", "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "model", "image": "fraud-model:v1"},
                        {"name": "sidecar", "image": "modelmonitor:0.1.0", "args": ["sidecar"]},
                    ]
                },
            },
        },
    }


def _wait(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise SandboxError(f"timed out after {timeout:.0f} s waiting for {what}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(200 <= response.status < 300)
    except OSError:
        return False


@contextmanager
def sidecars_for_pods(kubectl: Kubectl, state: sandbox.ClusterState, profile: Path, work: Path) -> Iterator[list[str]]:
    """One real sidecar process per Running pod of the Deployment, each scraped by the sandbox's Prometheus."""
    pods = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", "app=fraud-model", "-o", "json"))["items"]
    running = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    urls: list[str] = []
    try:
        for pod in running:
            port = free_port()
            log = (work / f"sidecar-{pod}.log").open("ab")
            argv = [
                sys.executable, "-m", "modelmonitor", "sidecar", "--profile", str(profile),
                "--listen", f"127.0.0.1:{port}", "--model", "fraud", "--version", "v1",
            ]  # fmt: skip
            processes.append((pod, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)))
            url = f"http://127.0.0.1:{port}"
            health = f"{url}/healthz"
            _wait(f"the sidecar of {pod}", lambda: _http_ok(health), timeout=60)  # noqa: B023 - called at once
            targets.add(state.targets_dir, f"demo-{pod}", f"127.0.0.1:{port}", {"namespace": NAMESPACE, "pod": pod})
            urls.append(url)
        yield urls
    finally:
        for pod, process in processes:
            targets.remove(state.targets_dir, f"demo-{pod}")
            process.terminate()
            process.wait(timeout=20)


@contextmanager
def operator_process(state: sandbox.ClusterState, work: Path) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    env = {
        **os.environ,
        **state.env(),
        "MODELMONITOR_METRICS_ADDRESS": f"127.0.0.1:{port}",
    }
    log = (work / "operator.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "modelmonitor", "run", "--namespace", NAMESPACE],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait("the operator's /healthz", lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=60)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=20)


def narrate(kubectl: Kubectl, act: str, seconds: float, every: float = 5.0) -> list[tuple[float, str, str]]:
    """Show `kubectl get mm` every few seconds for `seconds`; returns (time, phase, firing) samples."""
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        listing = kubectl("get", "mm", "-n", NAMESPACE, "--no-headers", check=False).strip()
        status = json.loads(kubectl("get", "mm", "fraud", "-n", NAMESPACE, "-o", "json")).get("status") or {}
        samples.append((time.time(), str(status.get("phase", "")), str(status.get("firingPolicies", ""))))
        print(f"  [{act:9}] {listing}", flush=True)
        time.sleep(min(every, max(0.0, end - time.monotonic())))
    return samples


def run_demo(pacing: Pacing, keep_cluster: bool = True) -> int:
    say("starting the local sandbox (first run builds the control plane; later runs reuse it)")
    state = sandbox.up()
    kubectl = Kubectl(state.kubeconfig)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/modelmonitors.modelmonitor.dev", "--timeout=60s")
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=120s")
    kubectl("create", "namespace", NAMESPACE)
    _wait(
        "the namespace's default ServiceAccount",
        lambda: bool(kubectl("get", "sa", "default", "-n", NAMESPACE, check=False)),
    )

    with tempfile.TemporaryDirectory(prefix="modelmonitor-demo-") as tmp:
        work = Path(tmp)
        say("building a reference profile from the model's training data")
        data = work / "training.csv"
        write_training_data(data, np.random.default_rng(1))
        profile = work / "profile.json"
        subprocess.run(
            [
                sys.executable, "-m", "modelmonitor", "profile", "build", str(data), "-o", str(profile),
                "--label", "label", "--prediction", "prediction", "--score", "score", "--group", "segment",
                "--positive-class", "1", "--window-size", str(CALIBRATED_WINDOW_ROWS),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip

        say("deploying fraud-model (2 replicas on kwok nodes)")
        kubectl("apply", "-f", "-", input=json.dumps(deployment_manifest(2)))
        kubectl("rollout", "status", "-n", NAMESPACE, "deployment/fraud-model", "--timeout=90s")
        print(kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide"))

        with sidecars_for_pods(kubectl, state, profile, work) as sidecars:
            say(f"one sidecar per Running pod: {', '.join(sidecars)} (scraped by Prometheus {state.prometheus_url})")
            with operator_process(state, work):
                say("the operator is running; applying the ModelMonitor")
                kubectl("apply", "-f", "-", input=json.dumps(monitor_manifest(pacing)))
                traffic = Traffic(sidecars)
                traffic.start()
                try:
                    timeline = []
                    say("act 1: healthy traffic")
                    timeline += narrate(kubectl, "healthy", pacing.healthy)
                    say("act 2: the inputs drift and the model's answers go wrong (labels arrive a second later)")
                    traffic.regime = "drifted"
                    timeline += narrate(kubectl, "drifted", pacing.drifted)
                    say("act 3: the world goes back to what the model knows")
                    traffic.regime = "healthy"
                    timeline += narrate(kubectl, "recovered", pacing.recovered)
                finally:
                    traffic.stop()
                say("Events on the monitor")
                print(
                    kubectl(
                        "get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.kind=ModelMonitor",
                        "--sort-by=.lastTimestamp", "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
                    )
                )  # fmt: skip
                say("kubectl describe mm fraud (status)")
                print(kubectl("get", "mm", "fraud", "-n", NAMESPACE, "-o", "jsonpath={.status.policies}"))
                print()
    phases = [phase for _, phase, _ in timeline]
    fired = "Firing" in phases or "Acting" in phases
    recovered = bool(phases) and phases[-1] == "Healthy"
    say(
        f"summary: {traffic.sent} events sent ({traffic.failures} failed posts); the monitor "
        f"{'fired' if fired else 'did NOT fire'} during the drift and "
        f"{'returned to Healthy' if recovered else 'had not returned to Healthy'} at the end"
    )
    if not keep_cluster:
        sandbox.down()
    else:
        print("the sandbox keeps running: `modelmonitor cluster down` stops it")
    return 0 if fired and recovered else 1
