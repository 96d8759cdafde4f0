"""The Prometheus adapter and the batched signals against a REAL Prometheus scraping a real exporter process.

The exporter is this file run as a script (``python test_prometheus_adapter.py --port-a A --port-b B``): a
prometheus_client process serving the sidecar's series (docs/metrics.md) on two ports, which Prometheus scrapes
as two targets labelled like Kubernetes service discovery would label them (``namespace``, ``pod``). Label
values include quotes, backslashes, braces and newlines.

Each tick (every 0.2 s) the exporter adds fixed counts, so every ratio is exact whatever Prometheus'
``increase()`` extrapolation does (all series of a model grow in proportion).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

PROMETHEUS_BINARY = "/usr/bin/prometheus"

# A label value that breaks naive quoting in every way: a quote, a backslash, braces and a newline.
NASTY = 'we"ird\\mo{del}\nx'
# Decoys that a broken quoting would also select (prefixes of NASTY, or NASTY with the escapes undone).
DECOYS = ['we"ird', 'we"ird\\mo{del}', 'we"ird\\mo{del}\nx2', 'we"ird\\\\mo{del}\\nx', 'we\\"ird']
# For regex matchers: "a.c" must not select "abc".
REGEX_MODEL, REGEX_DECOY = "a.c", "abc"

# Per tick and group. team-a/fraud: no drift; team-b/fraud: strong drift (see run_exporter).
CONFUSION_PER_TICK = {
    ("a", "fraud"): {"tp": 8, "tn": 1, "fp": 1, "fn": 0},
    ("b", "fraud"): {"tp": 2, "tn": 3, "fp": 3, "fn": 2},
    ("b", "churn"): {"tp": 3, "tn": 3, "fp": 2, "fn": 2},
}
FEATURE_BOUNDS = (1.0, 2.0, 3.0)
REFERENCE_CUMULATIVE = (0.25, 0.5, 0.75, 1.0)


def expected_accuracy(side: str, model: str) -> float:
    """Accuracy over both groups, as the exporter counts them (group "young" doubles tp and fp)."""
    per_tick = CONFUSION_PER_TICK[(side, model)]
    total = {outcome: count * (3 if outcome in ("tp", "fp") else 2) for outcome, count in per_tick.items()}
    return (total["tp"] + total["tn"]) / sum(total.values())


# --- the exporter (runs in a subprocess) ------------------------------------------------------------------


def run_exporter(port_a: int, port_b: int) -> None:
    """Serve sidecar-shaped series on two ports until killed."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

    registries = {"a": CollectorRegistry(), "b": CollectorRegistry()}
    metrics: dict[str, dict[str, Any]] = {}
    for side, registry in registries.items():
        metrics[side] = {
            "requests": Counter("modelmonitor_requests", "requests", ["model", "version", "code"], registry=registry),
            "errors": Counter("modelmonitor_request_errors", "errors", ["model", "version"], registry=registry),
            "labeled": Counter(
                "modelmonitor_labeled_predictions",
                "labeled",
                ["model", "version", "group", "outcome"],
                registry=registry,
            ),
            "duration": Histogram(
                "modelmonitor_request_duration_seconds",
                "latency",
                ["model", "version"],
                buckets=(0.05, 0.1, 0.2, 0.5),
                registry=registry,
            ),
            "feature": Histogram(
                "modelmonitor_feature_value",
                "feature values",
                ["model", "version", "feature"],
                buckets=FEATURE_BOUNDS,
                registry=registry,
            ),
            "reference": Gauge(
                "modelmonitor_feature_reference_ratio",
                "reference",
                ["model", "version", "feature", "le"],
                registry=registry,
            ),
            "cpu": Counter("container_cpu_usage_seconds", "cpu", ["container"], registry=registry),
        }
    version = {"a": "v1", "b": "v3"}
    for side in ("a", "b"):
        for model in [m for (s, m) in CONFUSION_PER_TICK if s == side]:
            for bound, ratio in zip([*FEATURE_BOUNDS, math.inf], REFERENCE_CUMULATIVE, strict=True):
                le = "+Inf" if math.isinf(bound) else str(bound)
                metrics[side]["reference"].labels(model, version[side], "amount", le).set(ratio)
    start_http_server(port_a, addr="127.0.0.1", registry=registries["a"])
    start_http_server(port_b, addr="127.0.0.1", registry=registries["b"])

    while True:
        for (side, model), outcomes in CONFUSION_PER_TICK.items():
            m, v = metrics[side], version[side]
            for outcome, count in outcomes.items():
                # Group "young" gets every positive prediction of this tick, group "old" only half of them.
                m["labeled"].labels(model, v, "young", outcome).inc(count * 2 if outcome in ("tp", "fp") else count)
                m["labeled"].labels(model, v, "old", outcome).inc(count)
            m["requests"].labels(model, v, "2xx").inc(9)
            m["requests"].labels(model, v, "5xx").inc(1)
            m["errors"].labels(model, v).inc(1)
            for _ in range(10):
                m["duration"].labels(model, v).observe(0.15)
            # team-a follows the reference (one value per quarter); team-b's values all land in the last bin.
            for value in (0.5, 1.5, 2.5, 3.5) if side == "a" else (3.5, 3.5, 3.5, 3.5):
                m["feature"].labels(model, v, "amount").observe(value)
        for index, name in enumerate([NASTY, *DECOYS, REGEX_MODEL, REGEX_DECOY]):
            # Each model's request rate is unique, so the value tells which series a query selected.
            metrics["a"]["requests"].labels(name, "v1", "2xx").inc(index + 1)
        metrics["a"]["cpu"].labels("model").inc(0.1)  # 0.5 cores at 5 ticks a second
        metrics["b"]["cpu"].labels("model").inc(0.3)  # 1.5 cores
        time.sleep(0.2)


# --- fixtures ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    def stop(self) -> None:
        stop(self.process)


@dataclass
class Exporter:
    port_a: int
    port_b: int
    process: subprocess.Popen[bytes]


def start_prometheus(targets: list[tuple[int, dict[str, str]]], workdir: Path) -> PrometheusServer:
    port = free_port()
    # JSON is YAML: no quoting surprises in the generated config.
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "sidecars",
                        "static_configs": [
                            {"targets": [f"127.0.0.1:{target_port}"], "labels": labels}
                            for target_port, labels in targets
                        ],
                    }
                ],
            }
        )
    )
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115  # closed with the process
    process = subprocess.Popen(
        [
            PROMETHEUS_BINARY,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, workdir)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"Prometheus exited: {(workdir / 'prometheus.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            return False
        import requests

        try:
            return requests.get(f"{server.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until("Prometheus to be ready", ready, timeout=60)
    return server


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    port_a, port_b = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--port-a", str(port_a), "--port-b", str(port_b)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_until("the exporter to listen", lambda: _listening(port_a) and _listening(port_b), timeout=30)
        yield Exporter(port_a, port_b, process)
    finally:
        stop(process)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _targets(exporter: Exporter) -> list[tuple[int, dict[str, str]]]:
    return [
        (exporter.port_a, {"namespace": "team-a", "pod": "fraud-0"}),
        (exporter.port_b, {"namespace": "team-b", "pod": "churn-0"}),
    ]


@pytest.fixture(scope="module")
def prometheus(exporter: Exporter) -> Iterator[PrometheusServer]:
    if not os.path.exists(PROMETHEUS_BINARY):
        pytest.skip(f"{PROMETHEUS_BINARY} is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="mm-prometheus-"))
    server = start_prometheus(_targets(exporter), workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def client(prometheus: PrometheusServer) -> Iterator[Any]:
    from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusSettings

    with PrometheusClient(PrometheusSettings(url=prometheus.url, timeout_seconds=5)) as connected:
        # Enough scrapes for increase() over the test windows: at least 4 samples per series.
        wait_until(
            "four scrapes of the exporter",
            lambda: _min_samples(connected, "modelmonitor_labeled_predictions_total[1m]") >= 4,
            timeout=60,
        )
        yield connected


def _min_samples(client: Any, selector: str) -> int:
    answer = client.query(f"count_over_time({selector})")
    if not answer.ok or not answer.samples:
        return 0
    return int(min(answer.values))


# --- the tests ---------------------------------------------------------------------------------------------


def numbers(measurement: Any) -> tuple[float, ...]:
    """The values of a `Measurement`'s series."""
    return tuple(series.value for series in measurement.series)


pytestmark = pytest.mark.cluster


def test_nasty_label_values_select_exactly_their_series(client: Any) -> None:
    from modelmonitor.promql import render_template

    names = [NASTY, *DECOYS, REGEX_MODEL, REGEX_DECOY]
    at = datetime.now(UTC)
    selected: list[float] = []
    for name in names:
        text = render_template(
            "sum by (model) (increase("
            "modelmonitor_requests_total{namespace={{namespace}}, model={{model}}}[{{window}}]))",
            {"model": name, "namespace": "team-a", "window": "1m"},
        )
        answer = client.query(text, at=at)
        assert answer.ok, answer.error
        assert [s.labels["model"] for s in answer.samples] == [name], (text, answer.samples)
        selected.append(answer.values[0])
    # The value identifies the series: the exporter adds index+1 per tick to model number `index` only.
    assert [value / selected[0] for value in selected] == pytest.approx(list(range(1, len(names) + 1)))

    # A regex matcher: the value is regex-escaped too, so "a.c" does not select "abc".
    for name in (REGEX_MODEL, NASTY):
        answer = client.query(render_template("modelmonitor_requests_total{model=~{{model}}}", {"model": name}))
        assert answer.ok, answer.error
        assert {s.labels["model"] for s in answer.samples} == {name}


def test_batched_signals_give_each_model_its_own_value(client: Any) -> None:
    from modelmonitor.policy.model import MeasurementKind
    from modelmonitor.signals import SignalRequest, measure

    requests = [
        SignalRequest("team-a", "fraud-mm", "acc", "fraud", "1m", signal="accuracy"),
        SignalRequest("team-b", "fraud-mm", "acc", "fraud", "1m", signal="accuracy"),
        SignalRequest("team-b", "churn-mm", "acc", "churn", "1m", signal="accuracy"),
        SignalRequest("team-b", "churn-mm", "acc-v3", "churn", "1m", signal="accuracy", version="v3"),
        SignalRequest("team-a", "fraud-mm", "err", "fraud", "1m", signal="errorRate"),
        SignalRequest("team-a", "fraud-mm", "p95", "fraud", "1m", signal="latencyP95"),
        SignalRequest("team-b", "fraud-mm", "fair", "fraud", "1m", signal="equalOpportunityGap"),
        SignalRequest("team-a", "fraud-mm", "drift", "fraud", "1m", signal="dataDrift", auto_threshold=True),
        SignalRequest("team-b", "fraud-mm", "drift", "fraud", "1m", signal="dataDrift", auto_threshold=True),
        SignalRequest("team-a", "fraud-mm", "cpu", "fraud", "1m", signal="cpu"),
        SignalRequest("team-b", "churn-mm", "cpu", "churn", "1m", signal="cpu"),
        SignalRequest("team-b", "fraud-mm", "cpu", "fraud", "1m", signal="cpu"),
        SignalRequest("team-a", "ghost-mm", "acc", "ghost", "1m", signal="accuracy"),
        SignalRequest("team-c", "fraud-mm", "acc", "fraud", "1m", signal="accuracy"),
    ]
    at = datetime.now(UTC)
    cycle = measure(requests, client, at=at)
    results = {(r.namespace, r.model, r.policy): cycle.results[r] for r in requests}
    for key, result in results.items():
        assert result.kind is not MeasurementKind.ERROR, (key, result)

    assert numbers(results[("team-a", "fraud", "acc")]) == (pytest.approx(expected_accuracy("a", "fraud")),)
    assert numbers(results[("team-b", "fraud", "acc")]) == (pytest.approx(expected_accuracy("b", "fraud")),)
    assert numbers(results[("team-b", "churn", "acc")]) == (pytest.approx(expected_accuracy("b", "churn")),)
    assert numbers(results[("team-b", "churn", "acc-v3")]) == (pytest.approx(expected_accuracy("b", "churn")),)
    assert len({numbers(results[(ns, m, "acc")]) for ns, m in [("team-a", "fraud"), ("team-b", "fraud")]}) == 2
    assert results[("team-a", "fraud", "acc")].series[0].samples is not None
    assert results[("team-a", "fraud", "acc")].series[0].samples > 0
    assert numbers(results[("team-a", "fraud", "err")]) == (pytest.approx(0.1),)
    # All observations are 0.15 s: the quantile interpolates inside the (0.1, 0.2] bucket.
    assert 0.1 < numbers(results[("team-a", "fraud", "p95")])[0] <= 0.2
    # true-positive rates: young tp*2 / (tp*2 + fn) = 4/6; old tp / (tp + fn) = 2/4.
    assert numbers(results[("team-b", "fraud", "fair")]) == (pytest.approx(4 / 6 - 2 / 4),)

    calm, drifted = results[("team-a", "fraud", "drift")], results[("team-b", "fraud", "drift")]
    assert numbers(calm)[0] == pytest.approx(0.0, abs=1e-6)
    assert numbers(drifted)[0] > 1.0
    # threshold: auto judges each side at the rows its window holds (the reference ratios are all it needs).
    assert calm.threshold is not None and drifted.threshold is not None
    assert numbers(calm)[0] <= calm.threshold < numbers(drifted)[0]
    assert "rows (false-alarm rate 0.001% over 1 compared)" in drifted.detail  # the default rate, 1e-5
    # cpu: one value per pod, the pod's container CPU joined to its model by (namespace, pod). team-b's pod
    # serves two models; each gets the pod's usage (and team-b's pod burns about three times team-a's).
    for namespace, model in [("team-a", "fraud"), ("team-b", "churn")]:
        pod_cpu = client.query(
            f'sum(rate(container_cpu_usage_seconds_total{{namespace="{namespace}"}}[1m]))', at=at
        ).values
        assert numbers(results[(namespace, model, "cpu")]) == pytest.approx(pod_cpu)
    assert numbers(results[("team-b", "fraud", "cpu")]) == numbers(results[("team-b", "churn", "cpu")])
    assert numbers(results[("team-b", "churn", "cpu")])[0] > 2 * numbers(results[("team-a", "fraud", "cpu")])[0]

    # Absent monitors get NoData (never 0): an unknown model, and a known model in another namespace.
    assert results[("team-a", "ghost", "acc")].kind is MeasurementKind.NO_DATA
    assert numbers(results[("team-a", "ghost", "acc")]) == ()
    assert results[("team-c", "fraud", "acc")].kind is MeasurementKind.NO_DATA

    # One query per (kind, window, grouping), however many monitors ask: accuracy for five monitors is one
    # query, plus one for the monitor naming a version; errorRate 2, latency 2 (Prometheus' quantile and the
    # requests), fairness 1, dataDrift with auto threshold 4, cpu 1 (for three monitors).
    assert cycle.template_queries == 0
    assert cycle.batched_queries == len({q for r in cycle.results.values() for q in r.queries}) == 12


def test_stopped_prometheus_is_a_connection_error_not_no_data(exporter: Exporter) -> None:
    from modelmonitor.adapters.prometheus import ErrorKind, PrometheusClient, PrometheusSettings
    from modelmonitor.policy.model import MeasurementKind
    from modelmonitor.signals import SignalRequest, measure

    workdir = Path(tempfile.mkdtemp(prefix="mm-prometheus-stop-"))
    server = start_prometheus(_targets(exporter), workdir)
    try:
        with PrometheusClient(PrometheusSettings(url=server.url, timeout_seconds=3, retries=0)) as client:
            assert client.query("vector(1)").values == (1.0,)
            server.stop()
            answer = client.query("vector(1)")
            assert answer.error is not None
            assert answer.error.kind is ErrorKind.CONNECTION
            assert answer.samples == ()

            request = SignalRequest("team-a", "fraud-mm", "acc", "fraud", "1m", signal="accuracy")
            result = measure([request], client).results[request]
            assert result.kind is MeasurementKind.ERROR
            assert numbers(result) == ()
            assert result.reason.startswith(f"{ErrorKind.CONNECTION.value}: ")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_bad_promql_is_a_promql_error(client: Any) -> None:
    from modelmonitor.adapters.prometheus import ErrorKind
    from modelmonitor.policy.model import MeasurementKind
    from modelmonitor.signals import SignalRequest, measure

    answer = client.query("sum(rate(modelmonitor_requests_total[1m])")
    assert answer.error is not None
    assert answer.error.kind is ErrorKind.PROMQL
    assert answer.error.error_type == "bad_data"
    assert answer.error.status_code == 400
    assert "parse error" in answer.error.message

    request = SignalRequest("team-a", "m", "custom", "fraud", "1m", query="rate(x[{{window}}]) by (model)")
    result = measure([request], client).results[request]
    assert result.kind is MeasurementKind.ERROR
    assert result.reason.startswith(f"{ErrorKind.PROMQL.value}: ")


def test_read_timeout_is_a_timeout_error() -> None:
    """A server that accepts the connection and never answers: the client gives up after its timeout."""
    from modelmonitor.adapters.prometheus import ErrorKind, PrometheusClient, PrometheusSettings

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with PrometheusClient(PrometheusSettings(url=url, timeout_seconds=0.5)) as client:
            started = time.monotonic()
            answer = client.query("vector(1)")
            elapsed = time.monotonic() - started
    assert answer.error is not None
    assert answer.error.kind is ErrorKind.TIMEOUT
    assert elapsed < 3


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="serve sidecar-shaped metrics for the adapter tests")
    parser.add_argument("--port-a", type=int, required=True)
    parser.add_argument("--port-b", type=int, required=True)
    arguments = parser.parse_args()
    run_exporter(arguments.port_a, arguments.port_b)
