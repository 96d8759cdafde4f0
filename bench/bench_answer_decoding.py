"""Decoding a batched Prometheus answer: the work tree's ``parse_answer`` against a baseline commit's, in one process.

A batched query's answer holds a few series per model: at 10,000 models the benchmark fleet's largest (the accuracy
query's outcomes) is 40,000 series, and the budget allows 100,000. The operator decodes up to four such answers at
once (``MODELMONITOR_QUERY_PARALLELISM``), so what one decode allocates at its peak counts, not only what it keeps.

What runs: the same JSON bodies (instant vectors shaped like the accuracy outcomes: ``namespace``, ``model``,
``outcome``, ``version`` per series) through both functions. The baseline's ``modelmonitor/adapters/prometheus.py`` is
read from git (``--base``) and loaded as a module of its own next to the work tree's; every answer is checked to
give the same samples. Time: median of ``--repeats`` decodes with tracing off. Memory: tracemalloc's peak during
one decode and what the result keeps, both above what was allocated before.

Usage::

    python bench/bench_answer_decoding.py --base ad9f8b2      # writes bench/results/answer_decoding.md
    python bench/bench_answer_decoding.py --base HEAD --quick  # seconds, prints only
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from publish import add_output_arguments, publish

from modelmonitor.adapters import prometheus

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "answer_decoding.md"
SOURCE = "operator/modelmonitor/adapters/prometheus.py"
OUTCOMES = ("tp", "tn", "fp", "fn")

Parse = Callable[[str, int, bytes], Any]


def answer_body(series: int) -> bytes:
    """An instant vector of ``series`` series: 4 outcomes per model, as the accuracy query answers."""
    result = [
        {
            "metric": {
                "namespace": "bench",
                "model": f"model-{i // 4:05d}",
                "outcome": OUTCOMES[i % 4],
                "version": "v1",
            },
            "value": [1796608066.395, repr(i * 0.37)],
        }
        for i in range(series)
    ]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def baseline_module(commit: str, into: Path) -> ModuleType:
    """The baseline commit's answer parser, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:{SOURCE}"], capture_output=True, text=True, check=True
    ).stdout
    path = into / "prometheus_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("prometheus_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def timed(parse: Parse, body: bytes, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        parse("q", 200, body)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def traced(parse: Parse, body: bytes) -> tuple[float, float]:
    """(peak, kept) MiB allocated by one decode."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    answer = parse("q", 200, body)
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del answer
    return (peak - before) / 2**20, (kept - before) / 2**20


def same_samples(a: Any, b: Any) -> bool:
    return (
        a.error is None
        and b.error is None
        and [(dict(s.labels), s.value, s.timestamp) for s in a.samples]
        == [(dict(s.labels), s.value, s.timestamp) for s in b.samples]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="HEAD", help="baseline commit (default HEAD)")
    parser.add_argument("--repeats", type=int, default=7, help="timed decodes per size and side (default 7)")
    add_output_arguments(parser, RESULTS)
    args = parser.parse_args(argv)
    sizes = (4_000, 40_000) if args.quick else (10_000, 40_000, 100_000)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", args.base], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = baseline_module(args.base, Path(tmp))
        rows = []
        for size in sizes:
            body = answer_body(size)
            old, new = baseline.parse_answer, prometheus.parse_answer
            if not same_samples(old("q", 200, body), new("q", 200, body)):
                raise SystemExit(f"{size} series: the two decoders disagree")
            old_time, new_time = timed(old, body, args.repeats), timed(new, body, args.repeats)
            (old_peak, old_kept), (new_peak, new_kept) = traced(old, body), traced(new, body)
            rows.append(
                f"| {size:,} | {len(body) / 2**20:.1f} MiB | {old_time * 1000:.0f} ms | {new_time * 1000:.0f} ms | "
                f"{new_time / old_time:.2f} | {old_peak:.1f} / {old_kept:.1f} MiB | "
                f"{new_peak:.1f} / {new_kept:.1f} MiB | {new_peak / old_peak:.2f} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
    text = "\n".join(
        [
            "# Decoding a batched Prometheus answer",
            "",
            f"Generated by `python bench/bench_answer_decoding.py --base {args.base}` (method in its docstring): "
            f"the baseline is `parse_answer` of {commit}, the work tree's is the other; one process, the same bodies, "
            f"the same samples out. Python {platform.python_version()}, {platform.machine()}.",
            "",
            "| series | body | decode, baseline | decode, work tree | ratio | peak / kept, baseline "
            "| peak / kept, work tree | peak ratio |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    publish(text, args, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
