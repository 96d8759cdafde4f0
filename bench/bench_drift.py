"""Drift statistics: ModelMonitor's vectorized statistics against a per-feature scipy loop and Evidently.

Measured side by side in one run on the same data:

1. Throughput: ``features`` numerical features x ``rows`` rows of reference and current data; ingest (binning
   at reference quantiles) plus every drift statistic (PSI, Jensen-Shannon, Hellinger, L-infinity,
   chi-square, exact KS statistic and p-value, Wasserstein-1 and its normalized form) for every feature.
   * ModelMonitor "cold": from raw arrays, reference work included (quantile bins, sorting).
   * ModelMonitor "warm": the reference profile (bins, counts, sorted reference) already built, as in the
     sidecar; only the current window is processed.
   * a per-feature loop over scipy/numpy (``ks_2samp``, ``wasserstein_distance``, ``jensenshannon``,
     ``chi2_contingency``, PSI/Hellinger/L-inf written in numpy) on the same bins.
   * Evidently's ``DataDriftPreset`` report (its default per-column tests), run once.
2. Exact KS versus sorting the columns once (the least any sort-based exact KS can cost).
3. False alarms: 1,000 windows of 100 rows drawn from the reference distribution (no drift), and power on
   1,000 windows of 1,000 rows with a 0.5 standard-deviation mean shift; ModelMonitor's thresholds calibrated
   for each window size at a 1% target, next to Evidently's default test and threshold for the same data.

Usage::

    python bench/bench_drift.py             # full run, writes bench/results/drift.md
    python bench/bench_drift.py --quick     # small sizes, a few seconds, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from publish import add_output_arguments, publish
from scipy import stats
from scipy.spatial.distance import jensenshannon

from modelmonitor.stats import METHODS
from modelmonitor.stats.binning import bin_counts_columns, quantile_edges_columns
from modelmonitor.stats.calibration import calibrate_threshold, score_windows
from modelmonitor.stats.drift import (
    SortedSample,
    chi_square_columns,
    hellinger_columns,
    js_distance_columns,
    ks_columns,
    linf_columns,
    psi_columns,
    wasserstein_columns,
    wasserstein_normalized_columns,
)

RESULTS = Path(__file__).parent / "results" / "drift.md"
BINS = 10


@dataclass(frozen=True)
class Sizes:
    """Problem sizes for one run."""

    rows: int
    features: int
    windows: int
    repeats: int
    n_boot: int


FULL = Sizes(rows=100_000, features=100, windows=1000, repeats=3, n_boot=1000)
QUICK = Sizes(rows=12_000, features=8, windows=200, repeats=1, n_boot=200)


def make_data(sizes: Sizes, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current tables: varied scales and shapes; a tenth of the current features drifted."""
    scale = rng.uniform(0.5, 5.0, size=sizes.features)
    location = rng.uniform(-10, 10, size=sizes.features)
    reference = rng.normal(size=(sizes.rows, sizes.features)) * scale + location
    current = rng.normal(size=(sizes.rows, sizes.features)) * scale + location
    drifted = np.arange(0, sizes.features, 10)
    current[:, drifted] += 0.3 * scale[drifted]
    return reference, current


def _stack(counts: list[np.ndarray]) -> np.ndarray:
    return np.stack(counts)  # continuous data: every feature has the same number of bins


@dataclass
class Profile:
    """What a profile holds for the numerical features: bins, reference counts, sorted reference."""

    edges: list[np.ndarray]
    counts: np.ndarray
    sorted_reference: SortedSample


def build_profile(reference: np.ndarray) -> Profile:
    """Sort the reference once; bounds and counts are read off the sorted columns."""
    sorted_reference = SortedSample.from_samples(reference)
    edges = sorted_reference.quantile_edges(BINS)
    return Profile(edges, _stack(sorted_reference.bin_counts(edges)), sorted_reference)


def build_count_profile(reference: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The count-only profile (no sorted reference): what the mergeable, count-based path needs."""
    edges = quantile_edges_columns(reference, BINS)
    return edges, _stack(bin_counts_columns(reference, edges))


def score_counts(edges: list[np.ndarray], reference_counts: np.ndarray, current: np.ndarray) -> dict[str, Any]:
    """The sidecar's ingest path: bin the current rows, then the count-based statistics."""
    counts = _stack(bin_counts_columns(current, edges))
    return {
        "psi": psi_columns(reference_counts, counts),
        "jensen_shannon": js_distance_columns(reference_counts, counts),
        "hellinger": hellinger_columns(reference_counts, counts),
        "linf": linf_columns(reference_counts, counts),
        "chi_square": chi_square_columns(reference_counts, counts),
    }


def score_current(profile: Profile, current: np.ndarray, p_value: str = "fast") -> dict[str, Any]:
    """Ingest one current table and compute every drift statistic for every feature."""
    window = SortedSample.from_samples(current, "current")  # one sort shared by binning, KS and Wasserstein
    counts = _stack(window.bin_counts(profile.edges))
    return {
        "psi": psi_columns(profile.counts, counts),
        "jensen_shannon": js_distance_columns(profile.counts, counts),
        "hellinger": hellinger_columns(profile.counts, counts),
        "linf": linf_columns(profile.counts, counts),
        "chi_square": chi_square_columns(profile.counts, counts),
        "ks": ks_columns(profile.sorted_reference, window, p_value=p_value),  # type: ignore[arg-type]
        "wasserstein": wasserstein_columns(profile.sorted_reference, window),
        "wasserstein_normalized": wasserstein_normalized_columns(profile.sorted_reference, window),
    }


def scipy_loop(reference: np.ndarray, current: np.ndarray) -> dict[str, list[float]]:
    """The same statistics, one feature at a time, through scipy and plain numpy."""
    out: dict[str, list[float]] = {name: [] for name in METHODS}
    for j in range(reference.shape[1]):
        ref, cur = reference[:, j], current[:, j]
        inner = np.quantile(ref, np.arange(1, BINS) / BINS, method="inverted_cdf")
        # Right-closed bins like Prometheus' `le` (np.histogram's bins are left-closed).
        p_counts = np.bincount(np.searchsorted(inner, ref, side="left"), minlength=inner.size + 1)
        q_counts = np.bincount(np.searchsorted(inner, cur, side="left"), minlength=inner.size + 1)
        p, q = p_counts / p_counts.sum(), q_counts / q_counts.sum()
        pf, qf = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
        out["psi"].append(float(np.sum((qf - pf) * np.log(qf / pf))))
        out["jensen_shannon"].append(float(jensenshannon(p, q, base=2)))
        out["hellinger"].append(float(np.sqrt(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2) / 2)))
        out["linf"].append(float(np.max(np.abs(p - q))))
        out["chi_square"].append(float(stats.chi2_contingency(np.stack([p_counts, q_counts]), correction=False)[1]))
        result = stats.ks_2samp(ref, cur)
        out["ks"].append(float(result.pvalue))
        out["ks_statistic"].append(float(result.statistic))
        w1 = stats.wasserstein_distance(ref, cur)
        out["wasserstein"].append(w1)
        out["wasserstein_normalized"].append(w1 / float(np.std(ref)))
    return out


def evidently_report(reference: np.ndarray, current: np.ndarray) -> Any:
    """Evidently's data drift report with its defaults (per-column test chosen by Evidently)."""
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    columns = [f"f{j}" for j in range(reference.shape[1])]
    report = Report([DataDriftPreset()])
    return report.run(
        current_data=pd.DataFrame(current, columns=columns), reference_data=pd.DataFrame(reference, columns=columns)
    )


def best_of(repeats: int, function: Callable[[], Any]) -> float:
    """Best wall time of ``repeats`` calls (the machine is shared: the minimum is the least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def evidently_default_decisions(reference: np.ndarray, windows: np.ndarray) -> tuple[str, float, np.ndarray]:
    """Evidently's default test for this column and its default threshold, applied to every window."""
    import pandas as pd
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    reference_series = pd.Series(reference)
    test = get_stattest(reference_series, pd.Series(windows[0]), ColumnType.Numerical, None)
    decisions = np.array(
        [bool(test(reference_series, pd.Series(w), ColumnType.Numerical, None).drifted) for w in windows]
    )
    return test.name, float(test.default_threshold), decisions


def false_alarm_study(sizes: Sizes, with_evidently: bool, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Alarm rate on null 100-row windows and detection rate on shifted 1,000-row windows, per method."""
    reference = rng.normal(size=sizes.rows)
    null_windows = rng.normal(size=(sizes.windows, 100))
    shifted_windows = rng.normal(0.5, 1.0, size=(sizes.windows, 1000))
    rows: list[dict[str, Any]] = []
    for name, method in METHODS.items():
        t100 = calibrate_threshold(name, reference, 100, false_alarm_rate=0.01, n_boot=sizes.n_boot, rng=rng)
        t1000 = calibrate_threshold(name, reference, 1000, false_alarm_rate=0.01, n_boot=sizes.n_boot, rng=rng)
        alarms = method.is_drift(score_windows(name, reference, null_windows), t100)
        caught = method.is_drift(score_windows(name, reference, shifted_windows), t1000)
        rows.append(
            {
                "method": f"ModelMonitor `{name}`, calibrated",
                "threshold": f"{t100:.4g} / {t1000:.4g}",
                "false_alarms": float(np.mean(alarms)),
                "detected": float(np.mean(caught)),
            }
        )
    if with_evidently:
        test_name, threshold, alarms = evidently_default_decisions(reference, null_windows)
        _, _, caught = evidently_default_decisions(reference, shifted_windows)
        rows.append(
            {
                "method": f"Evidently default (`{test_name}`)",
                "threshold": f"{threshold:g} (fixed)",
                "false_alarms": float(np.mean(alarms)),
                "detected": float(np.mean(caught)),
            }
        )
        # Evidently switches to a KS test (p < 0.05) when the reference has at most 1,000 rows.
        small_reference = reference[:1000]
        test_name, threshold, alarms = evidently_default_decisions(small_reference, null_windows)
        _, _, caught = evidently_default_decisions(small_reference, shifted_windows)
        rows.append(
            {
                "method": f"Evidently default, 1,000-row reference (`{test_name}`)",
                "threshold": f"{threshold:g} (fixed)",
                "false_alarms": float(np.mean(alarms)),
                "detected": float(np.mean(caught)),
            }
        )
    return rows


def check_agreement(ours: dict[str, Any], loop: dict[str, list[float]]) -> float:
    """Largest absolute difference between our statistics and the scipy loop's (sanity check of the bench)."""
    pairs = [
        (ours["psi"], loop["psi"]),
        (ours["jensen_shannon"], loop["jensen_shannon"]),
        (ours["hellinger"], loop["hellinger"]),
        (ours["linf"], loop["linf"]),
        (ours["chi_square"][1], loop["chi_square"]),
        (ours["ks"][0], loop["ks_statistic"]),
        (ours["wasserstein"], loop["wasserstein"]),
        (ours["wasserstein_normalized"], loop["wasserstein_normalized"]),
    ]
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs)


def run(sizes: Sizes, *, with_evidently: bool, seed: int = 20261124) -> dict[str, Any]:
    """Run every measurement once, side by side; returns the figures."""
    rng = np.random.default_rng(seed)
    reference, current = make_data(sizes, rng)
    figures: dict[str, Any] = {"sizes": sizes}

    figures["cold"] = best_of(sizes.repeats, lambda: score_current(build_profile(reference), current))
    figures["profile"] = best_of(sizes.repeats, lambda: build_profile(reference))
    profile = build_profile(reference)
    figures["warm"] = best_of(sizes.repeats, lambda: score_current(profile, current))
    figures["warm_scipy_p"] = best_of(1, lambda: score_current(profile, current, p_value="scipy"))
    figures["counts_cold"] = best_of(sizes.repeats, lambda: score_counts(*build_count_profile(reference), current))
    edges, reference_counts = build_count_profile(reference)
    figures["counts_warm"] = best_of(sizes.repeats, lambda: score_counts(edges, reference_counts, current))
    ours = score_current(profile, current)

    start = time.perf_counter()
    loop = scipy_loop(reference, current)
    figures["scipy_loop"] = time.perf_counter() - start
    figures["max_difference"] = check_agreement(ours, loop)

    columns = np.ascontiguousarray(current.T)
    reference_columns = np.ascontiguousarray(reference.T)
    figures["sort_current"] = best_of(sizes.repeats, lambda: np.sort(columns, axis=1))
    figures["ks_warm"] = best_of(sizes.repeats, lambda: ks_columns(profile.sorted_reference, current, p_value="fast"))
    figures["sort_both"] = best_of(
        sizes.repeats, lambda: (np.sort(reference_columns, axis=1), np.sort(columns, axis=1))
    )
    figures["ks_cold"] = best_of(sizes.repeats, lambda: ks_columns(reference, current, p_value="fast"))

    if with_evidently:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            evidently_report(reference, current)
            figures["evidently"] = time.perf_counter() - start
    figures["false_alarms"] = false_alarm_study(sizes, with_evidently, rng)
    return figures


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores (shared; load average at the end {load}), "
        f"Python {platform.python_version()}, numpy {np.__version__}, scipy {_scipy_version()}"
    )


def _scipy_version() -> str:
    import scipy

    return str(scipy.__version__)


def _evidently_version() -> str:
    try:
        import evidently

        return str(evidently.__version__)
    except ImportError:
        return "not installed"


def render(figures: dict[str, Any]) -> str:
    """The results as Markdown."""
    sizes: Sizes = figures["sizes"]
    low = stats.binom.ppf(0.025, sizes.windows, 0.01) / sizes.windows
    high = stats.binom.ppf(0.975, sizes.windows, 0.01) / sizes.windows
    lines = [
        "# Drift statistics benchmark",
        "",
        f"Measured {dt.date.today().isoformat()} with `python bench/bench_drift.py` on {machine()}; "
        + (f"Evidently {_evidently_version()}." if "evidently" in figures else "Evidently not run."),
        "All rows come from one run on the same data; times are the best of "
        f"{sizes.repeats} for ModelMonitor and one run for the scipy loop and Evidently.",
        "",
        f"## Ingest plus all drift statistics: {sizes.features} numerical features x {sizes.rows:,} rows",
        "",
        "Statistics: PSI, Jensen-Shannon (base 2), Hellinger, L-infinity and chi-square on 10 reference-quantile",
        "bins; exact KS statistic and p-value; Wasserstein-1 and normalized Wasserstein-1; for every feature.",
        "",
        "| what | seconds | Evidently / this | this / ModelMonitor cold |",
        "|---|---:|---:|---:|",
    ]
    evidently = figures.get("evidently")
    cold = figures["cold"]

    def row(label: str, seconds: float) -> str:
        ratio = f"{evidently / seconds:.0f}x" if evidently else "n/a"
        return f"| {label} | {seconds:.3f} | {ratio} | {seconds / cold:.2f} |"

    lines += [
        row("ModelMonitor, cold: build the reference profile + score current (KS p-value: fast)", cold),
        row("ModelMonitor, warm: reference profile prebuilt, score current (KS p-value: fast)", figures["warm"]),
        row('ModelMonitor, warm, KS p-value exactly as scipy (`p_value="scipy"`)', figures["warm_scipy_p"]),
        row("building the reference profile alone (bins, counts, sorted reference)", figures["profile"]),
        row(
            "ModelMonitor, count-based statistics only, cold (bins from the reference + ingest + PSI, JS, "
            "Hellinger, L-inf, chi-square)",
            figures["counts_cold"],
        ),
        row("ModelMonitor, count-based statistics only, warm (the sidecar's mergeable path)", figures["counts_warm"]),
        row("per-feature scipy/numpy loop, same statistics", figures["scipy_loop"]),
    ]
    if evidently:
        lines.append(row("Evidently `DataDriftPreset` report (its default tests)", evidently))
    lines += [
        "",
        f"Largest absolute difference between ModelMonitor's and the scipy loop's statistics: "
        f"{figures['max_difference']:.2e}.",
        "",
        "## Exact KS versus sorting the columns once",
        "",
        "| case | sort only (s) | exact KS statistic + p-value (s) | ratio |",
        "|---|---:|---:|---:|",
        f"| warm: reference sorted in the profile; sort the current columns | {figures['sort_current']:.3f} | "
        f"{figures['ks_warm']:.3f} | {figures['ks_warm'] / figures['sort_current']:.2f} |",
        f"| cold: sort reference and current columns | {figures['sort_both']:.3f} | "
        f"{figures['ks_cold']:.3f} | {figures['ks_cold'] / figures['sort_both']:.2f} |",
        "",
        "## False alarms and power (one feature, reference N(0, 1) with "
        f"{sizes.rows:,} rows, {sizes.windows:,} windows each)",
        "",
        "Null: windows of 100 rows drawn from N(0, 1), no drift. Shift: windows of 1,000 rows from N(0.5, 1).",
        "ModelMonitor thresholds are calibrated by bootstrap on the reference for each window size at a 1% target",
        "(shown as threshold for 100 rows / for 1,000 rows). Slack: even an exact 1% threshold gives",
        f"Binomial({sizes.windows}, 0.01) alarms, so 95% of runs land between {low:.1%} and {high:.1%};",
        "the bootstrap estimate of the threshold adds its own sampling error.",
        "",
        "| method | threshold | false alarms, 100-row null windows | detected, 1,000-row shifted windows |",
        "|---|---|---:|---:|",
    ]
    for item in figures["false_alarms"]:
        lines.append(
            f"| {item['method']} | {item['threshold']} | {item['false_alarms']:.1%} | {item['detected']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_output_arguments(parser, RESULTS)
    parser.add_argument("--no-evidently", action="store_true", help="skip Evidently (e.g. not installed)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    with_evidently = not args.no_evidently
    if with_evidently:
        try:
            import evidently  # noqa: F401
        except ImportError:
            print("evidently is not installed: pip install -e '.[bench]', or pass --no-evidently", file=sys.stderr)
            return 2
    figures = run(sizes, with_evidently=with_evidently)
    text = render(figures)
    publish(text, args, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
