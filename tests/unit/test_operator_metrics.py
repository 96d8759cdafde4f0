"""The operator's /metrics: one series set per monitor and policy, mirroring the status the loop last wrote.

Statuses come from the real policy engine (evaluate + render_status) and reach the collector through the loop's
real `Registry`, as in the running operator; each test reads a fresh CollectorRegistry.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest

from modelmonitor import operator_metrics
from modelmonitor.loop import CycleReport, Registry
from modelmonitor.operator_metrics import OperatorMetrics, health_app
from modelmonitor.policy import (
    Measurement,
    MonitorSpec,
    Rule,
    evaluate,
    render_invalid_status,
    render_status,
)
from support import OPERATOR_METRIC_PREFIXES, operator_metric_names

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
STATES = ("Inactive", "Pending", "Firing", "Resolving", "NoData", "Error")

ACCURACY = Rule("accuracy", "<", 0.85, clear_threshold=0.88, window="10m")
LATENCY = Rule("latency", ">", 0.5, for_seconds=300, window="5m")


def status_after(
    cycles: Sequence[Mapping[str, Measurement]], *rules: Rule, paused: bool = False, name: str = "fraud"
) -> dict[str, Any]:
    """The status the loop would have written after these cycles (30 s apart)."""
    spec = MonitorSpec("ml", name, rules or (ACCURACY, LATENCY), paused=paused)
    status: dict[str, Any] = {}
    for i, measurements in enumerate(cycles):
        evaluation = evaluate(spec, status, measurements, T0 + timedelta(seconds=30 * i))
        status = render_status(spec, evaluation, prior_status=status, observed_generation=1)
    return status


def body(name: str, status: Mapping[str, Any], namespace: str = "ml") -> dict[str, Any]:
    """A watched ModelMonitor carrying `status`."""
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "target": {"name": name},
            "model": {"name": name},
            "policies": [
                {"name": "accuracy", "signal": "accuracy", "condition": {"op": "<", "threshold": 0.85}},
                {"name": "latency", "signal": "latencyP95", "condition": {"op": ">", "threshold": 0.5}},
            ],
        },
        "status": dict(status),
    }


def metrics_of(*bodies: Mapping[str, Any]) -> tuple[CollectorRegistry, Registry]:
    monitors = Registry()
    for watched in bodies:
        monitors.upsert(watched)
    registry = CollectorRegistry()
    OperatorMetrics(registry, monitors=monitors)
    return registry, monitors


def sample(registry: CollectorRegistry, metric: str, **labels: str) -> float | None:
    return registry.get_sample_value(metric, {"namespace": "ml", "monitor": "fraud", **labels})


def state_of(registry: CollectorRegistry, policy: str) -> list[str]:
    """The states whose series is 1 (exactly one for a policy the loop has evaluated)."""
    return [s for s in STATES if sample(registry, "modelmonitor_policy_state", policy=policy, state=s) == 1.0]


def test_each_policy_exports_its_state_value_and_threshold() -> None:
    status = status_after([{"accuracy": Measurement.value(0.80, 500), "latency": Measurement.value(0.7, 900)}])
    registry, _ = metrics_of(body("fraud", status))
    assert state_of(registry, "accuracy") == ["Firing"]  # for: 0s
    assert state_of(registry, "latency") == ["Pending"]  # for: 5m
    for s in STATES:  # one-hot: every state has a series, so a change never leaves a gap in a graph
        assert sample(registry, "modelmonitor_policy_state", policy="accuracy", state=s) is not None
    assert sample(registry, "modelmonitor_policy_value", policy="accuracy") == 0.80
    assert sample(registry, "modelmonitor_policy_value", policy="latency") == 0.7
    assert sample(registry, "modelmonitor_policy_threshold", policy="latency") == 0.5
    assert sample(registry, "modelmonitor_monitor_phase", phase="Firing") == 1.0
    assert sample(registry, "modelmonitor_monitor_phase", phase="Healthy") == 0.0
    # The values are those of the status, the one place users read.
    entries = {p["name"]: p for p in status["policies"]}
    assert sample(registry, "modelmonitor_policy_value", policy="accuracy") == entries["accuracy"]["value"]


def test_the_threshold_in_force_is_the_clear_threshold_while_firing() -> None:
    status = status_after([{"accuracy": Measurement.value(0.80, 500), "latency": Measurement.value(0.1, 900)}] * 2)
    registry, _ = metrics_of(body("fraud", status))
    assert state_of(registry, "accuracy") == ["Firing"]
    assert sample(registry, "modelmonitor_policy_threshold", policy="accuracy") == 0.88


@pytest.mark.parametrize(
    ("missing", "state"),
    [
        (Measurement.no_data("the query returned no series"), "NoData"),
        (Measurement.error("Prometheus: connection refused"), "Error"),
        (Measurement.invalid("a string where a number was expected"), "Error"),
    ],
)
def test_no_value_series_without_a_measurement(missing: Measurement, state: str) -> None:
    """The status keeps the last measured value for people; the value series must not present it as current."""
    measured = {"accuracy": Measurement.value(0.80, 500), "latency": Measurement.value(0.1, 900)}
    status = status_after([measured, {"accuracy": missing, "latency": Measurement.value(0.1, 900)}])
    assert next(p for p in status["policies"] if p["name"] == "accuracy")["value"] == 0.80  # kept in status
    registry, _ = metrics_of(body("fraud", status))
    assert state_of(registry, "accuracy") == [state]
    assert sample(registry, "modelmonitor_policy_value", policy="accuracy") is None  # not 0, not the old 0.80
    threshold = next(p for p in status["policies"] if p["name"] == "accuracy")["threshold"]
    assert sample(registry, "modelmonitor_policy_threshold", policy="accuracy") == threshold
    assert sample(registry, "modelmonitor_policy_value", policy="latency") == 0.1


def test_a_policy_never_measured_has_no_value() -> None:
    status = status_after([{"accuracy": Measurement.no_data("no series"), "latency": Measurement.value(0.1, 9)}])
    registry, _ = metrics_of(body("fraud", status))
    assert state_of(registry, "accuracy") == ["NoData"]
    assert sample(registry, "modelmonitor_policy_value", policy="accuracy") is None
    assert "modelmonitor_policy_value{" in generate_latest(registry).decode()  # latency's


def test_an_uncalibrated_auto_threshold_has_no_threshold_series() -> None:
    drift = Rule("drift", ">", None, window="1h")
    status = status_after([{"drift": Measurement.value(0.05, 900)}], drift)
    registry, _ = metrics_of(body("fraud", status))
    assert state_of(registry, "drift") == ["NoData"]
    assert sample(registry, "modelmonitor_policy_threshold", policy="drift") is None


def test_a_paused_monitor_shows_its_phase_and_no_values() -> None:
    measured = {"accuracy": Measurement.value(0.95, 500), "latency": Measurement.value(0.1, 900)}
    status = status_after([measured, measured], paused=False)
    paused = status_after([measured, measured], paused=True)
    registry, _ = metrics_of(body("fraud", status), body("paused", paused))
    assert sample(registry, "modelmonitor_monitor_phase", monitor="paused", phase="Paused") == 1.0
    assert sample(registry, "modelmonitor_policy_value", monitor="paused", policy="accuracy") is None
    assert sample(registry, "modelmonitor_policy_value", policy="accuracy") == 0.95


def test_a_deleted_monitor_disappears_at_the_next_scrape() -> None:
    measured = {"accuracy": Measurement.value(0.95, 500), "latency": Measurement.value(0.1, 900)}
    registry, monitors = metrics_of(body("fraud", status_after([measured])), body("churn", status_after([measured])))
    assert sample(registry, "modelmonitor_policy_value", monitor="churn", policy="accuracy") == 0.95
    monitors.remove("ml", "churn")
    text = generate_latest(registry).decode()
    assert 'monitor="churn"' not in text
    assert sample(registry, "modelmonitor_policy_value", policy="accuracy") == 0.95


def test_a_policy_removed_from_the_spec_disappears_once_the_loop_writes_again() -> None:
    measured = {"accuracy": Measurement.value(0.95, 500), "latency": Measurement.value(0.1, 900)}
    registry, monitors = metrics_of(body("fraud", status_after([measured])))
    assert sample(registry, "modelmonitor_policy_value", policy="latency") == 0.1
    entry = monitors.all()[0]
    later = status_after([measured, {"accuracy": Measurement.value(0.9, 500)}], ACCURACY)
    monitors.record_written(entry, later, next_due=0.0)  # what the loop does after its status write
    assert sample(registry, "modelmonitor_policy_value", policy="latency") is None
    assert state_of(registry, "latency") == []
    assert sample(registry, "modelmonitor_policy_value", policy="accuracy") == 0.9


def test_an_unusable_answer_is_phase_invalid_with_the_policy_in_error() -> None:
    measured = {"accuracy": Measurement.value(0.80, 500), "latency": Measurement.value(0.1, 900)}
    junk = {"accuracy": Measurement.invalid("a matrix"), "latency": Measurement.value(0.2, 900)}
    registry, _ = metrics_of(body("fraud", status_after([measured, junk])))
    assert sample(registry, "modelmonitor_monitor_phase", phase="Invalid") == 1.0
    assert state_of(registry, "accuracy") == ["Error"]
    assert sample(registry, "modelmonitor_policy_value", policy="latency") == 0.2


def test_an_invalid_spec_shows_only_its_phase() -> None:
    measured = {"accuracy": Measurement.value(0.80, 500), "latency": Measurement.value(0.1, 900)}
    invalid = render_invalid_status("invalid spec: bad template", now=T0, prior_status=status_after([measured]))
    assert invalid["policies"]  # kept in status so a fixed spec resumes, but not evaluated meanwhile
    registry, _ = metrics_of(body("fraud", invalid))
    assert sample(registry, "modelmonitor_monitor_phase", phase="Invalid") == 1.0
    assert state_of(registry, "accuracy") == []
    assert sample(registry, "modelmonitor_policy_value", policy="accuracy") is None


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "accuracy", "state": "Sleeping", "value": 0.9},
        {"state": "Inactive", "value": 0.9},
        {"name": "accuracy", "state": "Inactive", "value": "0.9"},
        {"name": "accuracy", "state": "Inactive", "value": math.nan},
        {"name": "accuracy", "state": "Inactive", "value": True},
        "accuracy",
    ],
)
def test_a_status_the_loop_could_not_have_written_is_left_out_not_a_failed_scrape(entry: Any) -> None:
    registry, _ = metrics_of(body("fraud", {"phase": "Healthy", "policies": [entry]}))
    assert sample(registry, "modelmonitor_policy_value", policy="accuracy") is None
    assert sample(registry, "modelmonitor_monitor_phase", phase="Healthy") == 1.0


def test_a_monitor_not_evaluated_yet_has_no_series() -> None:
    registry, _ = metrics_of(body("fraud", {}))
    assert "modelmonitor_monitor_phase{" not in generate_latest(registry).decode()


def test_without_monitors_only_the_loop_counters_are_exported() -> None:
    registry = CollectorRegistry()
    OperatorMetrics(registry)
    assert "modelmonitor_policy_state" not in generate_latest(registry).decode()
    assert registry.get_sample_value("modelmonitor_operator_cycles_total") == 0.0


def test_the_policy_series_names_are_registered_without_a_scrape() -> None:
    """describe() gives the names, so a second collector exporting them is refused at registration."""
    registry, monitors = metrics_of()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        OperatorMetrics(registry, monitors=monitors)


def test_every_operator_series_is_documented() -> None:
    docs = (ROOT / "docs" / "operator.md").read_text() + (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`(modelmonitor_[a-z_]+)", docs))
    exported = {n for n in operator_metric_names() if not n.endswith("_created")}
    for name in exported:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert name in documented or base in documented, f"{name} is exported but not documented"
    bases = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exported}
    stale = {n for n in documented if n.startswith(OPERATOR_METRIC_PREFIXES)} - exported - bases
    assert not stale, f"documented but not exported: {stale}"


def test_healthz_is_unhealthy_until_a_cycle_completes_and_once_cycles_stall() -> None:
    metrics = OperatorMetrics(CollectorRegistry())

    async def healthz(stall_seconds: float) -> tuple[int, str]:
        async with TestClient(TestServer(health_app(metrics, stall_seconds))) as client:
            response = await client.get("/healthz")
            return response.status, await response.text()

    assert asyncio.run(healthz(120)) == (503, "no evaluation cycle has completed yet\n")
    metrics.cycle_done(CycleReport(), monitors=0)
    assert asyncio.run(healthz(120)) == (200, "ok\n")
    code, text = asyncio.run(healthz(1e-9))
    assert code == 503 and text.startswith("no evaluation cycle completed for"), text


def test_healthz_is_unhealthy_while_the_lease_renewal_is_overdue_and_healthy_again_after() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.cycle_done(CycleReport(), monitors=0)
    overdue: list[float | None] = [None]
    metrics.lease_overdue = lambda: overdue[0]

    async def healthz() -> tuple[int, str]:
        async with TestClient(TestServer(health_app(metrics, 120))) as client:
            response = await client.get("/healthz")
            return response.status, await response.text()

    assert asyncio.run(healthz()) == (200, "ok\n")
    overdue[0] = 12.4
    assert asyncio.run(healthz()) == (503, "not evaluating: the Lease was last renewed 12 s ago\n")
    overdue[0] = None
    assert asyncio.run(healthz()) == (200, "ok\n")


def test_the_served_text_is_prometheus_clients_and_follows_every_status_change() -> None:
    """/metrics serves `exposition` (each monitor's lines kept until its status is written again): it must say exactly
    what prometheus_client says for the same statuses, before and after changes."""
    measured = {"accuracy": Measurement.value(0.80, 500), "latency": Measurement.value(1 / 3, 900)}
    odd = Rule('it\'s "odd" \\ \n', ">", 1e21, window="5m")
    invalid = render_invalid_status("invalid spec: bad template", now=T0, prior_status=status_after([measured]))
    monitors = Registry()
    for watched in (
        body("fraud", status_after([measured])),
        body("idle", status_after([{"accuracy": Measurement.no_data("no series")}])),
        body("broken", invalid),
        body("odd", status_after([{odd.name: Measurement.value(2e21, 10)}], odd), namespace="other"),
        body("new", {}),
    ):
        monitors.upsert(watched)
    metrics = OperatorMetrics(CollectorRegistry(), monitors=monitors)
    metrics.cycle_done(CycleReport(evaluated=5, queries=4, seconds=0.5, largest_answer=12), 5)
    first = metrics.exposition()
    assert first == generate_latest(metrics.registry)
    assert b'policy="it\'s \\"odd\\" \\\\ \\n"' in first and b"2e+21" in first
    assert metrics.exposition() == first  # kept text, same answer

    fraud = next(e for e in monitors.all() if e.name == "fraud")
    monitors.record_written(fraud, status_after([measured, {"accuracy": Measurement.value(0.5, 500)}]), 0.0)
    monitors.remove("other", "odd")
    changed = metrics.exposition()
    assert changed == generate_latest(metrics.registry) != first
    assert b'monitor="odd"' not in changed
    assert b'modelmonitor_policy_value{monitor="fraud",namespace="ml",policy="accuracy"} 0.5\n' in changed
    assert b"modelmonitor_operator_largest_answer_series 12.0" in changed


def test_metrics_over_http_is_the_whole_text_sent_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """/metrics sends the kept lines piece by piece, never joined: the scraper still gets the exact text, with its
    length announced."""
    monkeypatch.setattr(operator_metrics, "METRICS_WRITE_BYTES", 300)
    measured = {"accuracy": Measurement.value(0.80, 500), "latency": Measurement.value(1 / 3, 900)}
    monitors = Registry()
    for i in range(12):
        monitors.upsert(body(f"m{i:02d}", status_after([measured])))
    metrics = OperatorMetrics(CollectorRegistry(), monitors=monitors)
    metrics.cycle_done(CycleReport(evaluated=12, queries=4, seconds=0.5), 12)
    expected = generate_latest(metrics.registry)
    assert len(expected) > 10 * operator_metrics.METRICS_WRITE_BYTES

    async def scrape() -> tuple[int, str | None, bytes]:
        async with TestClient(TestServer(health_app(metrics, 120))) as client:
            response = await client.get("/metrics")
            return response.status, response.headers.get("Content-Length"), await response.read()

    code, length, served = asyncio.run(scrape())
    assert code == 200 and served == expected and length == str(len(expected))


def test_the_kept_lines_are_held_compressed_and_scraped_whole() -> None:
    """The lines /metrics keeps per monitor take a fraction of their text's size (at 10,000 monitors the text is
    tens of MiB), and decompress to exactly the text prometheus_client would write."""
    measured = {"accuracy": Measurement.value(0.91, 500), "latency": Measurement.value(0.12, 900)}
    monitors = Registry()
    for i in range(200):
        monitors.upsert(body(f"model-{i:03d}", status_after([measured])))
    metrics = OperatorMetrics(CollectorRegistry(), monitors=monitors)
    exposition = metrics.exposition_parts()
    text = exposition.text()
    assert text == generate_latest(metrics.registry) and exposition.length == len(text)
    held = sum(len(data) for data, _, _ in exposition.parts)
    assert held < len(text) / 5, (held, len(text))
