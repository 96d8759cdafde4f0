"""The drift methods by name: a literal table, no registration at import time.

Each entry says what the method reads (``counts`` over shared bins, mergeable across replicas, or raw
``samples``), which way is bad (``higher_is_drift`` or ``lower_is_drift``: a p-value is low under drift) and
the range of its score. The ``name`` is the ``method`` label of the sidecar's drift gauges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray
from modelmonitor.stats.drift.chi_square import chi_square_columns
from modelmonitor.stats.drift.hellinger import hellinger_columns
from modelmonitor.stats.drift.jensen_shannon import js_distance_columns
from modelmonitor.stats.drift.ks import ks_columns
from modelmonitor.stats.drift.linf import linf_columns
from modelmonitor.stats.drift.psi import psi_columns
from modelmonitor.stats.drift.wasserstein import wasserstein_columns, wasserstein_normalized_columns

InputKind = Literal["counts", "samples"]
Direction = Literal["higher_is_drift", "lower_is_drift"]
ColumnsFunction = Callable[[Any, npt.ArrayLike], FloatArray]


@dataclass(frozen=True)
class DriftMethod:
    """One drift method.

    Attributes:
        name: the method's name, also the ``method`` label value in metrics.
        input: ``"counts"``: reads count vectors over shared bins (mergeable across replicas);
            ``"samples"``: reads raw values.
        direction: ``"higher_is_drift"`` for distances and statistics, ``"lower_is_drift"`` for p-values.
        lower: smallest possible score. upper: largest possible score (``inf`` when unbounded). columns: the
        vectorized function. Counts: ``(features, bins)`` reference and current counts (or 1-D for
            one feature). Samples: ``(rows, features)`` reference (or a ``SortedReference``) and current.
            Returns one score per feature.
        summary: one line for docs and help texts.
    """

    name: str
    input: InputKind
    direction: Direction
    lower: float
    upper: float
    columns: ColumnsFunction
    summary: str

    def function(self, reference: Any, current: npt.ArrayLike) -> float:
        """The score of one feature (1-D counts or samples)."""
        scores = np.atleast_1d(self.columns(reference, current))
        if scores.size != 1:
            raise ValueError(f"{self.name}: expected one feature, got {scores.size}; use .columns()")
        return float(scores[0])

    def is_drift(self, score: float | FloatArray, threshold: float) -> bool | npt.NDArray[np.bool_]:
        """Whether ``score`` is past ``threshold`` in this method's direction (strictly)."""
        result = np.asarray(score) > threshold if self.direction == "higher_is_drift" else np.asarray(score) < threshold
        return bool(result) if result.ndim == 0 else result


def _psi(reference: Any, current: npt.ArrayLike) -> FloatArray:
    return np.atleast_1d(np.asarray(psi_columns(reference, current), dtype=np.float64))


def _js(reference: Any, current: npt.ArrayLike) -> FloatArray:
    return np.atleast_1d(np.asarray(js_distance_columns(reference, current), dtype=np.float64))


def _hellinger(reference: Any, current: npt.ArrayLike) -> FloatArray:
    return np.atleast_1d(np.asarray(hellinger_columns(reference, current), dtype=np.float64))


def _linf(reference: Any, current: npt.ArrayLike) -> FloatArray:
    return np.atleast_1d(np.asarray(linf_columns(reference, current), dtype=np.float64))


def _chi_square_p_value(reference: Any, current: npt.ArrayLike) -> FloatArray:
    return np.atleast_1d(chi_square_columns(reference, current)[1])


def _ks_p_value(reference: Any, current: npt.ArrayLike) -> FloatArray:
    return ks_columns(reference, current)[1]


def _ks_statistic(reference: Any, current: npt.ArrayLike) -> FloatArray:
    return ks_columns(reference, current)[0]


METHODS: dict[str, DriftMethod] = {
    "psi": DriftMethod(
        "psi", "counts", "higher_is_drift", 0.0, np.inf, _psi, "Population Stability Index (natural log)"
    ),
    "jensen_shannon": DriftMethod(
        "jensen_shannon", "counts", "higher_is_drift", 0.0, 1.0, _js, "Jensen-Shannon distance, log base 2"
    ),
    "hellinger": DriftMethod("hellinger", "counts", "higher_is_drift", 0.0, 1.0, _hellinger, "Hellinger distance"),
    "linf": DriftMethod("linf", "counts", "higher_is_drift", 0.0, 1.0, _linf, "largest change in one category's share"),
    "chi_square": DriftMethod(
        "chi_square",
        "counts",
        "lower_is_drift",
        0.0,
        1.0,
        _chi_square_p_value,
        "chi-square homogeneity test p-value",
    ),
    "ks": DriftMethod(
        "ks", "samples", "lower_is_drift", 0.0, 1.0, _ks_p_value, "Kolmogorov-Smirnov two-sample p-value"
    ),
    "ks_statistic": DriftMethod(
        "ks_statistic",
        "samples",
        "higher_is_drift",
        0.0,
        1.0,
        _ks_statistic,
        "Kolmogorov-Smirnov statistic D = sup|F - G|",
    ),
    "wasserstein": DriftMethod(
        "wasserstein",
        "samples",
        "higher_is_drift",
        0.0,
        np.inf,
        wasserstein_columns,
        "Wasserstein-1 distance, in the feature's unit",
    ),
    "wasserstein_normalized": DriftMethod(
        "wasserstein_normalized",
        "samples",
        "higher_is_drift",
        0.0,
        np.inf,
        wasserstein_normalized_columns,
        "Wasserstein-1 distance over the reference standard deviation",
    ),
}
