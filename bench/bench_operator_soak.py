"""Operator soak: the real operator for a long time with N ModelMonitors under churn; its memory over time.

What runs (all on 127.0.0.1, started and stopped here, through the same rig as bench_operator_scale.py): a
synthetic sidecar fleet of N models, a Prometheus of the benchmark's own scraping it, N ModelMonitors on the
running sandbox, and the operator as a real process watching their namespace.

Churn, all through the API server while the operator runs: every second, ``--churn`` operations chosen at random
(seeded): delete a monitor and create a new one in its place (a new name, a random model of the fleet), or update
one (a new threshold: a new generation, re-validated, rescheduled). The fleet stays at N monitors.

Measured every ``--sample`` seconds: the operator's resident memory (VmRSS), the monitors it knows and the cycles
it has run (its own /metrics). Reported: RSS per minute, and the slope of RSS over time (least squares, MiB per
hour) over the whole run and over its second half (after the caches and the watch have filled), written to
``bench/results/operator_soak.md`` with the raw samples as CSV beside it.

Usage (the sandbox must be running: ``modelmonitor cluster up``)::

    python bench/bench_operator_soak.py                          # 1,000 monitors for an hour
    python bench/bench_operator_soak.py --minutes 15             # shorter
    python bench/bench_operator_soak.py --monitors 50 --minutes 2 --output /tmp/soak.md   # a quick look
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bench_operator_scale import (
    CRD,
    GROUP,
    PLURAL,
    VERSION,
    BenchError,
    Deadline,
    Rig,
    delete_leftovers,
    monitor_body,
    sample_sum,
    wait_for,
)
from operator_scale_report import Plan, tool_versions
from synthetic_exporter import model_name

from modelmonitor_sandbox.devcluster import cluster as sandbox
from modelmonitor_sandbox.devcluster.build import kubectl_binary

RESULTS = Path(__file__).parent / "results" / "operator_soak.md"


@dataclass(frozen=True)
class Sample:
    """One look at the operator."""

    seconds: float  # since the churn started
    rss_mib: float
    monitors: int
    cycles: int
    churned: int


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for process {pid}")


def slope_mib_per_hour(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return float("nan")
    t = np.array([s.seconds for s in samples]) / 3600
    rss = np.array([s.rss_mib for s in samples])
    return float(np.polyfit(t, rss, 1)[0])


class Churn:
    """Deletes, creates and updates monitors in a thread until stopped; counts what it did."""

    def __init__(self, rig: Rig, names: list[str], per_second: int, interval: int, seed: int) -> None:
        self.rig, self.names, self.per_second, self.interval = rig, names, per_second, interval
        self.rng = np.random.default_rng(seed)
        self.done = 0
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="churn", daemon=True)

    def _one(self) -> None:
        custom, ns = self.rig.custom, self.rig.namespace
        index = int(self.rng.integers(len(self.names)))
        name = self.names[index]
        if self.rng.random() < 0.5:
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            body = monitor_body(model_name(int(self.rng.integers(self.rig.plan.monitors))), self.interval)
            body["metadata"]["name"] = new = f"churn-{uuid.uuid4().hex[:10]}"
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
            self.names[index] = new
        else:
            policies = self.rig.monitor(name)["spec"]["policies"]
            policies[0]["condition"]["threshold"] = round(float(self.rng.uniform(0.80, 0.89)), 3)
            custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": {"policies": policies}})

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            for _ in range(self.per_second):
                try:
                    self._one()
                    self.done += 1
                except Exception as exc:  # one refused call must not end the soak; counted and reported
                    self.failed += 1
                    print(f"churn: {exc}", file=sys.stderr)
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def render(
    args: argparse.Namespace, samples: list[Sample], churn: Churn, versions: str, minutes: float, slow_scrapes: int
) -> str:
    half = [s for s in samples if s.seconds >= samples[-1].seconds / 2] if samples else []
    per_minute = {}
    for sample in samples:
        per_minute.setdefault(int(sample.seconds // 60), sample)
    lines = [
        "# Operator soak",
        "",
        f"`python bench/bench_operator_soak.py --monitors {args.monitors} --minutes {args.minutes:g} "
        f"--churn {args.churn} --interval {args.interval}` ({versions}). The real operator process against the "
        "sandbox's API server and a Prometheus of the benchmark's own scraping a synthetic fleet; churn through the "
        "API server while it runs (delete + create under a new name, or a new threshold), the fleet kept at "
        f"{args.monitors} monitors.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| ran for | {minutes:.1f} min of churn |",
        f"| churn operations | {churn.done} ({churn.failed} refused) |",
        f"| operator RSS at the start of the churn | {samples[0].rss_mib:.0f} MiB |" if samples else "",
        f"| operator RSS at the end | {samples[-1].rss_mib:.0f} MiB |" if samples else "",
        f"| operator RSS at most | {max(s.rss_mib for s in samples):.0f} MiB |" if samples else "",
        f"| RSS slope, whole run | {slope_mib_per_hour(samples):+.1f} MiB/hour |",
        f"| RSS slope, second half | {slope_mib_per_hour(half):+.1f} MiB/hour |",
        f"| cycles run | {samples[-1].cycles - samples[0].cycles if samples else 0} |",
        f"| samples whose /metrics answered too late (memory read all the same) | {slow_scrapes} of {len(samples)} |",
        "",
        "RSS per minute (the first sample of each minute):",
        "",
        "| minute | RSS MiB | monitors known | churn so far |",
        "|---|---|---|---|",
        *(f"| {m} | {s.rss_mib:.0f} | {s.monitors} | {s.churned} |" for m, s in sorted(per_minute.items())),
        "",
    ]
    return "\n".join(line for line in lines if line is not None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--monitors", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument("--minutes", type=float, default=60.0, help="churn duration (default 60)")
    parser.add_argument("--churn", type=int, default=2, help="operations per second (default 2)")
    parser.add_argument("--interval", type=int, default=30, help="the monitors' interval, seconds (default 30)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"report (default {RESULTS})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = sandbox.load_state()
    if state is None or not sandbox.is_healthy(state):
        print("the sandbox is not running: start it with `modelmonitor cluster up`", file=sys.stderr)
        return 2

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through every `finally`, which stops what was started

    signal.signal(signal.SIGTERM, on_term)
    kubectl_path = str(kubectl_binary())
    base = [kubectl_path, f"--kubeconfig={state.kubeconfig}"]
    subprocess.run(
        [*base, "apply", "--server-side", "--force-conflicts", "-f", str(CRD)], capture_output=True, check=True
    )
    delete_leftovers(kubectl_path, state)
    deadline = Deadline(args.minutes * 60 + 900)
    plan = Plan(args.monitors, args.interval, cycles=0, breaches=0, scrape_interval=15, profile=False)
    workdir = Path(tempfile.mkdtemp(prefix="modelmonitor-soak-"))
    rig = Rig(plan, state, workdir, deadline)
    samples: list[Sample] = []
    churn: Churn | None = None
    slow_scrapes = 0
    try:
        rig.create_namespace()
        rig.start_exporter()
        rig.start_prometheus()
        rig.wait_for_series()
        rig.create_monitors()
        rig.start_operator()
        assert rig.operator is not None
        pid = rig.operator.pid
        wait_for("a first full cycle", lambda: sum(c.evaluated for c in rig.cycles) >= args.monitors or None, 300)
        names = [model_name(i) for i in range(args.monitors)]
        churn = Churn(rig, names, args.churn, args.interval, args.seed)
        started = time.monotonic()
        churn.thread.start()
        end = started + args.minutes * 60
        while time.monotonic() < end:
            rig.cycles_after(0)  # raises when the operator has exited
            monitors, cycles = (samples[-1].monitors, samples[-1].cycles) if samples else (0, 0)
            try:
                metrics = rig.operator_metrics()
                monitors = int(sample_sum(metrics, "modelmonitor_operator_monitors"))
                cycles = int(sample_sum(metrics, "modelmonitor_operator_cycles_total"))
            except BenchError:
                slow_scrapes += 1  # a busy machine: /metrics answered too late; the memory is read all the same
            samples.append(Sample(time.monotonic() - started, rss_mib(pid), monitors, cycles, churn.done))
            if len(samples) == 1 or int(samples[-1].seconds // 60) > int(samples[-2].seconds // 60):
                latest = samples[-1]
                print(
                    f"[soak] {latest.seconds / 60:.0f}/{args.minutes:g} min: RSS {latest.rss_mib:.0f} MiB, "
                    f"{latest.monitors} monitors known, {latest.churned} churn operations",
                    file=sys.stderr,
                    flush=True,
                )
            time.sleep(min(args.sample, max(0.0, end - time.monotonic())))
        minutes = (time.monotonic() - started) / 60
        churn.stop.set()
        churn.thread.join(timeout=30)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    finally:
        if churn is not None:
            churn.stop.set()
        rig.close()
        shutil.rmtree(workdir, ignore_errors=True)
    assert churn is not None
    versions = ", ".join(f"{name} {version}" for name, version in tool_versions(state.versions).items())
    text = render(args, samples, churn, versions, minutes, slow_scrapes)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    csv = args.output.with_suffix(".csv")
    csv.write_text(
        "seconds,rss_mib,monitors,cycles,churned\n"
        + "".join(f"{s.seconds:.1f},{s.rss_mib:.1f},{s.monitors},{s.cycles},{s.churned}\n" for s in samples)
    )
    print(f"wrote {args.output} and {csv}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
