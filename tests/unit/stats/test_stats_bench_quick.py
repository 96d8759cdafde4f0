"""The drift benchmark's quick mode runs end to end and reports figures that agree with scipy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_drift.py"


def _load() -> ModuleType:
    if str(BENCH.parent) not in sys.path:  # as `python bench/bench_drift.py` has it: its sibling modules import
        sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_drift", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the module runs
    spec.loader.exec_module(module)
    return module


def test_quick_mode_reports_statistics_that_match_the_scipy_loop() -> None:
    bench = _load()
    figures = bench.run(bench.QUICK, with_evidently=False)
    assert figures["max_difference"] < 1e-9  # same bins, same statistics as the per-feature scipy loop
    assert figures["warm"] < figures["scipy_loop"]
    methods = {row["method"] for row in figures["false_alarms"]}
    assert "ModelMonitor `psi`, calibrated" in methods
    assert all(row["detected"] >= 0.95 for row in figures["false_alarms"])

    text = bench.render(figures)
    assert "## Exact KS versus sorting the columns once" in text
    assert "| ModelMonitor `wasserstein_normalized`, calibrated |" in text
