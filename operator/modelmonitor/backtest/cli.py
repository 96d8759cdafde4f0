"""`modelmonitor backtest MONITOR.yaml --prometheus-url URL --from T --to T`: replay a monitor over history.

Reads the ModelMonitor from a file, validates it as the operator does, reads the Prometheus history of its
policies' queries (`modelmonitor.backtest.history`), replays every step with the operator's own engine
(`modelmonitor.backtest.replay`) and reports episodes, counts and the actions that would have run. Needs no
cluster and changes nothing. Exit status: 0 after a report, 2 for bad input (a spec that does not validate, a
bad range, a Prometheus that cannot be reached, a range without data).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusSettings
from modelmonitor.backtest.history import Grid, History, HistoryError
from modelmonitor.backtest.replay import Replay, replay
from modelmonitor.backtest.report import PNG_EXTRA_HINT, render_png, to_json, to_text
from modelmonitor.durations import seconds as duration_seconds
from modelmonitor.policy import Measurement, parse_time
from modelmonitor.reconcile import Monitor, monitor_from_body
from modelmonitor.signals import measure

KIND = "ModelMonitor"
_RELATIVE = re.compile(r"^now(?:-(?P<ago>.+))?$")


class BacktestError(Exception):
    """Bad input: the message says what was wrong."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `modelmonitor backtest`."""
    parser.add_argument("monitor", type=Path, metavar="MONITOR.yaml", help="a file holding one ModelMonitor")
    parser.add_argument("--prometheus-url", required=True, help="the Prometheus (or compatible API) with the history")
    parser.add_argument(
        "--from", dest="start", required=True, metavar="T", help="start: RFC 3339, Unix seconds, or now-DURATION"
    )
    parser.add_argument("--to", dest="end", default="now", metavar="T", help="end, as --from (default: now)")
    parser.add_argument(
        "--step", metavar="S", help="time between evaluations (a duration; default: the monitor's spec.interval)"
    )
    parser.add_argument("--output", choices=("text", "json"), default="text", help="report format on stdout")
    parser.add_argument("--png", type=Path, metavar="FILE", help="also draw a timeline (needs matplotlib)")
    parser.add_argument(
        "--namespace", default="default", help="the monitor's namespace when its metadata names none (default)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="per-query timeout (default 30)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def parse_when(text: str, now: datetime) -> datetime:
    """``2026-12-01T00:00:00Z``, Unix seconds, ``now`` or ``now-6h``, as an aware UTC datetime."""
    relative = _RELATIVE.match(text.strip())
    if relative is not None:
        ago = relative.group("ago")
        try:
            return now - timedelta(seconds=duration_seconds(ago)) if ago else now
        except ValueError as problem:
            raise BacktestError(f"time {text!r}: {problem}") from None
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise BacktestError(
            f"time {text!r}: expected an RFC 3339 time (2026-12-01T00:00:00Z), Unix seconds, now or now-DURATION"
        ) from None


def load_monitor(path: Path, namespace: str) -> Monitor:
    """The one ModelMonitor in ``path``, validated as the operator validates it; ``paused`` is ignored (a paused
    monitor is replayed as if resumed: that is what a backtest is for)."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except OSError as problem:
        raise BacktestError(f"{path}: {problem.strerror or problem}") from None
    except yaml.YAMLError as problem:
        raise BacktestError(f"{path}: not YAML: {problem}") from None
    monitors = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if len(monitors) != 1:
        raise BacktestError(f"{path}: expected exactly one {KIND} document, found {len(monitors)}")
    body: dict[str, Any] = dict(monitors[0])
    metadata = dict(body.get("metadata") or {})
    if not metadata.get("name"):
        raise BacktestError(f"{path}: metadata.name is required")
    metadata.setdefault("namespace", namespace)
    spec = body.get("spec")
    body.update(metadata=metadata, spec={**spec, "paused": False} if isinstance(spec, dict) else spec)
    try:
        return monitor_from_body(body)
    except ValueError as problem:
        raise BacktestError(f"{path}: invalid ModelMonitor: {problem}") from None


def backtest(monitor: Monitor, client: PrometheusClient, grid: Grid, *, quiet: bool) -> tuple[Replay, History]:
    """Replay ``monitor`` on ``grid`` over the history ``client`` holds."""
    history = History(client, grid)

    def measure_at(now: datetime) -> dict[str, Measurement]:
        measured = measure(monitor.requests, history, at=now, max_parallel=1)
        return {request.policy: measured.results[request] for request in monitor.requests}

    shown = [0.0]

    def progress(done: int, total: int, at: datetime) -> None:
        if quiet or (done < total and time.monotonic() - shown[0] < 1.0):
            return
        shown[0] = time.monotonic()
        print(f"backtest: {done}/{total} evaluations ({100 * done // total}%), at {at:%Y-%m-%d %H:%M:%S}Z",
              file=sys.stderr)  # fmt: skip

    steps = (grid.at(i) for i in range(len(grid)))
    result = replay(monitor, steps, measure_at, total=len(grid), progress=progress)
    return result, history


def run(args: argparse.Namespace) -> int:
    """Parse, replay, report. Returns the exit status."""
    try:
        return _run(args)
    except BacktestError as problem:
        print(f"modelmonitor backtest: {problem}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): nothing more to say, and no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    monitor = load_monitor(args.monitor, args.namespace)
    now = datetime.now(UTC)
    start, end = parse_when(args.start, now), parse_when(args.end, now)
    if start >= end:
        raise BacktestError(f"--from {args.start} must be before --to {args.end}")
    try:
        step = duration_seconds(args.step) if args.step else monitor.interval_seconds
    except ValueError as problem:
        raise BacktestError(f"--step: {problem}") from None
    if step < 1 or step != int(step):
        raise BacktestError(f"step {step:g}s: expected whole seconds, at least 1s")
    if args.png is not None and importlib.util.find_spec("matplotlib") is None:
        raise BacktestError(PNG_EXTRA_HINT)  # before the replay, not after it
    grid = Grid.aligned(start, end, step)
    if grid.start > end:
        raise BacktestError(f"the range {args.start} .. {args.end} holds no step of {step:g}s")
    try:
        settings = PrometheusSettings(url=args.prometheus_url, timeout_seconds=args.timeout)
    except ValueError as problem:  # the message names the setting (url, timeout)
        raise BacktestError(str(problem)) from None
    with PrometheusClient(settings) as client:
        try:
            result, history = backtest(monitor, client, grid, quiet=args.quiet)
        except HistoryError as problem:
            raise BacktestError(str(problem)) from None
    if not history.steps_with_data:
        raise BacktestError(
            f"no data: none of the monitor's queries returned a series between {grid.start:%Y-%m-%dT%H:%M:%SZ} and "
            f"{grid.end:%Y-%m-%dT%H:%M:%SZ} on {args.prometheus_url} (is this the right Prometheus, range and model?)"
        )
    document = to_json(result, step_seconds=step, source=history.stats())
    if args.png is not None:
        try:
            render_png(result, args.png)
        except ImportError as problem:
            raise BacktestError(str(problem)) from None
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(to_text(document))
    return 0
