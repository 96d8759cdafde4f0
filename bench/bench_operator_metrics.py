"""The operator's /metrics at many monitors: what a scrape costs with each monitor's lines kept until its series
change (`OperatorMetrics.exposition`, what /metrics serves) against the families built and formatted afresh at
every scrape (prometheus_client's ``generate_latest`` over the same registry, what /metrics served before), in
the same process on the same statuses.

N monitors with three policies each, their statuses rendered by the policy engine (about 32 series a monitor).
Between two scrapes a share of the monitors get a new status (a state change or a heartbeat write): 10 % by
default, what 10,000 monitors written on change with a 300 s heartbeat see between two scrapes 30 s apart. Timed:
the first scrape (nothing kept yet), then the median of ``rounds`` scrapes each after such changes; every answer
is checked to be the same text as ``generate_latest``'s. Usage::

    python bench/bench_operator_metrics.py             # 10,000 monitors; writes bench/results/operator_metrics.md
    python bench/bench_operator_metrics.py --quick     # 1,000 monitors, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from modelmonitor.loop import CycleReport, Registry
from modelmonitor.operator_metrics import OperatorMetrics
from modelmonitor.policy import Measurement, MonitorSpec, Rule, evaluate, render_status

RESULTS = Path(__file__).parent / "results" / "operator_metrics.md"
RULES = (Rule("accuracy", "<", 0.85), Rule("errorRate", ">", 0.05), Rule("latencyP95", ">", 0.5))
AT = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


def status(name: str, rng: np.random.Generator, cycle: int) -> dict[str, object]:
    """A monitor's status after one evaluation with random values (a few of them breaching)."""
    spec = MonitorSpec("bench", name, RULES)
    measured = {
        "accuracy": Measurement.value(float(rng.uniform(0.80, 0.99)), 500),
        "errorRate": Measurement.value(float(rng.uniform(0.0, 0.06)), 500),
        "latencyP95": Measurement.value(float(rng.uniform(0.05, 0.6)), 500),
    }
    return render_status(spec, evaluate(spec, {}, measured, AT + dt.timedelta(seconds=30 * cycle)))


def timed(call: object) -> tuple[float, bytes]:
    started = time.perf_counter()
    body = call()  # type: ignore[operator]
    return time.perf_counter() - started, body


def run(monitors: int, rounds: int, changed: float, seed: int = 7) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    registry = Registry()
    for i in range(monitors):
        registry.upsert(
            {"metadata": {"namespace": "bench", "name": f"m{i:05d}", "uid": f"u{i}"}, "spec": {},
             "status": status(f"m{i:05d}", rng, 0)}
        )  # fmt: skip
    metrics = OperatorMetrics(CollectorRegistry(), monitors=registry)
    metrics.cycle_done(CycleReport(evaluated=monitors, queries=4, seconds=1.0), monitors)

    before, body = timed(lambda: generate_latest(metrics.registry))
    first, served = timed(metrics.exposition)
    assert served == body, "exposition differs from generate_latest"
    fresh: list[float] = []
    kept: list[float] = []
    entries = registry.all()
    for cycle in range(1, rounds + 1):
        for index in rng.choice(len(entries), size=int(changed * len(entries)), replace=False):
            entry = entries[index]
            registry.record_written(entry, status(entry.name, rng, cycle), 0.0)
        # Alternated, so both see the same load on a shared machine.
        seconds, body = timed(lambda: generate_latest(metrics.registry))
        fresh.append(seconds)
        seconds, served = timed(metrics.exposition)
        kept.append(seconds)
        assert served == body, "exposition differs from generate_latest"
    return {
        "monitors": monitors,
        "series": body.count(b"\n") - body.count(b"\n#"),
        "bytes": len(body),
        "generate_latest_first": before,
        "generate_latest": statistics.median(fresh),
        "exposition_first": first,
        "exposition": statistics.median(kept),
        "changed": changed,
        "rounds": rounds,
    }


def render(result: dict[str, float], quick: bool) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    ratio = result["generate_latest"] / result["exposition"]
    return "\n".join(
        [
            "# The operator's /metrics at many monitors",
            "",
            f"Measured {when} on {platform.machine()}, 2 cores shared with other work (load average {load}), Python "
            f"{platform.python_version()}{' (quick run)' if quick else ''}. Reproduce with "
            "`python bench/bench_operator_metrics.py`.",
            "",
            f"{result['monitors']:,.0f} monitors, 3 policies each: {result['series']:,.0f} series, "
            f"{result['bytes'] / 1e6:.1f} MB of text per scrape. Between two scrapes {result['changed']:.0%} of the "
            f"monitors get a new status; median of {result['rounds']:.0f} scrapes, both ways alternated in one "
            "process, every answer the same text.",
            "",
            "| scrape | families built and formatted at every scrape (before) | lines kept per monitor (now) | ratio |",
            "|---|---:|---:|---:|",
            f"| first (nothing kept yet) | {result['generate_latest_first']:.2f} s | {result['exposition_first']:.2f} s"
            f" | {result['generate_latest_first'] / result['exposition_first']:.1f}x |",
            f"| later ({result['changed']:.0%} of the statuses changed) | {result['generate_latest']:.2f} s | "
            f"{result['exposition']:.2f} s | {ratio:.1f}x |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--monitors", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--changed", type=float, default=0.1, help="share of statuses changed between scrapes")
    parser.add_argument("--quick", action="store_true", help="1,000 monitors, prints only")
    parser.add_argument("--output", type=Path, help=f"markdown results (default {RESULTS}, not in --quick)")
    args = parser.parse_args(argv)
    monitors = 1_000 if args.quick else args.monitors
    result = run(monitors, args.rounds, args.changed)
    text = render(result, args.quick)
    print(text)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        output.write_text(text)
        print(f"written to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
