"""`modelmonitor backtest`: replay speed with range queries against one instant query per step, in one run.

A real Prometheus (Debian's) is given history with its own backfill (``promtool tsdb create-blocks-from
openmetrics``): a fleet of ``models`` models, each with the sidecar's request and error counters and a quality
gauge, scraped every 15 s, with one bad hour per day. One monitor (30 s interval, a built-in ``errorRate``
policy, whose batched query returns every model's series, and a ``query:`` policy on the gauge) is replayed:

* **range**: the command's path, `modelmonitor.backtest.history.History` (one ``query_range`` per query text
  and chunk of 720 steps);
* **baseline**: the same replay asking Prometheus one instant query per query text and step (the operator's
  querier used as is).

Both replays must give the same report (episodes, counts, actions); the figures are wall-clock seconds of the
replay (Prometheus on the same machine) and their ratio. Then the range path alone over a longer history.

Usage::

    python bench/bench_backtest.py            # 1 day side by side + 7 days range only; writes bench/results/backtest.md
    python bench/bench_backtest.py --quick    # 2 hours side by side, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusSettings, QueryResult
from modelmonitor.backtest.history import Grid, History
from modelmonitor.backtest.replay import replay
from modelmonitor.backtest.report import to_json
from modelmonitor.policy import Measurement
from modelmonitor.reconcile import Monitor, monitor_from_body
from modelmonitor.signals import measure
from modelmonitor_sandbox.devcluster.processes import free_port

RESULTS = Path(__file__).parent / "results" / "backtest.md"
SCRAPE = 15
STEP = 30
DAY = 86_400


def openmetrics(start: int, seconds: int, models: int) -> str:
    """``models`` models' counters and gauge every 15 s for ``seconds``; each day's 01:00-02:00 is bad for model 0."""
    families: dict[str, list[str]] = {"requests": [], "errors": [], "quality": []}
    for m in range(models):
        labels = f'namespace="bench",model="m{m}",version="v1"'
        requests = errors = 0.0
        for offset in range(0, seconds, SCRAPE):
            bad = m == 0 and 3600 <= offset % DAY < 2 * 3600
            requests += 10 * SCRAPE
            errors += (2.0 if bad else 0.1) * SCRAPE
            at = start + offset
            families["requests"].append(f"modelmonitor_requests_total{{{labels}}} {requests} {at}")
            families["errors"].append(f"modelmonitor_request_errors_total{{{labels}}} {errors} {at}")
            families["quality"].append(f"bench_quality{{{labels}}} {5 if bad else 1} {at}")
    lines = ["# TYPE modelmonitor_requests counter", *families["requests"]]
    lines += ["# TYPE modelmonitor_request_errors counter", *families["errors"]]
    lines += ["# TYPE bench_quality gauge", *families["quality"], "# EOF"]
    return "\n".join(lines) + "\n"


def the_monitor() -> Monitor:
    return monitor_from_body(
        {
            "metadata": {"namespace": "bench", "name": "m0"},
            "spec": {
                "target": {"name": "m0"},
                "model": {"name": "m0"},
                "interval": f"{STEP}s",
                "policies": [
                    {"name": "errors", "signal": "errorRate", "window": "5m",
                     "condition": {"op": ">", "threshold": 0.05}, "for": "10m", "actions": ["page"]},
                    {"name": "quality", "query": "bench_quality{model={{model}}}", "window": "5m",
                     "condition": {"op": ">", "threshold": 3}, "for": "5m", "keepFiringFor": "5m"},
                ],
                "actions": {"page": {"type": "alert", "webhook": {"url": "http://hooks.example/page"}}},
            },
        }
    )  # fmt: skip


class Counting:
    """The operator's querier as is, counting requests (the baseline: one instant query per text and step)."""

    def __init__(self, client: PrometheusClient) -> None:
        self.client = client
        self.requests = 0

    def query(self, promql: str, *, at: dt.datetime | None = None) -> QueryResult:
        self.requests += 1
        return self.client.query(promql, at=at)


def timed_replay(monitor: Monitor, grid: Grid, querier: Any) -> tuple[float, dict[str, Any]]:
    def measure_at(now: dt.datetime) -> dict[str, Measurement]:
        measured = measure(monitor.requests, querier, at=now, max_parallel=1)
        return {r.policy: measured.results[r] for r in monitor.requests}

    started = time.perf_counter()
    result = replay(monitor, (grid.at(i) for i in range(len(grid))), measure_at, total=len(grid))
    seconds = time.perf_counter() - started
    document = to_json(result, step_seconds=grid.step_seconds, source={})
    return seconds, document


def start_prometheus(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (directory / "prometheus.yml").write_text("global: {scrape_interval: 15s}\n")
    process = subprocess.Popen(
        ["prometheus", f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("Prometheus did not become ready")


def run(seconds: int, models: int, side_by_side: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    now = int(time.time())
    start = (now - seconds - 3600) // DAY * DAY  # midnight, so every day has its bad hour
    end = start + seconds
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        directory = Path(tmp)
        progress(f"writing {seconds // 3600} h of history for {models} models")
        source = directory / "history.om"
        source.write_text(openmetrics(start, seconds, models))
        backfill_started = time.perf_counter()
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(directory / "data")],
                       check=True, capture_output=True)  # fmt: skip
        backfill = time.perf_counter() - backfill_started
        process, url = start_prometheus(directory)
        try:
            client = PrometheusClient(PrometheusSettings(url=url, timeout_seconds=60))
            monitor = the_monitor()
            grid = Grid.aligned(dt.datetime.fromtimestamp(start, dt.UTC), dt.datetime.fromtimestamp(end, dt.UTC), STEP)
            progress(f"range path: {len(grid)} steps")
            history = History(client, grid)
            range_seconds, range_doc = timed_replay(monitor, grid, history)
            out: dict[str, Any] = {
                "hours": seconds // 3600, "models": models, "steps": len(grid), "backfill": backfill,
                "range": range_seconds, "range_requests": history.range_queries + history.instant_queries,
                "episodes": sum(len(p["episodes"]) for p in range_doc["policies"]),
            }  # fmt: skip
            if side_by_side:
                progress("baseline: one instant query per step")
                counting = Counting(client)
                base_seconds, base_doc = timed_replay(monitor, grid, counting)
                out.update(baseline=base_seconds, baseline_requests=counting.requests, same=base_doc == range_doc)
            client.close()
            return out
        finally:
            process.terminate()
            process.wait(timeout=30)


def report(side: dict[str, Any], long: dict[str, Any] | None, quick: bool) -> str:
    load = os.getloadavg()[0]
    lines = [
        "# Backtest benchmark",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores "
        f"(shared with other work; 1-minute load average {load:.1f} at the end), Python {platform.python_version()}"
        f"{' (quick mode)' if quick else ''}. Reproduce with `python bench/bench_backtest.py`.",
        "",
        "One monitor (30 s interval; a built-in `errorRate` policy whose batched query returns every model's "
        "series, and a `query:` policy) replayed over history backfilled into a real Prometheus on the same "
        "machine with `promtool tsdb create-blocks-from openmetrics` (15 s samples, one bad hour a day).",
        "",
        "| history | models | steps | path | HTTP requests | replay seconds | steps/s | vs baseline |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
        f"| {side['hours']} h | {side['models']} | {side['steps']:,} | range queries (the command) | "
        f"{side['range_requests']:,} | {side['range']:.1f} | {side['steps'] / side['range']:,.0f} | "
        f"{side['baseline'] / side['range']:.1f}x |",
        f"| {side['hours']} h | {side['models']} | {side['steps']:,} | baseline: an instant query per step | "
        f"{side['baseline_requests']:,} | {side['baseline']:.1f} | {side['steps'] / side['baseline']:,.0f} | 1.0x |",
    ]
    if long is not None:
        lines.append(
            f"| {long['hours']} h | {long['models']} | {long['steps']:,} | range queries (the command) | "
            f"{long['range_requests']:,} | {long['range']:.1f} | {long['steps'] / long['range']:,.0f} | "
            "(baseline not run) |"
        )
    lines += [
        "",
        f"Both paths gave the same report (episodes, counts, actions): **{side['same']}** "
        f"({side['episodes']} episodes). Backfill of the {side['hours']} h history took {side['backfill']:.1f} s.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 hours side by side, print only")
    parser.add_argument("--models", type=int, default=20, help="models in the fleet (default 20)")
    parser.add_argument("--output", type=Path, help=f"markdown results (default {RESULTS}, not in --quick)")
    args = parser.parse_args()

    def progress(message: str) -> None:
        print(f"[bench_backtest] {message}", file=sys.stderr)

    side = run(2 * 3600 if args.quick else DAY, args.models, True, progress)
    # A week of the whole fleet would be a 200 MB OpenMetrics file to backfill: the long run keeps 5 models.
    long = None if args.quick else run(7 * DAY, min(args.models, 5), False, progress)
    text = report(side, long, args.quick)
    print(text)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        output.write_text(text)
    return 0 if side["same"] else 1


if __name__ == "__main__":
    sys.exit(main())
