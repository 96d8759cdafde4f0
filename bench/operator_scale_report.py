"""Records and report of the operator scale benchmark (bench/bench_operator_scale.py runs it).

What one size measured (`SizeResult`), how py-spy samples of the operator are put into categories, and the
Markdown written to bench/results/operator_scale.md: the generated part is rewritten on every run, hand-written
notes below NOTES_MARKER are kept.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import shutil
import statistics
import subprocess
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTES_MARKER = "<!-- Everything below this line is kept when the benchmark rewrites this file. -->"
#: The policy whose breach is timed, its threshold and window (the exporter's bad state sits far below it).
BREACH_POLICY = "accuracy"
ACCURACY_THRESHOLD = 0.9
ACCURACY_WINDOW = "2m"


@dataclass(frozen=True)
class Plan:
    """One benchmark size."""

    monitors: int
    #: The monitors' evaluation interval, seconds.
    interval: int
    #: Full cycles measured after the warm-up cycle.
    cycles: int
    #: Breaches timed during the measured cycles.
    breaches: int
    #: Prometheus' scrape interval, seconds.
    scrape_interval: int
    #: Sample the operator with py-spy during the measured cycles.
    profile: bool
    #: Keep the working folder (operator log, py-spy samples, Prometheus data) instead of deleting it.
    keep_files: bool = False
    #: Operator replicas sharing the monitors by Leases.
    replicas: int = 1
    #: Replay every monitor's status write after the window (8 and 32 in flight).
    write_replay: bool = True


@dataclass(frozen=True)
class CycleLine:
    """One "cycle:" log line of the operator, stamped when the benchmark read it."""

    at: float
    evaluated: int
    invalid: int
    queries: int
    failed: int
    seconds: float
    #: Which operator replica logged it (0 with one replica).
    replica: int = 0
    #: Seconds into the cycle when its queries were done and when every monitor had been evaluated (NaN when the
    #: operator does not log them: commits before 2026-12-07).
    queried: float = math.nan
    evaluated_by: float = math.nan
    #: Heartbeat writes the cycle left to be made after it, and those of earlier cycles still waiting when it
    #: began (None when the operator writes heartbeats within the cycle: commits before 2026-12-07 09:00).
    heartbeats: int | None = None
    heartbeats_behind: int | None = None


@dataclass
class Breach:
    """One model switched to bad, and when each step of noticing it happened (wall-clock epoch seconds)."""

    model: str
    #: Position of the monitor in name order (the order the operator lists and writes them in).
    position: int
    switched_at: float = math.nan
    #: First instant at which the accuracy expression, evaluated in Prometheus, is below the threshold.
    crossed_at: float = math.nan
    #: The evaluation instant of the cycle that saw the breach (the policy's `since` in status).
    evaluated_at: float = math.nan
    #: When the benchmark first read the policy as Firing through the API.
    seen_at: float = math.nan
    error: str = ""

    @property
    def delay(self) -> float:
        """Crossing in Prometheus to Firing in status, seconds."""
        return self.seen_at - self.crossed_at


@dataclass
class SizeResult:
    """Everything measured for one number of monitors."""

    plan: Plan
    namespace: str
    series: int = 0
    create_seconds: float = math.nan
    startup_seconds: float = math.nan
    window_seconds: float = math.nan
    #: Wall time the measured window opened (the end of the warm-up cycle).
    window_origin: float = math.nan
    cycles: list[CycleLine] = field(default_factory=list)
    histogram_mean: float = math.nan
    queries_gauge: float = math.nan
    prometheus_queries_per_cycle: float = math.nan
    prometheus_seconds_per_query: float = math.nan
    cores: dict[str, float] = field(default_factory=dict)
    peak_rss: float = math.nan
    status_patches_per_cycle: float = math.nan
    patch_server_ms: float = math.nan
    watch_events_per_cycle: float = math.nan
    phases: Counter[str] = field(default_factory=Counter)
    policy_states: Counter[str] = field(default_factory=Counter)
    breaches: list[Breach] = field(default_factory=list)
    profile: Counter[str] = field(default_factory=Counter)
    query_replay: list[float] = field(default_factory=list)
    query_replay_queries: int = 0
    query_replay_values: int = 0
    #: Seconds to write every monitor's status once, by writes in flight.
    write_replay: dict[int, float] = field(default_factory=dict)
    load: tuple[float, float] = (math.nan, math.nan)
    write_errors: int = 0
    #: Lines the operator logged per measured cycle.
    log_lines_per_cycle: float = math.nan
    #: Mean size of a monitor's status as compact JSON, bytes.
    status_bytes: float = 0.0
    #: Monitors each replica owned during the window (its modelmonitor_operator_monitors_owned).
    shares: list[int] = field(default_factory=list)
    #: CPU cores and peak RSS (MiB) of each replica.
    replica_cores: list[float] = field(default_factory=list)
    replica_rss: list[float] = field(default_factory=list)
    #: The most series in one Prometheus answer of the replayed query phase (every monitor's models).
    max_answer_series: int = 0
    #: The most series in one answer each replica got in its last cycle (its largest-answer gauge).
    replica_largest_answers: list[int] = field(default_factory=list)
    #: Status writes per second over the window, counted by the API server.
    status_writes_per_second: float = math.nan

    def full(self, line: CycleLine) -> bool:
        """Whether a cycle line evaluated all of its replica's share (every monitor with one replica)."""
        share = self.shares[line.replica] if line.replica < len(self.shares) else self.plan.monitors
        return line.evaluated >= share


#: What the operator was doing in a py-spy sample: the first rule whose frame text occurs in the stack wins.
PROFILE_RULES: tuple[tuple[str, str], ...] = (
    ("status writes (Kubernetes client: JSON, HTTPS, answer)", "KubernetesClient.patch_monitor_status"),
    ("Event posts", "KubernetesClient.emit_event"),
    ("Prometheus queries (HTTP, JSON decoding)", "PrometheusClient.query"),
    ("splitting answers per monitor", "measure (signals/measure.py"),
    ("policy evaluation and status rendering", "Evaluator._evaluate_one"),
    ("rest of the cycle", "Evaluator.cycle"),
    ("watch events: Registry.upsert (spec parsing)", "Registry.upsert"),
    ("log lines (Kopf logs each handled watch event at INFO)", "logging/__init__.py"),
    ("watch events: Kopf (queueing, diff-base deep copies, handler invocation)", "kopf/"),
    ("/metrics and /healthz", "operator_metrics.py"),
)


def classify(stack: str) -> str:
    for category, needle in PROFILE_RULES:
        if needle in stack:
            return category
    return "other (event loop, asyncio, threads, GC)"


def read_profile(path: Path) -> Counter[str]:
    """py-spy's raw output ("frame;frame;... count" per line) summed by category."""
    shares: Counter[str] = Counter()
    if not path.exists():
        return shares
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            shares[classify(stack)] += int(count)
    return shares


# --- the report -----------------------------------------------------------------------------------------------


def breach_bound(result: SizeResult) -> tuple[float, str] | None:
    """The schedule's own bound on the breach delay, and how it was reached. A crossing just after an evaluation
    instant waits a whole interval; in the next cycle a monitor whose policy changed state goes to the writers as
    soon as it is evaluated, ahead of those waiting, so it waits at most for the writes in flight and its own
    (two server-side writes, at their mean). Without the cycle's phases in the log (older commits), the monitor
    is written at its turn among all the writes: the longest cycle."""
    full = [c for c in result.cycles if result.full(c)]
    if not full:
        return None
    interval = result.plan.interval
    evaluated = [c.evaluated_by for c in full if not math.isnan(c.evaluated_by)]
    if evaluated and not math.isnan(result.patch_server_ms):
        last, writes = max(evaluated), 2 * result.patch_server_ms / 1000
        return interval + last + writes, f"interval + every monitor evaluated at {last:.1f} s + 2 writes"
    return interval + max(c.seconds for c in full), "interval + longest cycle"


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def summary_rows(results: list[SizeResult]) -> list[tuple[str, list[str]]]:
    """The figures table: one row per figure, one column per size."""
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, values: Callable[[SizeResult], str]) -> None:
        rows.append((label, [values(r) for r in results]))

    def full(r: SizeResult) -> list[float]:
        return [c.seconds for c in r.cycles if r.full(c)]

    def delays(r: SizeResult) -> list[float]:
        return [b.delay for b in r.breaches if not math.isnan(b.delay)]

    row("policies per monitor / interval", lambda r: f"3 / {r.plan.interval} s")
    row(
        "operator replicas: monitors each owned",
        lambda r: f"{r.plan.replicas}: " + " / ".join(f"{s:,}" for s in r.shares),
    )
    row("series in Prometheus (scrape interval)", lambda r: f"{r.series:,} ({r.plan.scrape_interval} s)")
    row("create the monitors (kubectl create, 4 x 250 per List)", lambda r: f"{fmt(r.create_seconds, 1)} s")
    row("operator start to every monitor evaluated once", lambda r: f"{fmt(r.startup_seconds, 1)} s")
    row("full cycles measured (window)", lambda r: f"{len(full(r))} ({fmt(r.window_seconds, 0)} s)")
    row(
        "**cycle duration** median / max",
        lambda r: f"**{fmt(statistics.median(full(r)))} s** / {fmt(max(full(r)))} s" if full(r) else "n/a",
    )
    row(
        "cycle duration as a share of the interval (max)",
        lambda r: f"{100 * max(full(r)) / r.plan.interval:.0f} %" if full(r) else "n/a",
    )
    row("**queries per cycle** (operator gauge)", lambda r: f"**{fmt(r.queries_gauge, 0)}**")
    row("queries per interval seen by Prometheus (all replicas)", lambda r: fmt(r.prometheus_queries_per_cycle, 1))
    row(
        "Prometheus time per query (server side, mean)", lambda r: f"{fmt(1000 * r.prometheus_seconds_per_query, 0)} ms"
    )
    row("status writes per cycle (API server count)", lambda r: fmt(r.status_patches_per_cycle, 0))
    row(
        "of which heartbeats, made after the cycle: per cycle (median) / still waiting when the next began (max)",
        heartbeats_cell,
    )
    row("status writes per second (API server count, all replicas)", lambda r: fmt(r.status_writes_per_second, 1))
    row("status write, server side (mean)", lambda r: f"{fmt(r.patch_server_ms, 1)} ms")
    row("largest Prometheus answer (series, replayed query phase)", lambda r: f"{r.max_answer_series:,}")
    row(
        "largest answer each replica got in its last cycle (operator gauge)",
        lambda r: " / ".join(f"{n:,}" for n in r.replica_largest_answers) or "n/a",
    )
    row("status size (compact JSON, mean)", lambda r: f"{r.status_bytes:,.0f} bytes")
    row("ModelMonitor watch events per cycle (all watchers)", lambda r: fmt(r.watch_events_per_cycle, 0))
    row(
        "query phase alone, replayed (median of 3)",
        lambda r: (
            f"{fmt(statistics.median(r.query_replay))} s ({r.query_replay_queries} queries)"
            if r.query_replay
            else "n/a"
        ),
    )
    row(
        "status-write phase alone, replayed: 8 / 32 writes in flight",
        lambda r: " / ".join(f"{fmt(r.write_replay.get(k, math.nan))} s" for k in (8, 32)),
    )
    row("**operator CPU** (cores, over the window)", lambda r: f"**{fmt(r.cores.get('operator', math.nan))}**")
    row("**operator peak RSS** (VmHWM)", lambda r: f"**{fmt(r.peak_rss, 0)} MiB**")
    row(
        "per replica: CPU (cores) / peak RSS",
        lambda r: ", ".join(
            f"{fmt(c)} / {fmt(m, 0)} MiB" for c, m in zip(r.replica_cores, r.replica_rss, strict=False)
        ),
    )
    row(
        "control plane CPU: API server / etcd / controller-manager (cores)",
        lambda r: " / ".join(
            fmt(r.cores.get(k, math.nan)) for k in ("kube-apiserver", "etcd", "kube-controller-manager")
        ),
    )
    row(
        "benchmark's Prometheus / exporter CPU (cores)",
        lambda r: f"{fmt(r.cores.get('prometheus', math.nan))} / {fmt(r.cores.get('exporter', math.nan))}",
    )
    row(
        "**breach delay** (crossing in Prometheus to Firing in status), each",
        lambda r: ", ".join(f"{b.delay:.1f} s" if not math.isnan(b.delay) else b.error or "n/a" for b in r.breaches),
    )
    row(
        "breach delay max vs target (interval + 5 s)",
        lambda r: f"{fmt(max(delays(r)), 1)} s vs {r.plan.interval + 5} s" if delays(r) else "n/a",
    )
    row(
        "breach delay worst case by construction (crossing just after an evaluation)",
        lambda r: f"{bound[0]:.1f} s ({bound[1]})" if (bound := breach_bound(r)) else "n/a",
    )
    row("operator log lines per cycle", lambda r: fmt(r.log_lines_per_cycle, 0))
    row("load average (1 min) at window start / end", lambda r: f"{fmt(r.load[0])} / {fmt(r.load[1])}")
    row("monitor phases at the end", lambda r: ", ".join(f"{k} {v}" for k, v in sorted(r.phases.items())))
    return rows


def verdicts(result: SizeResult) -> list[str]:
    """The issue's aims, checked against one size's figures."""
    full = [c.seconds for c in result.cycles if result.full(c)]
    interval = result.plan.interval
    delays = [b.delay for b in result.breaches if not math.isnan(b.delay)]
    cores = result.cores.get("operator", math.nan)
    lines = [
        f"cycle within half the interval: max {fmt(max(full) if full else math.nan)} s of {interval / 2:g} s "
        f"-> {'yes' if full and max(full) <= interval / 2 else 'NO'}",
        f"at most 0.5 core per replica: {fmt(cores)} -> {'yes' if cores <= 0.5 else 'NO'}",
        f"at most 400 MiB per replica: {fmt(result.peak_rss, 0)} MiB -> {'yes' if result.peak_rss <= 400 else 'NO'}",
        f"no Prometheus answer above 100,000 series: largest {result.max_answer_series:,} "
        f"-> {'yes' if 0 < result.max_answer_series <= 100_000 else 'NO'}",
        f"breach in status within {interval + 5} s: measured max {fmt(max(delays) if delays else math.nan, 1)} s "
        f"-> {'yes' if delays and len(delays) == len(result.breaches) and max(delays) <= interval + 5 else 'NO'}",
    ]
    bound = breach_bound(result)
    if bound is not None:
        worst, how = bound
        lines.append(
            f"worst case by construction {worst:.1f} s ({how}) -> {'yes' if worst <= interval + 5 else 'NOT assured'}"
        )
    return lines


def breach_rows(result: SizeResult) -> list[str]:
    lines = []
    for b in result.breaches:
        wait = b.evaluated_at - b.crossed_at
        write = b.seen_at - b.evaluated_at
        lines.append(
            f"| {result.plan.monitors:,} | {b.model} (#{b.position + 1}) | {fmt(b.crossed_at - b.switched_at, 1)} s | "
            f"{fmt(wait, 1)} s | {fmt(write, 1)} s | **{fmt(b.delay, 1)} s** | {b.error or 'ok'} |"
        )
    return lines


def profile_table(results: list[SizeResult]) -> list[str]:
    categories = sorted({c for r in results for c in r.profile}, key=lambda c: -sum(r.profile[c] for r in results))
    if not categories:
        return ["(no profile: py-spy was not available or --no-profile was given)"]
    head = "| where the operator's Python CPU went (py-spy samples of the GIL holder) | " + " | ".join(
        f"{r.plan.monitors:,}" for r in results
    )
    lines = [head + " |", "|---|" + "---:|" * len(results)]
    for category in categories:
        cells = []
        for r in results:
            total = sum(r.profile.values())
            cells.append(f"{100 * r.profile[category] / total:.0f} %" if total else "n/a")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    return lines


def heartbeats_cell(r: SizeResult) -> str:
    """Heartbeat writes the measured cycles left to be made after them, and how many were still waiting when a
    cycle began ("in the cycle" for an operator that writes them within it)."""
    counted = [c for c in r.cycles if c.heartbeats is not None]
    if not counted:
        return "in the cycle"
    made = statistics.median(c.heartbeats or 0 for c in counted)
    behind = max(c.heartbeats_behind or 0 for c in counted)
    return f"{made:.0f} / {behind}"


def cycle_table(results: list[SizeResult]) -> list[str]:
    lines = [
        "| monitors | replica | cycle ended at (s after the warm-up cycle) | evaluated | queries | failed | seconds "
        "| queries done / every monitor evaluated at (s into the cycle) | heartbeats after it / waiting at its start |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if not r.cycles:
            continue
        for c in r.cycles:
            cells = (
                f"{r.plan.monitors:,}",
                c.replica,
                f"{c.at - r.window_origin:.1f}",
                c.evaluated,
                c.queries,
                c.failed,
            )
            heartbeats = "in the cycle" if c.heartbeats is None else f"{c.heartbeats} / {c.heartbeats_behind}"
            phases = f"{fmt(c.queried)} / {fmt(c.evaluated_by)}"
            lines.append(
                "| " + " | ".join(str(cell) for cell in cells) + f" | {c.seconds:.2f} | {phases} | {heartbeats} |"
            )
    return lines


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {system}"


def source_state() -> str:
    """Which operator code ran: the work tree's commit, or a snapshot put first on PYTHONPATH (see --help)."""
    import modelmonitor

    package = Path(modelmonitor.__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    if package.is_relative_to(REPO):
        dirty = git("status", "--porcelain", "--", "operator")
        return f"commit {git('rev-parse', '--short', 'HEAD')}" + (
            " with uncommitted changes under operator/" if dirty else ""
        )
    stamp = package.parent / "COMMIT"
    return f"modelmonitor from {package.parent}" + (f" (commit {stamp.read_text().strip()})" if stamp.exists() else "")


def render(results: list[SizeResult], versions: dict[str, str]) -> str:
    sizes = " | ".join(f"{r.plan.monitors:,} monitors" for r in results)
    out = [
        "# Operator scale benchmark",
        "",
        "Generated by `python bench/bench_operator_scale.py` (method in its docstring). N ModelMonitors, each "
        "with three built-in-signal policies (accuracy `for: 0s`, errorRate, latencyP95), evaluated by "
        "`modelmonitor run` as a real process on the local sandbox (real kube-apiserver and etcd) against a "
        "Prometheus of the benchmark's own scraping a synthetic exporter of N models. Operator settings at their "
        "defaults (tick 1 s, 4 queries and 8 status writes in flight, status heartbeat 300 s, Leases 15/10/2 s).",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}, the benchmark's processes (API server, etcd, Prometheus, the operator replicas) "
        "sharing it with whatever else ran: the load averages below say how busy it was; CPU figures are per "
        "process, wall times include waiting for cores.",
        f"- Code: {source_state()}; " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "## Figures",
        "",
        f"| | {sizes} |",
        "|---|" + "---:|" * len(results),
    ]
    out += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in summary_rows(results)]
    out += [
        "",
        "## Against the aims",
        "",
        "The aims (issue 13) are stated for 10,000 monitors at a 30 s interval on one replica: a cycle within 15 s, "
        "at most 0.5 core and 400 MiB, a breach Firing within the interval + 5 s, no Prometheus answer above "
        "100,000 series; every size is held to the same marks (per replica when there are several).",
        "",
    ]
    for r in results:
        out.append(f"- {r.plan.monitors:,} monitors: " + "; ".join(verdicts(r)))
    out += [
        "",
        "## Breaches",
        "",
        "Crossing: the first instant (0.1 s steps) at which the accuracy expression evaluated in Prometheus is below "
        f"{ACCURACY_THRESHOLD} (its sample's scrape timestamp: the sample becomes visible a scrape's duration later, "
        "so the delay is slightly overstated). Waiting: from the crossing to the evaluation instant of the cycle that "
        "saw it (the aligned schedule: up to one interval; read from the policy's `since`, which the engine floors to "
        "the second, so this can read up to 1 s short, even below 0). In cycle: from that instant to the status read "
        "as Firing "
        "(the cycle's queries, evaluation, this monitor's turn among the writes, and the 0.2 s poll).",
        "",
        "| monitors | model (position in write order) | switch to crossing | waiting for the cycle | in cycle | delay "
        "| |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        out += breach_rows(r)
    out += ["", "## Where the time goes", ""]
    out += profile_table(results)
    out += ["", "### Every cycle in the window", ""]
    out += cycle_table(results)
    out += ["", "### Policy states at the end", ""]
    for r in results:
        out.append(f"- {r.plan.monitors:,}: " + ", ".join(f"{k} {v}" for k, v in sorted(r.policy_states.items())))
    return "\n".join(out) + "\n"


def write_results(text: str, path: Path) -> None:
    """Write the generated part; keep the hand-written notes below NOTES_MARKER if the file has them."""
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER) :]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + ("\n" + notes if notes else ""))


def tool_versions(sandbox_versions: Mapping[str, str]) -> dict[str, str]:
    """Versions of Prometheus (Debian's binary) and of the sandbox's Kubernetes and etcd."""
    prometheus = subprocess.run(
        [shutil.which("prometheus") or "/usr/bin/prometheus", "--version"], capture_output=True, text=True, check=False
    )
    first = (prometheus.stdout or prometheus.stderr).splitlines()
    versions = {"Prometheus": first[0].split()[2] if first else "unknown"}
    versions.update({k: v for k, v in sandbox_versions.items() if k in ("kubernetes", "etcd")})
    return versions
