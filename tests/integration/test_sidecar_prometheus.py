"""A real sidecar process scraped by a real Prometheus.

Builds a profile with the real CLI, starts ``python -m modelmonitor sidecar`` and ``/usr/bin/prometheus``
(temporary config and data directory, loopback ports, 1 s scrape interval), pushes events, labels and garbage
to the sidecar, and checks through Prometheus' HTTP API that the series arrive with the right values, that the
garbage is counted as rejected, and that the sidecar keeps serving.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support import write_training_csv

PROMETHEUS = "/usr/bin/prometheus"
LABELS = 'model="churn",version="v7"'

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(shutil.which(PROMETHEUS) is None, reason="needs Prometheus at /usr/bin/prometheus"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(method: str, url: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.sidecar_url = ""
        self.prometheus_url = ""

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()  # the child holds its own descriptor
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, answer = http("GET", url)
        assert status == 200 and answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for_value(self, promql: str, expected: float, timeout: float = 60) -> None:
        seen: list[float | None] = []

        def check() -> bool:
            value = self.scalar(promql)
            seen.append(value)
            return value is not None and math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-9)

        try:
            wait_until(f"{promql} == {expected}", check, timeout)
        except AssertionError:
            raise AssertionError(f"{promql}: expected {expected}, last seen {seen[-3:]}") from None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("sidecar-prometheus")
    stack = Stack(workdir)
    write_training_csv(workdir / "train.csv")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelmonitor",
            "profile",
            "build",
            "train.csv",
            "-o",
            "profile.json",
            "--label",
            "churned",
            "--group",
            "gender",
            "--window-size",
            "100",
            "--n-boot",
            "200",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    sidecar_port, prometheus_port = free_port(), free_port()
    stack.sidecar_url = f"http://127.0.0.1:{sidecar_port}"
    stack.prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    try:
        sidecar = stack.spawn("sidecar", [
            sys.executable, "-m", "modelmonitor", "sidecar", "--profile", "profile.json",
            "--listen", f"127.0.0.1:{sidecar_port}", "--model", "churn", "--version", "v7",
            "--max-body-bytes", "200000",
        ])  # fmt: skip
        wait_until(
            "the sidecar's /healthz",
            lambda: sidecar.poll() is None and http("GET", f"{stack.sidecar_url}/healthz")[0] == 200,
            timeout=60,
        )
        (workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: sidecar\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{sidecar_port}']\n"
        )
        prometheus = stack.spawn("prometheus", [
            PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}", "--web.enable-lifecycle",
        ])  # fmt: skip

        def ready() -> bool:
            if prometheus.poll() is not None:
                raise AssertionError(f"Prometheus exited: {stack.log('prometheus')}")
            return http("GET", f"{stack.prometheus_url}/-/ready")[0] == 200

        wait_until("Prometheus ready", ready, timeout=60)
        wait_until("the sidecar target up", lambda: stack.scalar('up{job="sidecar"}') == 1.0, timeout=60)
        yield stack
    finally:
        for process in reversed(stack.processes):
            stop(process)


def rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "age": round(float(rng.normal(40, 10)), 2),
            "income": round(float(rng.lognormal(10, 0.5)), 1),
            "country": str(rng.choice(["us", "de", "fr"])),
            "gender": str(rng.choice(["f", "m"])),
        }
        for _ in range(n)
    ]


def test_series_arrive_in_prometheus_with_the_right_values(stack: Stack) -> None:
    features = rows(300, seed=1)
    features[0]["age"] = None
    features[1]["country"] = "atlantis"
    predictions = [int(r["age"] is not None and r["age"] > 40) for r in features]
    events = [
        {"request_id": f"r{i}", "features": r, "prediction": p, "latency_seconds": 0.004}
        for i, (r, p) in enumerate(zip(features, predictions, strict=True))
    ]
    events[2]["error"] = True
    for start in range(0, 300, 100):
        status, answer = http(
            "POST", f"{stack.sidecar_url}/v1/events", json.dumps({"events": events[start : start + 100]}).encode()
        )
        assert status == 202 and answer == {"accepted": 100}
    labels = [{"request_id": f"r{i}", "label": 1} for i in range(50)] + [{"request_id": "never-seen", "label": 0}]
    status, answer = http("POST", f"{stack.sidecar_url}/v1/labels", json.dumps({"labels": labels}).encode())
    assert status == 200 and answer == {"joined": 50, "unmatched": 1, "duplicate": 0, "deferred": 0}

    stack.wait_for_value(f"sum(modelmonitor_requests_total{{{LABELS}}})", 300)
    stack.wait_for_value(f'modelmonitor_requests_total{{{LABELS},code="5xx"}}', 1)
    stack.wait_for_value(f'modelmonitor_feature_value_bucket{{{LABELS},feature="age",le="+Inf"}}', 299)
    stack.wait_for_value(f'modelmonitor_feature_missing_total{{{LABELS},feature="age"}}', 1)
    stack.wait_for_value(
        f'modelmonitor_schema_violations_total{{{LABELS},feature="country",kind="unseen_category"}}', 1
    )
    # the bucket counts are the events' ages counted at the profile's bounds
    profile = json.loads((stack.workdir / "profile.json").read_text())
    bounds = next(f for f in profile["features"] if f["name"] == "age")["bounds"]
    ages = np.array([r["age"] for r in features if r["age"] is not None])
    for bound in (bounds[0], bounds[4], bounds[-1]):
        series = stack.query(f'modelmonitor_feature_value_bucket{{{LABELS},feature="age"}}')
        by_le = {float(s["metric"]["le"]): float(s["value"][1]) for s in series}
        assert by_le[bound] == int((ages <= bound).sum())
    # confusion outcomes of the 50 labelled predictions (all labels positive: tp where predicted 1, else fn)
    positives = sum(predictions[:50])
    stack.wait_for_value(f'sum(modelmonitor_labeled_predictions_total{{{LABELS},outcome="tp"}})', positives)
    stack.wait_for_value(f'sum(modelmonitor_labeled_predictions_total{{{LABELS},outcome="fn"}})', 50 - positives)
    stack.wait_for_value(f'modelmonitor_labels_received_total{{{LABELS},result="unmatched"}}', 1)
    stack.wait_for_value(f'modelmonitor_quality{{{LABELS},metric="recall"}}', positives / 50)
    # a full window (100 rows): drift scores beside their calibrated thresholds
    assert stack.scalar(f"modelmonitor_window_rows{{{LABELS}}}") == 100
    drift = stack.query(f'modelmonitor_drift_score{{{LABELS},feature="age"}}')
    thresholds = stack.query(f'modelmonitor_drift_threshold{{{LABELS},feature="age"}}')
    assert {s["metric"]["method"] for s in drift} == {s["metric"]["method"] for s in thresholds} >= {"psi", "ks"}
    latency = stack.scalar(f'modelmonitor_request_duration_seconds_bucket{{{LABELS},le="0.005"}}')
    assert latency == 300


GARBAGE = [
    (b"{definitely not json", "malformed_json"),
    (b'{"events": [{"features": {"age": NaN}}]}', "non_finite"),
    (b'{"events": [{"features": {"shoe_size": 44}}]}', "unknown_feature"),
    (b'{"events": [{"features": [1, 2]}]}', "wrong_shape"),
    (b'{"events": [' + b'{"features": {"age": 1}},' * 20_000 + b"{}]}", "too_large"),
]


def test_garbage_is_counted_as_rejected_and_the_sidecar_keeps_serving(stack: Stack) -> None:
    for body, reason in GARBAGE:
        status, answer = http("POST", f"{stack.sidecar_url}/v1/events", body)
        assert 400 <= status < 500 and answer["reason"] == reason, (status, answer)
    for _body, reason in GARBAGE:
        stack.wait_for_value(f'modelmonitor_events_rejected_total{{{LABELS},reason="{reason}"}}', 1)
    status, answer = http(
        "POST", f"{stack.sidecar_url}/v1/events", json.dumps({"events": [{"features": rows(1, seed=9)[0]}]}).encode()
    )
    assert status == 202
    assert http("GET", f"{stack.sidecar_url}/healthz")[0] == 200
    assert stack.scalar('up{job="sidecar"}') == 1.0
    assert stack.processes[0].poll() is None, stack.log("sidecar")
