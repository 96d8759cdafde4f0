"""Operator scale: N ModelMonitors on the local cluster, evaluated by the real operator against a real Prometheus.

What runs (all on 127.0.0.1, all started and stopped here):

* a synthetic sidecar fleet (``bench/synthetic_exporter.py``): the modelmonitor_* series of N models on one
  /metrics endpoint;
* a Prometheus of the benchmark's own (Debian's binary) scraping it, adding the ``namespace`` label as
  Kubernetes service discovery would;
* N ModelMonitors in a namespace of their own on the running sandbox, each with three built-in-signal policies
  (accuracy with ``for: 0s``, errorRate, latencyP95) at a 30 s interval, created with ``kubectl create`` in
  chunks;
* the operator as a real process: ``python -m modelmonitor run --namespace <ns>``; with ``--replicas R``, R of
  them sharing the monitors by Leases (in the benchmark's namespace), each measured on its own share.

What is measured, over several cycles after a warm-up cycle:

* cycle duration (the operator's own "cycle:" log lines; its histogram agrees), and how many cycles ran;
* operator CPU (utime + stime from /proc over the wall time of the window, in cores; the window spans at least
  as many whole intervals as cycles measured) and peak RSS (VmHWM);
* queries per cycle (the operator's ``modelmonitor_operator_queries_last_cycle``, and the query requests
  Prometheus itself counted), to show it does not grow with N;
* status writes per cycle and their server-side latency (the API server's own request metrics);
* breach delay: a model's series switched to bad in the exporter; the moment the accuracy expression first
  crosses the threshold in Prometheus (found afterwards with a fine query_range, so nothing polls Prometheus
  during the window), and the moment the monitor's status shows the policy Firing (read through the API every
  0.2 s). Target: one interval plus 5 s; the bound by construction is the interval plus the time into a cycle at
  which every monitor has been evaluated (from the operator's cycle lines) plus two status writes;
* where the operator's CPU goes (py-spy samples of the operator process, by what the code was doing), and the
  query phase and the status-write phase replayed alone with the operator's own code after it stopped.

Usage (the sandbox must be running: ``modelmonitor cluster up``)::

    python bench/bench_operator_scale.py                      # 1,000 then 5,000; writes bench/results/operator_scale.md
    python bench/bench_operator_scale.py --monitors 1000      # one size
    python bench/bench_operator_scale.py --quick              # 50 monitors, 10 s interval, < 1 min, prints only
    python bench/bench_operator_scale.py --monitors 10000 --replicas 2 --output bench/results/operator_scale_2x.md
                                                              # two replicas sharing the monitors by Leases

Everything it starts is stopped and its namespace deleted at the end, also on Ctrl-C or SIGTERM; the whole run
is bounded by ``--timeout``.

To measure one commit while the work tree changes, run from a snapshot: the operator process inherits
PYTHONPATH, so both it and this script import the snapshot::

    git archive HEAD operator | tar -x -C /tmp/snap && git rev-parse --short HEAD > /tmp/snap/operator/COMMIT
    PYTHONPATH=/tmp/snap/operator python bench/bench_operator_scale.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from operator_scale_report import (
    ACCURACY_THRESHOLD,
    ACCURACY_WINDOW,
    BREACH_POLICY,
    Breach,
    CycleLine,
    Plan,
    SizeResult,
    read_profile,
    render,
    tool_versions,
    write_results,
)
from synthetic_exporter import model_name

from modelmonitor.adapters.kubernetes import KubernetesClient
from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusSettings, QueryResult
from modelmonitor.policy.model import MeasurementKind
from modelmonitor.settings import OperatorSettings
from modelmonitor.signals import SeriesBook, SignalRequest, measure
from modelmonitor_sandbox.devcluster import cluster as sandbox
from modelmonitor_sandbox.devcluster.build import kubectl_binary
from modelmonitor_sandbox.devcluster.processes import free_port

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "modelmonitor.dev_modelmonitors.yaml"
EXPORTER = Path(__file__).with_name("synthetic_exporter.py")
RESULTS = Path(__file__).parent / "results" / "operator_scale.md"

#: Label and annotation on the benchmark's namespaces (a leftover of a killed run is found and deleted by them).
BENCH_LABEL = "modelmonitor.dev/benchmark"
BENCH_PID = "modelmonitor.dev/benchmark-pid"
GROUP, VERSION, PLURAL = "modelmonitor.dev", "v1alpha1", "modelmonitors"

CYCLE_LINE = re.compile(
    r"cycle: (?P<evaluated>\d+) monitors evaluated, (?P<invalid>\d+) invalid, (?P<queries>\d+) queries "
    r"\((?P<failed>\d+) failed\), (?P<seconds>[\d.]+) s"
    r"(?: \(queries done at (?P<queried>[\d.]+) s, every monitor evaluated at (?P<evaluated_at>[\d.]+) s\))?"
    r"(?:; (?P<heartbeats>\d+) heartbeat writes to follow, (?P<behind>\d+) of earlier cycles were still waiting)?"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: A cycle on schedule starts this soon after an interval boundary (the operator ticks every second).
ON_SCHEDULE_WITHIN = 2.5

T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not run as planned (the message says which step and why)."""


# --- plan ----------------------------------------------------------------------------------------------------


def monitor_body(name: str, interval: int) -> dict[str, Any]:
    """One ModelMonitor of the fleet: three built-in-signal policies on the model of the same name."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelMonitor",
        "metadata": {"name": name, "labels": {BENCH_LABEL: "operator-scale"}},
        "spec": {
            "target": {"name": name},
            "model": {"name": name},
            "interval": f"{interval}s",
            "policies": [
                {
                    "name": BREACH_POLICY,
                    "signal": "accuracy",
                    "window": ACCURACY_WINDOW,
                    "condition": {"op": "<", "threshold": ACCURACY_THRESHOLD, "clearThreshold": 0.92},
                    "for": "0s",
                    "minSamples": 10,
                    "severity": "critical",
                },
                {
                    "name": "error-rate",
                    "signal": "errorRate",
                    "window": "5m",
                    "condition": {"op": ">", "threshold": 0.05, "clearThreshold": 0.02},
                    "for": "1m",
                    "severity": "warning",
                },
                {
                    "name": "latency-p95",
                    "signal": "latencyP95",
                    "window": "5m",
                    "condition": {"op": ">", "threshold": 0.5, "clearThreshold": 0.3},
                    "for": "2m",
                    "severity": "warning",
                },
            ],
        },
    }


# --- small tools -----------------------------------------------------------------------------------------------


class Deadline:
    """The run's overall time bound: every wait is cut to what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def cap(self, seconds: float) -> float:
        left = self.left()
        if left <= 0:
            raise BenchError("the benchmark ran out of its --timeout")
        return min(seconds, left)


def wait_for(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll `check()` until it returns something truthy; BenchError naming `what` and the last value if not."""
    end = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= end:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read())
    except OSError:
        return None


def http_post(url: str, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all threads (from /proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces; fields start after ")"
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the highest resident set size the process has had, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmHWM in /proc/{pid}/status")


def samples_of(text: str, name: str, **labels: str) -> list[float]:
    """Values of the exposition-format samples `name` whose labels include `labels` (no full parser needed)."""
    found: list[float] = []
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric = head.split("{", 1)[0]
        if metric != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            found.append(float(value))
    return found


def sample_sum(text: str, name: str, **labels: str) -> float:
    return float(sum(samples_of(text, name, **labels)))


# --- the rig: processes, cluster access ----------------------------------------------------------------------


class Rig:
    """The processes and the namespace of one size; `close` stops and deletes everything it made."""

    def __init__(self, plan: Plan, state: sandbox.ClusterState, workdir: Path, deadline: Deadline) -> None:
        self.plan = plan
        self.state = state
        self.workdir = workdir
        self.deadline = deadline
        self.kubectl_path = str(kubectl_binary())
        self.namespace = f"bench-scale-{uuid.uuid4().hex[:8]}"
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.namespace_created = False
        self.exporter_url = ""
        self.prometheus_url = ""
        #: The operator replicas (one unless --replicas), and their /metrics URLs; `operator` is the first.
        self.operators: list[subprocess.Popen[bytes]] = []
        self.metrics_urls: list[str] = []
        self.operator: subprocess.Popen[bytes] | None = None
        self.cycles: list[CycleLine] = []
        self.cycles_lock = threading.Lock()
        self.operator_tail: list[str] = []
        #: Status writes the operator logged as failed, and cycles that raised.
        self.operator_failures = 0
        #: Lines the operator has logged so far.
        self.operator_lines = 0
        from kubernetes import client, config

        self.api = config.new_client_from_config(config_file=str(state.kubeconfig))  # type: ignore[no-untyped-call]
        self.custom = client.CustomObjectsApi(self.api)

    # kubectl ----------------------------------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        result = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.state.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=self.deadline.cap(timeout),
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"kubectl {' '.join(args[:3])} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result.stdout

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.processes.append((name, process))
        return process

    # setup ------------------------------------------------------------------------------------------------------
    def create_namespace(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": self.namespace,
                "labels": {BENCH_LABEL: "operator-scale"},
                "annotations": {BENCH_PID: str(os.getpid())},
            },
        }
        self.kubectl("create", "-f", "-", input=json.dumps(body))
        self.namespace_created = True

    def start_exporter(self) -> None:
        port = free_port()
        self.exporter_url = f"http://127.0.0.1:{port}"
        self.start(
            "exporter",
            [sys.executable, str(EXPORTER), "--port", str(port), "--models", str(self.plan.monitors)],
        )
        wait_for("the synthetic exporter", lambda: http_get(f"{self.exporter_url}/healthz"), self.deadline.cap(30))

    def start_prometheus(self) -> None:
        port = free_port()
        self.prometheus_url = f"http://127.0.0.1:{port}"
        interval = self.plan.scrape_interval
        config = {
            "global": {"scrape_interval": f"{interval}s", "scrape_timeout": f"{min(interval, 10)}s"},
            "scrape_configs": [
                {
                    "job_name": "models",
                    "static_configs": [
                        {
                            "targets": [self.exporter_url.removeprefix("http://")],
                            "labels": {"namespace": self.namespace},
                        }
                    ],
                }
            ],
        }
        (self.workdir / "prometheus.yml").write_text(json.dumps(config))
        self.start(
            "prometheus",
            [
                shutil.which("prometheus") or "/usr/bin/prometheus",
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=2h",
            ],
        )
        wait_for(
            "the Prometheus to be ready", lambda: http_get(f"{self.prometheus_url}/-/ready"), self.deadline.cap(60)
        )

    def prometheus_query(self, promql: str, **params: str) -> list[dict[str, Any]]:
        path = "query_range" if "step" in params else "query"
        url = f"{self.prometheus_url}/api/v1/{path}?" + urllib.parse.urlencode({"query": promql, **params})
        body = json.loads(http_get(url, timeout=30) or b"{}")
        if body.get("status") != "success":
            raise BenchError(f"Prometheus query {promql!r} failed: {body}")
        return list(body["data"]["result"])

    def wait_for_series(self) -> None:
        """Every model's series in Prometheus with at least two scrapes, so increase() has something to work on."""
        n = self.plan.monitors

        def ready() -> float:
            result = self.prometheus_query("count(count_over_time(modelmonitor_request_errors_total[5m]) >= 2)")
            return float(result[0]["value"][1]) if result else 0.0

        wait_for(f"{n} models' series in Prometheus", lambda: ready() >= n, self.deadline.cap(120), interval=1)

    def create_monitors(self, chunk: int = 250, parallel: int = 4) -> float:
        """Create the N monitors with `kubectl create -f` of Lists, `parallel` chunks at once. Returns seconds."""
        names = [model_name(i) for i in range(self.plan.monitors)]
        lists = [
            json.dumps(
                {"apiVersion": "v1", "kind": "List", "items": [monitor_body(n, self.plan.interval) for n in part]}
            )
            for part in (names[i : i + chunk] for i in range(0, len(names), chunk))
        ]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(lambda text: self.kubectl("create", "-n", self.namespace, "-f", "-", input=text), lists))
        return time.monotonic() - started

    def start_operator(self) -> float:
        """`python -m modelmonitor run` watching the namespace, once per replica (their Leases in the benchmark's
        namespace); returns the wall time they were started."""
        started = time.time()
        for replica in range(self.plan.replicas):
            port = free_port()
            self.metrics_urls.append(f"http://127.0.0.1:{port}")
            env = {
                **os.environ,
                **self.state.env(),
                "MODELMONITOR_PROMETHEUS_URL": self.prometheus_url,
                "MODELMONITOR_METRICS_ADDRESS": f"127.0.0.1:{port}",
                "MODELMONITOR_REPLICA_NAME": f"operator-{replica}",
                "MODELMONITOR_LEASE_NAMESPACE": self.namespace,
            }
            process = subprocess.Popen(
                [sys.executable, "-m", "modelmonitor", "run", "--namespace", self.namespace],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            )
            self.operators.append(process)
            self.processes.append((f"operator-{replica}", process))
            threading.Thread(
                target=self._read_operator, args=(replica, process), daemon=True, name=f"operator-log-{replica}"
            ).start()
        self.operator = self.operators[0]
        for url in self.metrics_urls:
            wait_for(
                "the operator's /healthz",
                lambda url=url: http_get(f"{url}/healthz") or self._operator_exited(),
                self.deadline.cap(60),
            )
        return started

    def _read_operator(self, replica: int, process: subprocess.Popen[bytes]) -> None:
        """Timestamp a replica's lines as they come, keep the cycle lines, write everything to its log."""
        assert process.stdout is not None
        with (self.workdir / f"operator-{replica}.log").open("a") as log:
            for raw in process.stdout:
                now = time.time()
                line = raw.decode(errors="replace").rstrip("\n")
                log.write(f"{now:.3f} {line}\n")
                self.operator_tail = [*self.operator_tail[-40:], line]
                self.operator_lines += 1
                if "not written" in line or "evaluation cycle failed" in line:
                    self.operator_failures += 1
                match = CYCLE_LINE.search(line)
                if match:
                    with self.cycles_lock:
                        self.cycles.append(
                            CycleLine(
                                at=now,
                                evaluated=int(match["evaluated"]),
                                invalid=int(match["invalid"]),
                                queries=int(match["queries"]),
                                failed=int(match["failed"]),
                                seconds=float(match["seconds"]),
                                replica=replica,
                                queried=float(match["queried"] or "nan"),
                                evaluated_by=float(match["evaluated_at"] or "nan"),
                                heartbeats=int(match["heartbeats"]) if match["heartbeats"] else None,
                                heartbeats_behind=int(match["behind"]) if match["behind"] else None,
                            )
                        )

    def _operator_exited(self) -> bool:
        """False while the replicas run; BenchError with the last lines once one has exited."""
        for process in self.operators:
            if process.poll() is not None:
                tail = "\n".join(self.operator_tail[-20:])
                raise BenchError(f"an operator replica exited with {process.returncode}:\n{tail}")
        return False

    def cycles_after(self, since: float) -> list[CycleLine]:
        self._operator_exited()
        with self.cycles_lock:
            return [c for c in self.cycles if c.at > since]

    def operator_metrics(self, replica: int = 0) -> str:
        body = http_get(f"{self.metrics_urls[replica]}/metrics")
        if body is None:
            raise BenchError("the operator's /metrics did not answer")
        return body.decode()

    def monitor(self, name: str) -> dict[str, Any]:
        found: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        return dict(found)

    def all_monitors(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500}
            if token:
                kwargs["_continue"] = token
            page: Any = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, **kwargs)
            items.extend(page["items"])
            token = page["metadata"].get("continue")
            if not token:
                return items

    # teardown ---------------------------------------------------------------------------------------------------
    def stop(self, name: str) -> None:
        for label, process in self.processes:
            if label == name and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def close(self) -> None:
        for label, _process in reversed(self.processes):
            self.stop(label)
        self.api.close()
        if self.namespace_created:
            delete_namespace(
                self.kubectl_path, self.state, self.namespace, timeout=max(30.0, 0.04 * self.plan.monitors)
            )


def delete_namespace(kubectl_path: str, state: sandbox.ClusterState, name: str, timeout: float) -> None:
    """Delete a benchmark namespace and wait (bounded) for it to go, so the next size starts on a quiet server."""
    base = [kubectl_path, f"--kubeconfig={state.kubeconfig}"]
    subprocess.run([*base, "delete", "namespace", name, "--wait=false"], capture_output=True, timeout=60, check=False)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        gone = subprocess.run([*base, "get", "namespace", name], capture_output=True, timeout=30, check=False)
        if gone.returncode != 0:
            return
        time.sleep(2)
    print(f"note: namespace {name} still terminating after {timeout:.0f} s; it goes on its own", file=sys.stderr)


def delete_leftovers(kubectl_path: str, state: sandbox.ClusterState) -> None:
    """Namespaces of earlier runs whose benchmark process is gone (a run killed with SIGKILL)."""
    out = subprocess.run(
        [kubectl_path, f"--kubeconfig={state.kubeconfig}", "get", "namespaces", "-l", BENCH_LABEL, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for item in json.loads(out)["items"]:
        meta = item["metadata"]
        pid = int((meta.get("annotations") or {}).get(BENCH_PID, "0") or 0)
        if item.get("status", {}).get("phase") == "Terminating" or (pid and Path(f"/proc/{pid}").exists()):
            continue
        print(f"deleting leftover benchmark namespace {meta['name']}", file=sys.stderr)
        delete_namespace(kubectl_path, state, meta["name"], timeout=120)


# --- measuring -----------------------------------------------------------------------------------------------


@dataclass
class Usage:
    """CPU seconds of the processes that matter, at one instant."""

    at: float
    cpu: dict[str, float]

    @classmethod
    def now(cls, pids: dict[str, int]) -> Usage:
        return cls(time.monotonic(), {name: cpu_seconds(pid) for name, pid in pids.items() if pid})


def run_breaches(
    rig: Rig, breaches: list[Breach], start: float, offsets: list[float], period: float, stop: threading.Event
) -> None:
    """Switch each model to bad at its offset from `start` (monotonic) and time the status until Firing.

    `period` is the time between cycles actually seen (the interval, or longer when cycles overrun it).
    """
    give_up = period * 2 + 60.0
    for breach, offset in zip(breaches, offsets, strict=True):
        while time.monotonic() < start + offset:
            if stop.wait(0.1):
                return
        try:
            breach.switched_at = float(http_post(f"{rig.exporter_url}/models/{breach.model}/bad")["switched_at"])
            end = time.monotonic() + give_up
            while time.monotonic() < end and not stop.is_set():
                status = rig.monitor(breach.model).get("status") or {}
                policies: list[dict[str, Any]] = status.get("policies") or []
                policy = next((p for p in policies if p.get("name") == BREACH_POLICY), {})
                if policy.get("state") == "Firing":
                    breach.seen_at = time.time()
                    breach.evaluated_at = parse_time(str(policy.get("since", "")))
                    break
                time.sleep(0.2)
            else:
                breach.error = f"not Firing within {give_up:.0f} s"
        except Exception as exc:  # one failed breach is reported, the rest still run
            breach.error = f"{type(exc).__name__}: {exc}"


def parse_time(text: str) -> float:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return math.nan


def find_crossing(rig: Rig, breach: Breach) -> None:
    """The first instant (0.1 s resolution) at which Prometheus' accuracy of the model is below the threshold."""
    if math.isnan(breach.switched_at):
        return
    selector = f'namespace="{rig.namespace}",model="{breach.model}"'
    metric = "modelmonitor_labeled_predictions_total"
    expression = (
        f'sum(increase({metric}{{{selector},outcome=~"tp|tn"}}[{ACCURACY_WINDOW}])) '
        f"/ sum(increase({metric}{{{selector}}}[{ACCURACY_WINDOW}]))"
    )
    end = breach.seen_at if not math.isnan(breach.seen_at) else breach.switched_at + 2 * rig.plan.interval + 30
    result = rig.prometheus_query(expression, start=f"{breach.switched_at - 1:.3f}", end=f"{end:.3f}", step="0.1")
    for at, value in result[0]["values"] if result else []:
        if float(value) < ACCURACY_THRESHOLD:
            breach.crossed_at = float(at)
            return
    breach.error = breach.error or "Prometheus never showed the crossing"


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter or on PATH (pip install py-spy), if any."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextmanager
def profiling(pid: int, output: Path, enabled: bool) -> Iterator[None]:
    """py-spy samples of `pid` while the block runs: non-blocking (it never pauses the operator) and only of the
    thread holding the GIL, so a sample is Python work, not a thread waiting on a socket or a queue."""
    executable = py_spy() if enabled else None
    process = None
    if executable is not None:
        process = subprocess.Popen(
            [executable, "record", "--pid", str(pid), "--rate", "50", "--nonblocking", "--gil", "--format", "raw",
             "--output", str(output)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    elif enabled:
        print("note: py-spy not found (pip install py-spy); no CPU profile", file=sys.stderr)
    try:
        yield
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def control_plane_pids(state: sandbox.ClusterState) -> dict[str, int]:
    return {name: state.pids.get(name, 0) for name in ("kube-apiserver", "etcd", "kube-controller-manager")}


class CountingQuerier:
    """The operator's Prometheus client, noting the largest answer (series) it got."""

    def __init__(self, client: PrometheusClient) -> None:
        self.client = client
        self.largest = 0
        self.lock = threading.Lock()

    def query(self, promql: str, *, at: dt.datetime | None = None) -> QueryResult:
        answer = self.client.query(promql, at=at)
        with self.lock:
            self.largest = max(self.largest, len(answer.samples))
        return answer

    def take(self) -> int:
        """The largest answer so far, starting over."""
        with self.lock:
            largest, self.largest = self.largest, 0
        return largest


def fleet_requests(namespace: str, monitors: int, interval: int) -> list[SignalRequest]:
    """The signal requests of the benchmark's ``monitors`` monitors, as the operator makes them."""
    requests = []
    for i in range(monitors):
        body = monitor_body(model_name(i), interval)
        for policy in body["spec"]["policies"]:
            requests.append(
                SignalRequest(
                    namespace=namespace,
                    monitor=body["metadata"]["name"],
                    policy=policy["name"],
                    model=body["spec"]["model"]["name"],
                    window=policy["window"],
                    signal=policy["signal"],
                )
            )
    return requests


def replay_queries(rig: Rig, repeats: int = 3) -> tuple[list[float], int, int, int]:
    """The query phase alone, with the operator's own `measure` and Prometheus client, for all N monitors.

    Returns the wall seconds of each repeat, the queries sent per repeat (the last repeat's: the first also
    counts each query's series), how many policies got values and the most series in one answer. The queries are
    split as the operator splits them, with its series budget (MODELMONITOR_MAX_SERIES_PER_ANSWER, kept across the
    repeats as the operator keeps it across cycles).
    """
    requests = fleet_requests(rig.namespace, rig.plan.monitors, rig.plan.interval)
    client = PrometheusClient(PrometheusSettings(url=rig.prometheus_url, timeout_seconds=30))
    counting = CountingQuerier(client)
    book = SeriesBook(budget=OperatorSettings.from_env().max_series_per_answer)
    times: list[float] = []
    queries = values = 0
    try:
        for _ in range(repeats):
            started = time.monotonic()
            measured = measure(requests, counting, max_parallel=OperatorSettings().query_parallelism, book=book)
            times.append(time.monotonic() - started)
            queries = measured.queries
            values = sum(1 for r in measured.results.values() if r.kind is MeasurementKind.VALUES)
    finally:
        client.close()
    return times, queries, values, counting.largest


def replay_writes(rig: Rig, monitors: list[dict[str, Any]], parallel: int) -> float:
    """The status-write phase alone: every monitor's own status patched back (a newer lastEvaluationTime, so
    each is a real write) with the operator's Kubernetes client, `parallel` writes in flight, one pooled
    connection per writer. Returns the wall seconds."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(rig.state.kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = parallel
    api = client.ApiClient(configuration)
    kube = KubernetesClient(api)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def write(item: dict[str, Any]) -> None:
        status = {**(item.get("status") or {}), "lastEvaluationTime": stamp}
        kube.patch_monitor_status(rig.namespace, item["metadata"]["name"], status)

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(write, monitors))
    finally:
        api.close()  # type: ignore[no-untyped-call]
    return time.monotonic() - started


def run_size(plan: Plan, state: sandbox.ClusterState, deadline: Deadline, rng: np.random.Generator) -> SizeResult:
    """One size, start to finish; everything it starts is stopped before it returns or raises."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-scale-{plan.monitors}-"))
    rig = Rig(plan, state, workdir, deadline)
    result = SizeResult(plan=plan, namespace=rig.namespace)
    n = plan.monitors

    def say(message: str) -> None:
        print(f"[{n} monitors] {message}", file=sys.stderr, flush=True)

    try:
        rig.create_namespace()
        rig.start_exporter()
        rig.start_prometheus()
        say(f"namespace {rig.namespace}; exporter and Prometheus started, waiting for two scrapes")
        rig.wait_for_series()
        result.series = int(float(rig.prometheus_query("count({__name__=~'modelmonitor_.+'})")[0]["value"][1]))
        result.create_seconds = rig.create_monitors()
        say(f"{n} ModelMonitors created in {result.create_seconds:.1f} s; starting the operator")

        started_at = rig.start_operator()
        assert rig.operator is not None

        def evaluated_all() -> float | None:
            lines = rig.cycles_after(started_at)
            total = 0
            for line in lines:
                total += line.evaluated
                if total >= n:
                    return line.at
            return None

        first_full = wait_for(
            "every monitor evaluated once", evaluated_all, deadline.cap(plan.interval * 2 + 0.06 * n + 120), 0.2
        )
        result.startup_seconds = first_full - started_at
        say(f"every monitor evaluated once {result.startup_seconds:.1f} s after the operator started")
        replicas = range(plan.replicas)

        # The shares once every replica's watch has listed every monitor and the replicas agree (a replica that
        # starts alone acts on every monitor until the other one has joined).
        def shares() -> list[int] | None:
            try:  # a busy replica's /metrics may not answer within the timeout: ask again
                owned = [
                    int(sample_sum(rig.operator_metrics(r), "modelmonitor_operator_monitors_owned")) for r in replicas
                ]
            except BenchError:
                return None
            # Every replica carries a share once the joining ones have waited their renew deadline.
            return owned if sum(owned) == n and (min(owned) > 0 or n < 10 * plan.replicas) else None

        result.shares = wait_for("the replicas' shares to cover every monitor", shares, deadline.cap(300), 1.0)
        say(f"monitors owned by each replica: {result.shares}")

        def full_lines(since: float) -> list[list[CycleLine]]:
            """Each replica's cycles after ``since`` that evaluated its whole share."""
            lines = rig.cycles_after(since)
            return [[c for c in lines if c.replica == r and result.full(c)] for r in replicas]

        # Warm-up: each replica's first cycle that evaluates its share on schedule, ended after this wait began; the
        # window opens when the last ends. After the start the cycles run late and back to back until the schedule
        # catches up (the monitors are due at once), and a window holding one of them would count two cycles'
        # work in less than two intervals; a cycle on schedule starts within a tick of an interval boundary. An
        # operator that writes heartbeats after each cycle must also have caught up with the start's writes: at
        # most two cycles' share of heartbeats (monitors x interval / heartbeat) still waiting when this one began.
        # Some may wait in the steady state, when the API server takes them slower than they come due between
        # cycles (at 10,000 monitors on a 2-core host it spends about 20 ms of CPU on each status write); the
        # cycles table shows how many.
        waiting_since = time.time()
        heartbeat = OperatorSettings.from_env().status_heartbeat_seconds
        steady_heartbeats = math.ceil(n / plan.replicas * plan.interval / heartbeat) if heartbeat > 0 else 0

        def on_schedule(cycle: CycleLine) -> bool:
            started = cycle.at - cycle.seconds
            overrun = cycle.seconds >= plan.interval  # then back to back is the steady state
            caught_up = (cycle.heartbeats_behind or 0) <= 2 * steady_heartbeats
            return cycle.at >= waiting_since and caught_up and (overrun or started % plan.interval < ON_SCHEDULE_WITHIN)

        def settled() -> list[CycleLine] | None:
            found = [next((c for c in lines if on_schedule(c)), None) for lines in full_lines(first_full)]
            return [c for c in found if c is not None] if all(found) else None

        warm_lines = wait_for(
            "a warm-up cycle of every replica evaluating its share on schedule, at most two cycles' heartbeat writes "
            "of earlier cycles waiting",
            settled,
            # Code before the half-period heartbeat rule (a comparison's baseline) has a burst of heartbeats after
            # its start that takes minutes to drain at 10,000 monitors (longer on an API server still deleting an
            # earlier run's monitors).
            deadline.cap(plan.interval * 4 + 0.04 * n + heartbeat + 120),
            0.2,
        )
        warm = max(warm_lines, key=lambda c: c.at)
        pids = {f"operator-{r}": rig.operators[r].pid for r in replicas}
        pids.update(control_plane_pids(state))
        for name, process in rig.processes:
            if name in ("prometheus", "exporter"):
                pids[name] = process.pid
        before = Usage.now(pids)
        metrics_before = [rig.operator_metrics(r) for r in replicas]
        prom_before = (http_get(f"{rig.prometheus_url}/metrics") or b"").decode()
        api_before = rig.kubectl("get", "--raw", "/metrics")
        load_before = os.getloadavg()[0]
        lines_before = rig.operator_lines
        say(f"warm-up cycle done ({warm.seconds:.2f} s); measuring {plan.cycles} cycles")

        breaches = pick_breaches(plan, rng)
        window_start = time.monotonic()
        # Cycles that overrun the interval run back to back: time the window by what the warm-up cycle took.
        period = max(float(plan.interval), warm.seconds * 1.5)
        offsets = sorted(rng.uniform(0, max(1.0, (plan.cycles - 1.5) * period), size=len(breaches)).tolist())
        stop = threading.Event()
        breach_thread = threading.Thread(
            target=run_breaches, args=(rig, breaches, window_start, offsets, period, stop), daemon=True, name="breaches"
        )
        with profiling(rig.operator.pid, workdir / "profile.txt", plan.profile):
            breach_thread.start()
            measured = wait_for(
                f"{plan.cycles} measured cycles of every replica",
                lambda: (lambda per: per if all(len(p) >= plan.cycles for p in per) else None)(full_lines(warm.at)),
                deadline.cap(period * (plan.cycles + 3) + 120),
                0.2,
            )
            # The window spans whole intervals: cycles shorter than the interval leave the rest of it idle, and a
            # window closed at the last cycle's end would count the cycles' CPU over less time than they take.
            time.sleep(max(0.0, min(window_start + plan.cycles * plan.interval - time.monotonic(), deadline.left())))
            after = Usage.now(pids)
            metrics_after = [rig.operator_metrics(r) for r in replicas]
            prom_after = (http_get(f"{rig.prometheus_url}/metrics") or b"").decode()
            api_after = rig.kubectl("get", "--raw", "/metrics")
            result.load = (load_before, os.getloadavg()[0])
            result.replica_rss = [peak_rss_mib(rig.operators[r].pid) for r in replicas]
            result.peak_rss = max(result.replica_rss)
            lines_after = rig.operator_lines
        result.profile = read_profile(workdir / "profile.txt")
        say("window closed; waiting for the breaches to show")
        breach_thread.join(timeout=deadline.cap(period * 2 + 70))
        stop.set()
        breach_thread.join(timeout=5)

        # Every cycle line in the window (a cycle can split when writes fail), and the full ones measured.
        end_at = max(per[plan.cycles - 1].at for per in measured)
        result.cycles = [c for c in rig.cycles_after(warm.at) if c.at <= end_at]
        # Per interval: each replica's full cycles, counted once per interval across the replicas.
        full_cycles = len([c for c in result.cycles if result.full(c)]) / plan.replicas
        result.write_errors = rig.operator_failures
        result.log_lines_per_cycle = (lines_after - lines_before) / full_cycles
        result.window_seconds = after.at - before.at
        result.window_origin = warm.at
        result.cores = {
            name: (after.cpu[name] - before.cpu[name]) / result.window_seconds
            for name in after.cpu
            if name in before.cpu
        }
        result.replica_cores = [result.cores[f"operator-{r}"] for r in replicas]
        result.cores["operator"] = max(result.replica_cores)  # the aims are per replica
        histogram = "modelmonitor_operator_cycle_duration_seconds"
        count = sum(
            sample_sum(a, f"{histogram}_count") - sample_sum(b, f"{histogram}_count")
            for a, b in zip(metrics_after, metrics_before, strict=True)
        )
        total = sum(
            sample_sum(a, f"{histogram}_sum") - sample_sum(b, f"{histogram}_sum")
            for a, b in zip(metrics_after, metrics_before, strict=True)
        )
        result.histogram_mean = total / count if count else math.nan
        # Per replica: each sends the same queries whatever its share (asking each for its own models).
        result.queries_gauge = max(sample_sum(m, "modelmonitor_operator_queries_last_cycle") for m in metrics_after)
        # A replica asking for its own share only gets answers about its share's size.
        result.replica_largest_answers = [
            int(sample_sum(m, "modelmonitor_operator_largest_answer_series")) for m in metrics_after
        ]
        query_count = "prometheus_http_request_duration_seconds_count"
        query_sum = "prometheus_http_request_duration_seconds_sum"
        handler = {"handler": "/api/v1/query"}
        sent = sample_sum(prom_after, query_count, **handler) - sample_sum(prom_before, query_count, **handler)
        spent = sample_sum(prom_after, query_sum, **handler) - sample_sum(prom_before, query_sum, **handler)
        result.prometheus_queries_per_cycle = sent / full_cycles
        result.prometheus_seconds_per_query = spent / sent if sent else math.nan
        patch = {"resource": "modelmonitors", "subresource": "status", "verb": "PATCH"}
        request_count, request_sum = (
            "apiserver_request_duration_seconds_count",
            "apiserver_request_duration_seconds_sum",
        )
        patches = sample_sum(api_after, request_count, **patch) - sample_sum(api_before, request_count, **patch)
        patch_seconds = sample_sum(api_after, request_sum, **patch) - sample_sum(api_before, request_sum, **patch)
        result.status_patches_per_cycle = patches / full_cycles
        result.status_writes_per_second = patches / result.window_seconds
        result.patch_server_ms = 1000 * patch_seconds / patches if patches else math.nan
        watch = {"resource": "modelmonitors"}
        events = sample_sum(api_after, "apiserver_watch_events_total", **watch) - sample_sum(
            api_before, "apiserver_watch_events_total", **watch
        )
        result.watch_events_per_cycle = events / full_cycles

        for breach in breaches:
            find_crossing(rig, breach)
        result.breaches = breaches

        # The operator stops before the replays, so they run alone and its statuses are final.
        for r in replicas:
            rig.stop(f"operator-{r}")
        monitors = rig.all_monitors()
        for item in monitors:
            status = item.get("status") or {}
            result.phases[str(status.get("phase"))] += 1
            result.status_bytes += len(json.dumps(status, separators=(",", ":"))) / len(monitors)
            for policy in status.get("policies") or []:
                result.policy_states[f"{policy.get('name')}={policy.get('state')}"] += 1
        say("replaying the query phase and the status-write phase alone")
        replay = replay_queries(rig)
        result.query_replay, result.query_replay_queries, result.query_replay_values, result.max_answer_series = replay
        # The operator's default (8 in flight), then 4x that: does the API server take more writes at once?
        if plan.write_replay:
            result.write_replay = {parallel: replay_writes(rig, monitors, parallel) for parallel in (8, 32)}
        return result
    finally:
        say("cleaning up")
        rig.close()
        if plan.keep_files:
            say(f"logs, Prometheus data and profile kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def pick_breaches(plan: Plan, rng: np.random.Generator) -> list[Breach]:
    """The last monitor in name order (written last in a cycle: the slowest to show), then the middle one, then
    others at random."""
    n = plan.monitors
    positions = [n - 1, n // 2]
    while len(positions) < plan.breaches and len(positions) < n:
        candidate = int(rng.integers(0, n))
        if candidate not in positions:
            positions.append(candidate)
    return [Breach(model_name(p), p) for p in positions[: plan.breaches]]


# --- entry point ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Scale benchmark of the ModelMonitor operator on the local sandbox.")
    parser.add_argument(
        "--monitors", type=int, action="append", help="number of ModelMonitors (repeatable; default 1000 and 5000)"
    )
    parser.add_argument("--quick", action="store_true", help="50 monitors, 10 s interval, 2 cycles; prints only")
    parser.add_argument("--interval", type=int, help="monitor interval in seconds (default 30, quick 10)")
    parser.add_argument("--cycles", type=int, help="cycles measured after warm-up (default 4, quick 2)")
    parser.add_argument("--breaches", type=int, help="breaches timed per size (default 3, quick 1)")
    parser.add_argument("--no-profile", action="store_true", help="do not sample the operator with py-spy")
    parser.add_argument("--keep-files", action="store_true", help="keep each size's operator log and profile")
    parser.add_argument("--output", type=Path, help=f"results file (default {RESULTS.relative_to(REPO)}; quick: none)")
    parser.add_argument("--timeout", type=float, default=1800, help="bound on the whole run, seconds (default 1800)")
    parser.add_argument("--seed", type=int, default=20260101, help="seed of breach models and times")
    parser.add_argument(
        "--replicas", type=int, default=1, help="operator replicas sharing the monitors by Leases (default 1)"
    )
    parser.add_argument(
        "--no-write-replay", action="store_true", help="skip replaying every monitor's status write (long at 10,000)"
    )
    args = parser.parse_args(argv)
    for n in args.monitors or []:
        if n < 1:
            parser.error(f"--monitors {n}: expected at least 1")
    for name in ("interval", "cycles", "breaches"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "breaches" else 1):
            parser.error(f"--{name} {value}: expected a positive number")
    if args.replicas < 1:
        parser.error(f"--replicas {args.replicas}: expected at least 1")
    if args.interval is not None and args.interval < 5:
        parser.error(f"--interval {args.interval}: expected at least 5 seconds (a cycle needs time to show)")
    return args


def plans_from(args: argparse.Namespace) -> list[Plan]:
    quick = args.quick
    sizes = args.monitors or ([50] if quick else [1000, 5000])
    interval = args.interval or (10 if quick else 30)
    return [
        Plan(
            monitors=n,
            interval=interval,
            cycles=args.cycles or (2 if quick else 4),
            breaches=args.breaches if args.breaches is not None else (1 if quick else 3),
            scrape_interval=2 if quick else 10,
            profile=not args.no_profile,
            keep_files=args.keep_files,
            replicas=args.replicas,
            write_replay=not args.no_write_replay,
        )
        for n in sizes
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = sandbox.load_state()
    if state is None or not sandbox.is_healthy(state):
        print("the sandbox is not running: start it with `modelmonitor cluster up`", file=sys.stderr)
        return 2
    if not (shutil.which("prometheus") or Path("/usr/bin/prometheus").exists()):
        print("no prometheus binary (apt-get install prometheus)", file=sys.stderr)
        return 2

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through every `finally`, which stops what was started

    signal.signal(signal.SIGTERM, on_term)
    deadline = Deadline(args.timeout)
    rng = np.random.default_rng(args.seed)
    kubectl_path = str(kubectl_binary())
    subprocess.run(
        [
            kubectl_path,
            f"--kubeconfig={state.kubeconfig}",
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(CRD),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    subprocess.run(
        [kubectl_path, f"--kubeconfig={state.kubeconfig}", "wait", "--for=condition=Established",
         "crd/modelmonitors.modelmonitor.dev", "--timeout=60s"],
        capture_output=True, timeout=90, check=True,
    )  # fmt: skip
    delete_leftovers(kubectl_path, state)

    results: list[SizeResult] = []
    try:
        for plan in plans_from(args):
            results.append(run_size(plan, state, deadline, rng))
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130

    text = render(results, tool_versions(state.versions))
    print(text)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        write_results(text, output)
        print(f"wrote {output}", file=sys.stderr)
    failed = [r for r in results if any(b.error for b in r.breaches)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
