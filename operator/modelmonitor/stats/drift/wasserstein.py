"""Wasserstein-1 (earth mover's) distance, raw and normalized by the reference standard deviation.

Formula, with ``F`` and ``G`` the empirical CDFs of the reference (``n`` rows) and the current window (``m``
rows), and ``F^-1``, ``G^-1`` their quantile functions::

    W1 = integral |F(x) - G(x)| dx = integral_0^1 |F^-1(t) - G^-1(t)| dt
    W1_normalized = W1 / std(reference)        (population std, ddof=0)

``W1`` is in the feature's own unit (how far, on average, mass had to move); the normalized version is in
units of reference standard deviations, so one threshold reads the same across features (Evidently's default
numeric test for large samples uses the same normalization). A constant reference (std 0) gives ``inf`` when
the current window differs and ``0`` when it does not. Symmetric (the raw form). No bins, so no epsilon.
Direction: **higher is drift**.

Computation: both quantile functions are step functions with steps at ``i/n`` and ``k/m``, so the integral is
a sum over the merged step grid. The grid depends only on ``(n, m)``, so it is built once and every feature is
evaluated with one gather: ``sum_s dt_s * |r[i_s] - c[k_s]|`` over the sorted reference ``r`` and window
``c``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray, IntArray
from modelmonitor.stats.drift._samples import SortedSample, sample_pair


def wasserstein(reference: npt.ArrayLike | SortedSample, current: npt.ArrayLike | SortedSample) -> float:
    """Wasserstein-1 distance of one feature, as ``scipy.stats.wasserstein_distance`` (unit weights)."""
    return _single(wasserstein_columns(reference, current))


def wasserstein_normalized(reference: npt.ArrayLike | SortedSample, current: npt.ArrayLike | SortedSample) -> float:
    """Wasserstein-1 distance of one feature divided by the reference population standard deviation."""
    return _single(wasserstein_normalized_columns(reference, current))


def wasserstein_columns(reference: npt.ArrayLike | SortedSample, current: npt.ArrayLike | SortedSample) -> FloatArray:
    """Wasserstein-1 distance per feature of 2-D ``(rows, features)`` samples (or one 1-D feature)."""
    sorted_reference, sorted_current = sample_pair(reference, current)
    return _wasserstein_sorted(sorted_reference.columns, sorted_current.columns)


def wasserstein_normalized_columns(
    reference: npt.ArrayLike | SortedSample, current: npt.ArrayLike | SortedSample
) -> FloatArray:
    """Wasserstein-1 per feature divided by the reference population standard deviation of that feature."""
    sorted_reference, sorted_current = sample_pair(reference, current)
    distance = _wasserstein_sorted(sorted_reference.columns, sorted_current.columns)
    return normalize_by_std(distance, sorted_reference.std)


def normalize_by_std(distance: FloatArray, std: FloatArray) -> FloatArray:
    """``distance / std``, with a constant reference (std 0) giving 0 for no distance and ``inf``
    otherwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = distance / std
    return np.where(std > 0, ratio, np.where(distance > 0, np.inf, 0.0))


def _wasserstein_sorted(reference_sorted: FloatArray, current_sorted: FloatArray) -> FloatArray:
    n = int(reference_sorted.shape[1])
    m = int(current_sorted.shape[1])
    if n == m:
        # Equal sizes: the quantile functions step together, W1 is the mean gap between order statistics.
        return np.asarray(np.mean(np.abs(reference_sorted - current_sorted), axis=1), dtype=np.float64)
    reference_index, current_index, widths = _step_grid(n, m)
    gaps = np.abs(reference_sorted[:, reference_index] - current_sorted[:, current_index])
    return np.asarray(gaps @ widths, dtype=np.float64)


@lru_cache(maxsize=16)
def _step_grid(n: int, m: int) -> tuple[IntArray, IntArray, FloatArray]:
    """Merged quantile steps of sizes ``n`` and ``m``: the order statistic index on each side, and widths.

    Step positions are kept as integers over the common denominator ``n * m`` (``i/n = i*m/(n*m)``) so ties
    between the two grids are found exactly.
    """
    positions = np.union1d(np.arange(n + 1, dtype=np.int64) * m, np.arange(m + 1, dtype=np.int64) * n)
    starts = positions[:-1]
    widths = np.diff(positions).astype(np.float64) / (float(n) * float(m))
    return starts // m, starts // n, widths


def _single(values: FloatArray) -> float:
    if values.size != 1:
        raise ValueError(f"current: compares one feature, got {values.size}; use the *_columns() function")
    return float(values[0])


def wasserstein_windows(reference_sorted: FloatArray, windows: FloatArray) -> FloatArray:
    """Wasserstein-1 of each row of ``windows`` (``(count, m)``) against one sorted 1-D reference (``n``).

    Costs ``O(m log n)`` per window instead of ``O(n + m)``: on the common grid of width ``1/(n m)``, window
    value ``c_k`` covers reference order statistics ``i0..i1`` (partially at both ends, fully in between), and
    ``sum |r_i - c|`` over a run of the sorted reference comes from prefix sums split at ``c``. Agrees with
    :func:`wasserstein` to rounding (prefix sums add about ``1e-12`` relative error); used for calibration.
    """
    n = int(reference_sorted.size)
    _, m = windows.shape
    ordered = np.sort(windows, axis=1)
    prefix = np.concatenate([[0.0], np.cumsum(reference_sorted)])
    k = np.arange(m, dtype=np.int64)
    first = (k * n) // m
    last = ((k + 1) * n - 1) // m
    same = first == last
    first_weight = np.where(same, n, (first + 1) * m - k * n).astype(np.float64)
    last_weight = np.where(same, 0, (k + 1) * n - last * m).astype(np.float64)
    start = first + 1
    stop = np.maximum(last, start)
    split = np.clip(np.searchsorted(reference_sorted, ordered, side="left"), start, stop)
    below_sum = prefix[split] - prefix[start]
    above_sum = prefix[stop] - prefix[split]
    middle = ordered * (split - start) - below_sum + above_sum - ordered * (stop - split)
    total = (
        first_weight * np.abs(reference_sorted[first] - ordered)
        + last_weight * np.abs(reference_sorted[last] - ordered)
        + m * middle
    )
    return np.asarray(total.sum(axis=1) / (float(n) * float(m)), dtype=np.float64)
