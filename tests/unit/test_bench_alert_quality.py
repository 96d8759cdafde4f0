"""The alert-quality benchmark runs end to end through the engine: a 1 SD shift is detected by both drift
policies, sequential detection first, and a drift-free hour raises no false episode."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_alert_quality.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_alert_quality", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the module runs
    spec.loader.exec_module(module)
    return module


def test_both_drift_policies_detect_a_shift_and_sequential_is_first() -> None:
    bench = _load()
    rng = np.random.default_rng(1)
    reference = bench.Reference.build(rng)
    default, sequential = bench.policies(1000.0)[:2]
    slow = bench.detection_delays(default, reference, 1.0, 2, 40, rng)
    fast = bench.detection_delays(sequential, reference, 1.0, 2, 40, rng)
    assert all(math.isfinite(d) for d in slow + fast)
    assert max(fast) < min(slow)  # the default waits `for: 5m`; the CUSUM crosses within two windows
    assert min(slow) >= 5.0
    episodes, days = bench.false_episodes(default, reference, 1 / 24, rng)
    assert (episodes, round(days * 24)) == (0, 1)
