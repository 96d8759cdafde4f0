"""Alert quality: false-alarm episodes per model-day without drift, and detection delay after a mean shift.

Simulated streams through the project's own statistics and policy engine, on a simulated clock:

- A model with ``FEATURES`` numerical features, each N(0, 1) in training. The reference profile is built as the
  sidecar's is: bucket bounds at the deciles of a 100,000-row reference sample (``quantile_edges``), reference
  proportions from its counts.
- Traffic at ``RATE`` requests/s; every ``TICK`` (the monitor's 30 s interval) each feature's bucket counters
  grow by a multinomial draw of ``RATE * TICK`` rows over the true bucket probabilities. That is exactly what
  Prometheus' summed ``modelmonitor_feature_value_bucket`` increases hold (binning rows into ``le`` buckets
  gives the same counts in distribution; drawing the counts directly keeps days of traffic cheap).
- Each policy is given by the ModelMonitor API (``monitor_from_api`` applies the API's defaults) and evaluated
  every tick by ``modelmonitor.policy.evaluate``, with ``for``, states carried from cycle to cycle. The drift
  measurement is the operator's: each feature's window tested at its rows (``window_tests``, the vectorized
  form of what the signal calls per feature), then ``signals.drift.drift_measurement`` (worst feature,
  Benjamini-Hochberg, the standardized evidence for sequential detection).
- A false episode is an entry into Firing with no drift; the detection delay is the time from the change to the
  first entry into Firing after it, for a shift of one feature's mean by 0.25, 0.5 and 1 standard deviation.

Policies compared:

- ``default``: the new user's policy of issue 14: ``dataDrift``, ``autoThreshold``, window 10m, ``for: 5m``, every
  other field at its default (psi, ``falseAlarmRate``).
- ``sequential``: ``dataDrift``, ``autoThreshold``, window 1m, ``detection.sequential.falseAlarmEvery`` set to
  the false-alarm budget of the default (``--budget-days``), ``for: 0s``.
- ``evidently``: Evidently's fixed PSI threshold (0.1, its ``psi`` stattest default) on the same buckets, window
  10m, ``for: 5m``. (Evidently's default test for large references is normalized Wasserstein >= 0.1 on raw
  values, which the fleet's bucket counts cannot give; bench_drift.py compares that one on raw windows.)
- ``ks``: a two-sample KS test p < 0.05 on every feature, window 10m, ``for: 5m``, on raw simulated rows against
  the 100,000-row reference (``ks_columns`` with Stephens' p-value, within 1% of scipy's at these sizes); the
  policy breaches when any feature does.

Usage::

    python bench/bench_alert_quality.py                 # full run, writes bench/results/alert_quality.md
    python bench/bench_alert_quality.py --quick         # a few simulated hours, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

from modelmonitor.api import ModelMonitorSpec
from modelmonitor.policy import Measurement, MonitorSpec, PolicyState, evaluate, monitor_from_api
from modelmonitor.signals.drift import FeatureTest, drift_measurement
from modelmonitor.signals.request import SignalRequest
from modelmonitor.stats.binning import bin_counts, quantile_edges
from modelmonitor.stats.drift import SortedSample, ks_columns
from modelmonitor.stats.window_null import window_tests

RESULTS = Path(__file__).parent / "results" / "alert_quality.md"
FEATURES = 10
RATE = 10.0  # requests per second
TICK = 30  # seconds between evaluations
ROWS_PER_TICK = int(RATE * TICK)
DAY_TICKS = 86_400 // TICK
SHIFTS = (0.25, 0.5, 1.0)
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Reference:
    """The profile of one model: bucket bounds and reference proportions per feature (all features alike)."""

    edges: np.ndarray
    shares: np.ndarray
    sorted_sample: SortedSample

    @classmethod
    def build(cls, rng: np.random.Generator) -> Reference:
        sample = rng.standard_normal(100_000)
        edges = quantile_edges(sample, 10)
        counts = bin_counts(sample, edges)
        columns = np.repeat(sample[:, np.newaxis], FEATURES, axis=1)
        return cls(edges, counts / counts.sum(), SortedSample.from_samples(columns))

    def probabilities(self, shift: float) -> np.ndarray:
        """True bucket probabilities of N(shift, 1) over the reference buckets."""
        cdf = special.ndtr(np.concatenate([[-np.inf], self.edges, [np.inf]]) - shift)
        return np.diff(cdf)


@dataclass(frozen=True)
class Policy:
    """One policy under test: its API spec, and whether it needs raw rows (KS) or bucket counts."""

    name: str
    spec: dict[str, Any]
    raw: bool = False

    @property
    def window_ticks(self) -> int:
        return int(_seconds(self.spec["window"]) // TICK)


def _seconds(text: str) -> float:
    from modelmonitor.api import duration_seconds

    return duration_seconds(text)


def policies(budget_days: float, false_alarm_rate: float | None = None) -> list[Policy]:
    drift = {"signal": "dataDrift", "condition": {"op": ">", "autoThreshold": True}}
    default = dict(drift)
    if false_alarm_rate is not None:  # exploring other rates than the API's default
        default["condition"] = {**drift["condition"], "falseAlarmRate": false_alarm_rate}  # type: ignore[dict-item]
    return [
        Policy("default", {"name": "default", **default, "window": "10m", "for": "5m"}),
        Policy(
            "sequential",
            {
                "name": "sequential",
                **drift,
                "window": "1m",
                "detection": {"sequential": {"falseAlarmEvery": f"{round(budget_days)}d"}},
            },
        ),
        Policy(
            "evidently",
            {
                "name": "evidently",
                "signal": "dataDrift",
                "condition": {"op": ">", "threshold": 0.1},
                "window": "10m",
                "for": "5m",
            },
        ),
        Policy(
            "ks",
            {
                "name": "ks",
                "query": "ks_min_p_value",
                "condition": {"op": "<", "threshold": 0.05},
                "window": "10m",
                "for": "5m",
            },
            raw=True,
        ),
    ]


def engine_spec(policy: Policy) -> MonitorSpec:
    spec = ModelMonitorSpec.model_validate(
        {"target": {"name": "model"}, "model": {"name": "model"}, "interval": f"{TICK}s", "policies": [policy.spec]}
    )
    return monitor_from_api("bench", "model", spec)


def signal_request(spec: MonitorSpec, policy: Policy) -> SignalRequest:
    validated = ModelMonitorSpec.model_validate(
        {"target": {"name": "model"}, "model": {"name": "model"}, "policies": [policy.spec]}
    ).policies[0]
    return SignalRequest(
        namespace="bench",
        monitor="model",
        policy=policy.name,
        model="model",
        window=validated.window,
        signal=validated.signal,
        auto_threshold=bool(validated.condition.auto_threshold),
        false_alarm_rate=validated.condition.false_alarm_rate,
        drift_method=validated.method or "psi",
    )


@dataclass
class Stream:
    """Simulated traffic: per-tick bucket counts (ticks, features, bins), raw rows only when a policy needs them."""

    counts: np.ndarray
    rows: np.ndarray | None

    @classmethod
    def draw(
        cls,
        reference: Reference,
        ticks: int,
        change_tick: int | None,
        shift: float,
        rng: np.random.Generator,
        raw: bool,
    ) -> Stream:
        if raw:
            rows = rng.standard_normal((ticks, ROWS_PER_TICK, FEATURES))
            if change_tick is not None:
                rows[change_tick:, :, 0] += shift
            edges = reference.edges
            counts = np.stack(
                [np.stack([bin_counts(rows[t, :, f], edges) for f in range(FEATURES)]) for t in range(ticks)]
            )
            return cls(counts.astype(np.float64), rows)
        null = reference.probabilities(0.0)
        counts = rng.multinomial(ROWS_PER_TICK, null, size=(ticks, FEATURES)).astype(np.float64)
        if change_tick is not None:
            counts[change_tick:, 0, :] = rng.multinomial(
                ROWS_PER_TICK, reference.probabilities(shift), ticks - change_tick
            )
        return cls(counts, None)


def measurements(
    policy: Policy, spec: MonitorSpec, reference: Reference, stream: Stream, first_tick: int
) -> list[Measurement]:
    """The policy's measurement at every tick from ``first_tick`` (the operator's computation, see the module)."""
    window = policy.window_ticks
    ticks = stream.counts.shape[0]
    if policy.raw:
        assert stream.rows is not None
        found = []
        for t in range(first_tick, ticks):
            current = stream.rows[t - window + 1 : t + 1].reshape(-1, FEATURES)
            _, p_values = ks_columns(reference.sorted_sample, current, p_value="fast")
            found.append(Measurement.value(float(np.min(p_values)), current.shape[0]))
        return found
    request = signal_request(spec, policy)
    cumulative = np.concatenate([np.zeros((1, *stream.counts.shape[1:])), np.cumsum(stream.counts, axis=0)])
    ends = np.arange(first_tick, ticks) + 1
    windows = cumulative[ends] - cumulative[ends - window]  # (evaluations, features, bins)
    per_feature = [
        window_tests(
            request.drift_method,
            reference.shares,
            windows[:, f, :],
            false_alarm_rate=request.false_alarm_rate / FEATURES,
        )
        for f in range(FEATURES)
    ]
    return [
        drift_measurement(request, [FeatureTest("v1", f"x{f}", per_feature[f][i]) for f in range(FEATURES)], [])
        for i in range(len(ends))
    ]


def firing_starts(spec: MonitorSpec, found: Sequence[Measurement], first_tick: int) -> list[int]:
    """Ticks at which the policy entered Firing, through the engine, one evaluation per tick."""
    name = spec.policies[0].name
    prior: dict[str, PolicyState] = {}
    starts = []
    for offset, measurement in enumerate(found):
        tick = first_tick + offset
        result = evaluate(spec, prior, {name: measurement}, T0 + dt.timedelta(seconds=tick * TICK))
        prior = {state.name: state for state in result.states}
        if result.steps[0].started_firing:
            starts.append(tick)
    return starts


def false_episodes(policy: Policy, reference: Reference, days: float, rng: np.random.Generator) -> tuple[int, float]:
    """False episodes over ``days`` model-days without drift (one continuous stream per simulated day)."""
    spec = engine_spec(policy)
    warmup = policy.window_ticks
    episodes, simulated = 0, 0.0
    chunk = DAY_TICKS if days >= 1 else int(days * DAY_TICKS)
    while simulated < days - 1e-9:
        stream = Stream.draw(reference, chunk + warmup, None, 0.0, rng, policy.raw)
        found = measurements(policy, spec, reference, stream, warmup)
        episodes += len(firing_starts(spec, found, warmup))
        simulated += chunk / DAY_TICKS
    return episodes, simulated


def detection_delays(
    policy: Policy, reference: Reference, shift: float, runs: int, horizon_ticks: int, rng: np.random.Generator
) -> list[float]:
    """Minutes from the change to the first entry into Firing after it (inf when not within the horizon)."""
    spec = engine_spec(policy)
    warmup = 60  # 30 minutes without drift: windows full, sequential statistic in its steady state
    delays = []
    for _ in range(runs):
        change = warmup + int(rng.integers(0, 20))  # the change falls anywhere between evaluations' windows
        ticks = change + horizon_ticks
        stream = Stream.draw(reference, ticks, change, shift, rng, policy.raw)
        first = policy.window_ticks
        starts = [t for t in firing_starts(spec, measurements(policy, spec, reference, stream, first), first)]
        after = [t for t in starts if t >= change]
        delays.append((after[0] - change) * TICK / 60 if after else math.inf)
    return delays


def upper_95(events: int, exposure: float) -> float:
    """One-sided 95% upper bound of a Poisson rate (events per unit of exposure)."""
    from scipy.stats import chi2

    return float(chi2.ppf(0.95, 2 * (events + 1)) / 2 / exposure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few simulated hours; print only")
    parser.add_argument("--days", type=float, default=300.0, help="model-days without drift for default/sequential")
    parser.add_argument("--baseline-days", type=float, default=3.0, help="model-days without drift for evidently/ks")
    parser.add_argument("--runs", type=int, default=30, help="shifted streams per shift size and policy")
    parser.add_argument("--budget-days", type=float, default=1000.0, help="sequential falseAlarmEvery, in days")
    parser.add_argument("--false-alarm-rate", type=float, default=None, help="the default policy's rate (API default)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the table")
    parser.add_argument("--only", nargs="*", default=None, help="policy names to run")
    args = parser.parse_args(argv)
    if args.quick:
        args.days, args.baseline_days, args.runs = 0.25, 0.1, 3
    rng = np.random.default_rng(args.seed)
    reference = Reference.build(rng)
    chosen = [p for p in policies(args.budget_days, args.false_alarm_rate) if args.only is None or p.name in args.only]
    rows = []
    for policy in chosen:
        days = args.days if policy.name in ("default", "sequential") else args.baseline_days
        start = time.perf_counter()
        episodes, simulated = false_episodes(policy, reference, days, rng)
        seconds = time.perf_counter() - start
        per_1000 = 1000 * episodes / simulated
        bound = 1000 * upper_95(episodes, simulated)
        delays = {}
        for shift in SHIFTS:
            horizon = 4 * 120 if policy.name != "ks" else 120  # 4 hours (KS: 1 hour, it is slow and fires fast)
            delays[shift] = detection_delays(policy, reference, shift, args.runs, horizon, rng)
        rows.append((policy, episodes, simulated, per_1000, bound, delays))
        line = (
            f"{policy.name}: {episodes} false episodes in {simulated:g} model-days ({per_1000:.3g} per 1,000, "
            f"95% upper bound {bound:.3g}); median delay "
            + ", ".join(f"{s} SD {np.median(d):.1f} min" for s, d in delays.items())
            + f" [{seconds:.0f} s]"
        )
        print(line, flush=True)
    if args.quick:
        return 0
    write_results(rows, args, args.output)
    return 0


def _delay_text(delays: list[float]) -> str:
    finite = [d for d in delays if math.isfinite(d)]
    missed = len(delays) - len(finite)
    if not finite:
        return f"not within the horizon ({missed} of {len(delays)})"
    text = f"{np.median(finite + [math.inf] * missed):.1f} ({np.percentile(finite, 10):.1f}-{max(finite):.1f})"
    return text + (f", {missed} missed" if missed else "")


def write_results(rows: list[tuple[Any, ...]], args: argparse.Namespace, output: Path) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    out = [
        "# Alert quality (`python bench/bench_alert_quality.py`)",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores, load "
        f"{load[0]:.1f}), Python {sys.version.split()[0]}, seed {args.seed}. {FEATURES} features N(0, 1), "
        f"{RATE:g} requests/s, one evaluation every {TICK} s; sequential budget falseAlarmEvery "
        f"{args.budget_days:g}d; {args.runs} shifted streams per shift and policy (the change at a random tick "
        "after 30 minutes without drift).",
        "",
        "| policy | false episodes / model-days | per 1,000 model-days (95% upper bound) | delay 0.25 SD, min | "
        "delay 0.5 SD, min | delay 1 SD, min |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for policy, episodes, simulated, per_1000, bound, delays in rows:
        out.append(
            f"| {policy.name} | {episodes} / {simulated:g} | {per_1000:.3g} ({bound:.3g}) | "
            + " | ".join(_delay_text(delays[s]) for s in SHIFTS)
            + " |"
        )
    out += [
        "",
        "Delays: median (10th percentile - maximum) minutes from the change to the first entry into Firing; a "
        "run not detected within the horizon (4 hours; KS 1 hour) counts as infinitely late in the median.",
        "",
    ]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(out))
    print(f"wrote {output}")


if __name__ == "__main__":
    raise SystemExit(main())
