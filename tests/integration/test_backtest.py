"""`modelmonitor backtest` against a real Prometheus: hours of backfilled history, and minutes the operator lived.

1. Five hours of history written with Prometheus' own backfill (``promtool tsdb create-blocks-from openmetrics``,
   shipped in Debian's prometheus package) into the data directory of a test Prometheus; the series are designed
   so that the expected episodes follow from the data and the documented semantics alone (a gauge that steps
   from 1 to 5 for exactly one hour, counters whose error ratio steps from 1% to 20% for the same hour, a
   half-hour scrape gap), and the command's report is compared with those numbers.
2. The operator itself, live on the sandbox, deciding on a real exporter scraped by a real Prometheus; then the
   command replays the same minutes from that Prometheus and must find the episode and the alert the operator
   recorded in status.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusSettings
from modelmonitor.backtest.cli import load_monitor
from modelmonitor.backtest.history import Grid, History
from modelmonitor.backtest.replay import replay
from modelmonitor.backtest.report import to_json
from modelmonitor.cli import main
from modelmonitor.signals import measure
from support import Cluster, ExporterProcess, OperatorProcess, PrometheusProcess, wait_for

pytestmark = pytest.mark.cluster

SCRAPE = 15  # seconds between backfilled samples
STEP = 60
HOUR = 3600
NAMESPACE, MODEL = "bt", "fraud"
LABELS = f'namespace="{NAMESPACE}",model="{MODEL}",version="v1"'


def _start() -> datetime:
    """Six hours ago, on the hour: the history ends an hour before now, well inside the retention."""
    now = datetime.now(UTC)
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)


def _breach(offset: int) -> bool:
    return 2 * HOUR <= offset < 3 * HOUR


def _gap(offset: int) -> bool:
    return 4 * HOUR <= offset < 4 * HOUR + 1800


def _openmetrics(start: datetime) -> str:
    """Five hours of a gauge and the sidecar's request and error counters, every 15 s, with a 30-minute gap."""
    offsets = [o for o in range(0, 5 * HOUR, SCRAPE) if not _gap(o)]
    t0 = int(start.timestamp())
    lines = ["# TYPE backtest_quality gauge"]
    lines += [f"backtest_quality{{{LABELS}}} {5 if _breach(o) else 1} {t0 + o}" for o in offsets]
    requests = errors = 0.0
    counted: list[tuple[int, float, float]] = []
    for offset in range(0, 5 * HOUR, SCRAPE):
        requests += 10 * SCRAPE
        errors += (2.0 if _breach(offset) else 0.1) * SCRAPE
        if not _gap(offset):
            counted.append((offset, requests, errors))
    lines.append("# TYPE modelmonitor_requests counter")
    lines += [f"modelmonitor_requests_total{{{LABELS}}} {r} {t0 + o}" for o, r, _ in counted]
    lines.append("# TYPE modelmonitor_request_errors counter")
    lines += [f"modelmonitor_request_errors_total{{{LABELS}}} {e} {t0 + o}" for o, _, e in counted]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _monitor(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelmonitor.dev/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": "fraud", "namespace": NAMESPACE},
        "spec": {
            "target": {"name": "fraud"},
            "model": {"name": MODEL},
            "interval": "1m",
            "policies": [
                {
                    # A query: template: one range query per chunk.
                    "name": "quality",
                    "query": "backtest_quality{model={{model}}}",
                    "window": "5m",
                    "condition": {"op": ">", "threshold": 3},
                    "for": "10m",
                    "keepFiringFor": "5m",
                    "actions": ["page", "scaleUp"],
                },
                {
                    # A built-in signal: the operator's batched errorRate queries.
                    "name": "errors",
                    "signal": "errorRate",
                    "window": "5m",
                    "condition": {"op": ">", "threshold": 0.05},
                    "for": "10m",
                },
                {
                    # A range vector: Prometheus refuses it as a range query, so each step is an instant query.
                    "name": "quality-window",
                    "query": "backtest_quality{model={{model}}}[{{window}}]",
                    "window": "2m",
                    "reduce": "max",
                    "condition": {"op": ">", "threshold": 3},
                },
            ],
            "actions": {
                "page": {"type": "alert", "webhook": {"url": "http://hooks.example/page"}},
                "scaleUp": {
                    "type": "scale",
                    "step": 1,
                    "maxReplicas": 10,
                    "cooldown": "5m",
                    "budget": {"max": 3, "per": "1h"},
                },
            },
            **spec,
        },
    }


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusProcess, datetime]]:
    directory = tmp_path_factory.mktemp("backtest-prometheus")
    start = _start()
    source = directory / "history.om"
    source.write_text(_openmetrics(start))
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(directory / "data")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    prometheus = PrometheusProcess(directory, targets=[])
    yield prometheus, start
    prometheus.stop()


def _backtest(tmp_path: Path, monitor: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(monitor))
    return subprocess.run(
        [sys.executable, "-m", "modelmonitor", "backtest", str(path), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _at(start: datetime, seconds: int) -> str:
    return (start + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_replaying_five_hours_finds_the_designed_episodes_and_actions(
    history: tuple[PrometheusProcess, datetime], tmp_path: Path
) -> None:
    prometheus, start = history
    done = _backtest(
        tmp_path, _monitor(), "--prometheus-url", prometheus.url, "--from", _at(start, 0), "--to",
        _at(start, 5 * HOUR), "--output", "json", "--png", str(tmp_path / "timeline.png"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["steps"] == 5 * 60 + 1
    assert "evaluations (100%)" in done.stderr  # progress on stderr
    policies = {p["name"]: p for p in report["policies"]}

    # The gauge breaches at every step of [2h, 3h): Pending at 2h, Firing after `for` (10m), Resolving at 3h,
    # Inactive after keepFiringFor (5m). The gap leaves no sample in the 5-minute lookback from 4h05m to 4h29m.
    quality = policies["quality"]
    assert quality["episodes"] == [
        {
            "activeSince": _at(start, 2 * HOUR),
            "firingAt": _at(start, 2 * HOUR + 600),
            "resolvedAt": _at(start, 3 * HOUR + 300),
            "peak": 5.0,
        }
    ]
    assert quality["breaches"] == 60
    assert quality["evaluations"] == 301
    assert 24 <= quality["noData"] <= 26, quality
    assert quality["errors"] == 0

    # errorRate over 5 minutes: 1% outside the hour, 20% once the window lies inside it; the ratio crosses 5%
    # about a minute into the hour and falls below it about four minutes after.
    errors = policies["errors"]
    [episode] = errors["episodes"]
    firing = datetime.fromisoformat(episode["firingAt"]) - start
    resolved = datetime.fromisoformat(episode["resolvedAt"]) - start
    assert timedelta(hours=2, minutes=10) <= firing <= timedelta(hours=2, minutes=13), episode
    assert timedelta(hours=3) <= resolved <= timedelta(hours=3, minutes=5), episode
    assert episode["peak"] == pytest.approx(0.2, rel=1e-3)
    assert errors["noData"] > 0 and errors["errors"] == 0

    # The range vector: read with instant queries, reported as such; max over 2 minutes breaches from 2h to 3h01m.
    [instant] = report["source"]["instantOnly"]
    assert "range vector" in instant["reason"] and instant["query"].endswith("[2m]")
    window = policies["quality-window"]
    assert [(e["firingAt"], e["resolvedAt"]) for e in window["episodes"]] == [
        (_at(start, 2 * HOUR), _at(start, 3 * HOUR + 120))
    ]

    # Actions: the alert once per episode; a scale step every cooldown (5m) until the budget (3 per hour) stops
    # them (the cooldown alone would allow a fourth at +15m). A step the cooldown holds back is recorded Skipped
    # once, as the operator records it.
    firing_at = 2 * HOUR + 600
    ran = [(a["name"], a["at"]) for a in report["actions"] if a["result"] == "wouldRun"]
    assert ran == [
        ("page", _at(start, firing_at)),
        ("scaleUp", _at(start, firing_at)),
        ("scaleUp", _at(start, firing_at + 300)),
        ("scaleUp", _at(start, firing_at + 600)),
    ]
    skipped = [(a["at"], a["key"].rsplit("/", 1)[1]) for a in report["actions"] if a["result"] == "skipped"]
    assert skipped == [
        (_at(start, firing_at + 60), "scaleUp#2"),
        (_at(start, firing_at + 360), "scaleUp#3"),
        (_at(start, firing_at + 660), "scaleUp#4"),
    ]
    assert (tmp_path / "timeline.png").read_bytes().startswith(b"\x89PNG")


def test_range_queries_give_the_same_replay_as_an_instant_query_per_step(
    history: tuple[PrometheusProcess, datetime], tmp_path: Path
) -> None:
    # The claim the command rests on: a range query's point at a step is the instant query at that time. Two
    # hours around the bad hour and the end of it, through every policy (the range-vector one is instant-only
    # either way), replayed both ways.
    prometheus, start = history
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(_monitor()))
    monitor = load_monitor(path, NAMESPACE)
    grid = Grid.aligned(start + timedelta(minutes=110), start + timedelta(minutes=230), STEP)
    with PrometheusClient(PrometheusSettings(url=prometheus.url)) as client:
        ranged = History(client, grid)
        reports = []
        for querier in (ranged, client):

            def measure_at(now: datetime, querier: Any = querier) -> dict[str, Any]:
                measured = measure(monitor.requests, querier, at=now, max_parallel=1)
                return {r.policy: measured.results[r] for r in monitor.requests}

            result = replay(monitor, [grid.at(i) for i in range(len(grid))], measure_at)
            reports.append(to_json(result, step_seconds=STEP, source={}))
    assert ranged.range_queries == 4 and ranged.instant_queries == len(grid)
    assert reports[0] == reports[1]
    assert [len(p["episodes"]) for p in reports[0]["policies"]] == [1, 1, 1]


def test_an_unreachable_prometheus_or_a_range_without_data_is_refused(
    history: tuple[PrometheusProcess, datetime], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prometheus, start = history
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(_monitor()))

    def backtest(url: str, begin: int, end: int) -> tuple[int, str]:
        code = main(["backtest", str(path), "--prometheus-url", url, "--from", _at(start, begin), "--to",
                     _at(start, end), "--quiet"])  # fmt: skip
        return code, capsys.readouterr().err

    code, err = backtest("http://127.0.0.1:9", 0, HOUR)
    assert code == 2 and "cannot read the history from Prometheus: connection: cannot connect" in err
    # Before the backfilled history every query is empty: nothing to replay, and the command says so.
    code, err = backtest(prometheus.url, -3 * HOUR, -2 * HOUR)
    assert code == 2 and "no data: none of the monitor's queries returned a series" in err
    # The same Prometheus over the history answers.
    assert backtest(prometheus.url, 0, HOUR)[0] == 0


# --- 2. the operator live, then the same minutes replayed -------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modelmonitor.dev_modelmonitors.yaml"
INTERVAL = 2


def _labeled(good: float, bad: float) -> list[dict[str, Any]]:
    base = {"model": "live", "version": "v1", "group": "all"}
    return [
        {"name": "modelmonitor_labeled_predictions_total", "labels": {**base, "outcome": "tp"}, "rate": good},
        {"name": "modelmonitor_labeled_predictions_total", "labels": {**base, "outcome": "fp"}, "rate": bad},
    ]


def _live_monitor(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelmonitor.dev/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": "live", "namespace": namespace},
        "spec": {
            "target": {"name": "live"},
            "model": {"name": "live"},
            "interval": f"{INTERVAL}s",
            "policies": [
                {
                    "name": "accuracy-drop",
                    "signal": "accuracy",
                    "window": "6s",
                    "condition": {"op": "<", "threshold": 0.8, "clearThreshold": 0.85},
                    "for": "10s",
                    "keepFiringFor": "6s",
                    "minSamples": 5,
                    "actions": ["page"],
                }
            ],
            "actions": {"page": {"type": "alert"}},
        },
    }


def _status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return dict(cluster.kubectl_json("get", "modelmonitor", "live", "-n", namespace).get("status") or {})


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_the_replay_finds_the_episode_and_alert_the_operator_decided_live(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/modelmonitors.modelmonitor.dev", "--timeout=60s")
    exporter = ExporterProcess(tmp_path)
    prometheus = PrometheusProcess(tmp_path, [exporter.address], {"namespace": namespace})
    operator = OperatorProcess({**cluster.env(), "MODELMONITOR_PROMETHEUS_URL": prometheus.url}, namespace, tmp_path)
    try:
        exporter.set(_labeled(good=20, bad=1))
        operator.start()
        applied = datetime.now(UTC)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(_live_monitor(namespace)))
        wait_for("Healthy", lambda: _status(cluster, namespace).get("phase") == "Healthy", timeout=60)
        time.sleep(4)
        exporter.set(_labeled(good=4, bad=20))  # accuracy 0.17: Pending, then Firing after `for`
        wait_for("Firing", lambda: (_status(cluster, namespace).get("policies") or [{}])[0].get("state") == "Firing",
                 timeout=60)  # fmt: skip
        time.sleep(6)
        exporter.set(_labeled(good=20, bad=1))  # Resolving, then Inactive after `keepFiringFor`
        wait_for(
            "Inactive",
            lambda: (_status(cluster, namespace).get("policies") or [{}])[0].get("state") == "Inactive",
            timeout=60,
        )
        time.sleep(4)
        status = _status(cluster, namespace)
        # The replay covers what the live operator evaluated: up to now, not up to the last status it wrote (the
        # resolution itself, when no heartbeat came after it), which would cut off a replay that resolves one step
        # later than the live cycle did.
        evaluated_until = datetime.now(UTC)
    finally:
        operator.stop()

    try:
        # The operator's own record of the episode: the alert's key names its activeSince; Inactive's `since` is
        # when it resolved; the alert was sent in the cycle it started firing.
        [sent] = [a for a in status["actions"] if a["name"] == "page" and not a["key"].endswith("#resolved")]
        live_active = sent["key"].split("/")[3]
        live_resolved = status["policies"][0]["since"]
        monitor = _live_monitor(namespace)
        done = _backtest(
            tmp_path, monitor, "--prometheus-url", prometheus.url, "--from", f"{applied.timestamp():.0f}",
            "--to", f"{evaluated_until.timestamp():.0f}", "--output", "json", "--quiet",
        )  # fmt: skip
    finally:
        prometheus.stop()
        exporter.stop()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    [episode] = report["policies"][0]["episodes"]
    # One evaluation interval of slack: live cycles run a fraction of a second after the aligned step the replay
    # evaluates at, so a scrape may land in between.
    assert abs(_seconds(episode["activeSince"]) - _seconds(live_active)) <= INTERVAL, (episode, live_active)
    assert abs(_seconds(episode["resolvedAt"]) - _seconds(live_resolved)) <= INTERVAL, (episode, live_resolved)
    assert abs(_seconds(episode["firingAt"]) - _seconds(sent["at"])) <= INTERVAL, (episode, sent)
    # `for: 10s` and `keepFiringFor: 6s` as the live operator applied them.
    assert _seconds(episode["firingAt"]) - _seconds(episode["activeSince"]) >= 10
    [page] = [a for a in report["actions"] if a["result"] == "wouldRun"]
    assert page["name"] == "page" and abs(_seconds(page["at"]) - _seconds(sent["at"])) <= INTERVAL
