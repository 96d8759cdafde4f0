"""What the label kinds and the estimated accuracy cost the sidecar, each against its baseline in the same run.

1. Ingest with a score calibration (every scored prediction adds its calibrated probability of being correct,
   for estimatedAccuracy / Precision / Recall) against the same profile without one: events per second of CPU
   time of one process, batches of ``batch`` events with 10 numerical features, a score and a request id; the
   median of three alternated rounds each.
2. The label join of a multiclass model (per-class outcomes) and of a regression model (error sums) against a
   binary model's (confusion counts, and the per-replica quality window the binary gauges read): labels joined
   per second per core, batches of 1,000 labels.

Profiles are built in process (``build_profile``) from generated reference rows. Usage::

    python bench/bench_label_kinds.py            # writes bench/results/label_kinds.md
    python bench/bench_label_kinds.py --quick    # seconds, prints only
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 10
RESULTS = Path(__file__).parent / "results" / "label_kinds.md"
ROUNDS = 3


def _profile(rng: np.random.Generator, task: str) -> Any:
    from modelmonitor.sidecar.datafiles import Table
    from modelmonitor.sidecar.profile_build import BuildOptions, build_profile

    rows = 5000
    # Drift thresholds are not what is measured here: one method, a coarse rate, small windows keep the build short.
    quick = {"window_size": 100, "n_boot": 100, "false_alarm_rate": 0.2, "numerical_methods": ("psi",),
             "categorical_methods": ("psi",)}  # fmt: skip
    columns: dict[str, Any] = {f"f{j}": rng.normal(size=rows) for j in range(FEATURES)}
    if task == "binary":
        score = 1 / (1 + np.exp(-columns["f0"]))
        columns |= {"score": score, "label": (rng.random(rows) < score).astype(np.float64)}
        options = BuildOptions(score_column="score", label_column="label", **quick)  # type: ignore[arg-type]
    elif task == "multiclass":
        labels = np.empty(rows, dtype=object)
        labels[:] = [f"c{k}" for k in rng.integers(0, 10, rows)]
        columns |= {"label": labels}
        options = BuildOptions(label_column="label", **quick)  # type: ignore[arg-type]
    else:
        columns |= {"prediction": columns["f0"] * 3, "label": columns["f0"] * 3 + rng.normal(size=rows)}
        options = BuildOptions(prediction_column="prediction", label_column="label", **quick)  # type: ignore[arg-type]
    profile, _notes = build_profile(Table(columns=columns, rows=rows, path="reference.npz"), options)
    assert profile.task == task
    return profile


def _rate(count: int, run: Any) -> float:
    started = time.process_time()  # CPU time of this process: per second per core
    run()
    return count / (time.process_time() - started)


def bench_estimate(rng: np.random.Generator, batch: int, batches: int) -> dict[str, float]:
    from modelmonitor.sidecar import Monitor

    profile = _profile(rng, "binary")
    assert profile.calibration is not None
    plain = dataclasses.replace(profile, calibration=None)
    data = [rng.normal(size=(batch, FEATURES)) for _ in range(batches)]
    scores = [1 / (1 + np.exp(-d[:, 0])) for d in data]
    ids = [[f"b{b}-{i}" for i in range(batch)] for b in range(batches)]
    rates: dict[str, list[float]] = {"without": [], "with": []}
    # Alternated rounds, the median of each: warm-up and a passing load hit both alike.
    for _round in range(ROUNDS):
        for name, used in (("without", plain), ("with", profile)):
            monitor = Monitor(used, model="bench", version="v1")
            rates[name].append(
                _rate(
                    batch * batches,
                    lambda m=monitor: [
                        m.log_batch(data[b], scores=scores[b], request_ids=ids[b]) for b in range(batches)
                    ],
                )
            )
            assert monitor.counters.estimated.predictions == (batch * batches if name == "with" else 0)
    results = {name: float(np.median(values)) for name, values in rates.items()}
    return results


def bench_join(rng: np.random.Generator, labels: int) -> dict[str, float]:
    from modelmonitor.sidecar import Monitor

    results: dict[str, float] = {}
    for task in ("binary", "multiclass", "regression"):
        profile = _profile(rng, task)
        monitor = Monitor(profile, model="bench", version="v1")
        ids = [f"r{i}" for i in range(labels)]
        features = rng.normal(size=(labels, FEATURES))
        if task == "binary":
            predictions: Any = rng.integers(0, 2, labels)
            truth: list[Any] = rng.integers(0, 2, labels).tolist()
        elif task == "multiclass":
            predictions = [f"c{k}" for k in rng.integers(0, 10, labels)]
            truth = [f"c{k}" for k in rng.integers(0, 10, labels)]
        else:
            predictions = rng.normal(size=labels)
            truth = (np.asarray(predictions) + rng.normal(size=labels)).tolist()
        for start in range(0, labels, 10_000):
            end = start + 10_000
            monitor.log_batch(features[start:end], predictions=predictions[start:end], request_ids=ids[start:end])
        pairs = list(zip(ids, truth, strict=True))
        results[task] = _rate(
            labels, lambda m=monitor, p=pairs: [m.log_labels(p[s : s + 1000]) for s in range(0, labels, 1000)]
        )
        assert monitor.labels.joined == labels
    return results


def report(estimate: dict[str, float], join: dict[str, float], quick: bool) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        "# Label kinds and estimated accuracy: what they cost the sidecar",
        "",
        f"Measured {when} on {platform.machine()}, 2 cores shared with other work, Python "
        f"{platform.python_version()}{' (quick run)' if quick else ''}. Reproduce with "
        "`python bench/bench_label_kinds.py`. Each figure is set against its baseline measured in the same run.",
        "",
        f"## Ingest with a score calibration ({FEATURES} features, a score and a request id per event)",
        "",
        "| profile | events/s per core | vs without |",
        "|---|---:|---:|",
        f"| without a calibration (baseline) | {estimate['without']:,.0f} | 1.00x |",
        f"| with a calibration (estimated accuracy, precision, recall) | {estimate['with']:,.0f} | "
        f"{estimate['with'] / estimate['without']:.2f}x |",
        "",
        "## The label join by kind of model (batches of 1,000 labels)",
        "",
        "| task | labels joined/s per core | vs binary |",
        "|---|---:|---:|",
        *(f"| {task}{' (baseline)' if task == 'binary' else ''} | {rate:,.0f} | {rate / join['binary']:.2f}x |"
          for task, rate in join.items()),
        "",
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, prints only")
    parser.add_argument("--output", type=Path, help=f"markdown results (default {RESULTS}, not in --quick)")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    estimate = bench_estimate(rng, batch=10_000, batches=2 if args.quick else 20)
    join = bench_join(rng, labels=10_000 if args.quick else 100_000)
    print(json.dumps({"estimate": estimate, "join": join}, indent=1), file=sys.stderr)
    text = report(estimate, join, args.quick)
    print(text)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
