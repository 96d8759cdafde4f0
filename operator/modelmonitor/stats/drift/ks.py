"""Two-sample Kolmogorov-Smirnov test.

Formula, with ``F`` the empirical CDF of the reference (``n`` rows) and ``G`` that of the current window
(``m`` rows)::

    D = sup_x |F(x) - G(x)|

in ``[0, 1]``. The p-value follows ``scipy.stats.ks_2samp(method="auto")`` exactly: the exact null
distribution when ``max(n, m) <= 10_000``, otherwise Smirnov's asymptotic distribution ``kstwo.sf(D,
round(n*m/(n+m)))``. No bins, so no epsilon. Symmetric. Direction: **D is high under drift; the p-value is low
under drift.** At large ``n`` and ``m`` any trivial shift gives a tiny p-value: see
``modelmonitor.stats.calibration``.

How ``D`` is computed without a merge sort (exact, ties included). ``F - G`` is a step function, so its
largest value is reached at a reference point and its smallest just below one. With the reference sorted
(``r_0 <= ... <= r_(n-1)``) and ``CL[i] = #{x in current : x <= r_i}``, ``CR[i] = #{x in current : x <
r_i}``::

    D = max( max_i (i+1)/n - CL[i]/m ,  max_i CR[i]/m - i/n ,  0 )

Taking every ``i`` (not only the last/first of a run of tied reference values) is safe: the other indices give
smaller values. ``CL`` and ``CR`` come from binning the *unsorted* current window into the sorted reference
(``searchsorted`` + ``bincount`` + ``cumsum``), so a window is never sorted. For windows much smaller than the
reference, sorting the window and searching it into the reference is cheaper and is used instead (same formula
with the roles of the samples swapped).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats

from modelmonitor.stats._checks import FloatArray
from modelmonitor.stats.drift._samples import SortedReference, sample_pair

#: scipy's ``ks_2samp(method="auto")`` uses the exact null distribution up to this sample size.
EXACT_P_VALUE_MAX_N = 10_000


def ks(reference: npt.ArrayLike | SortedReference, current: npt.ArrayLike) -> tuple[float, float]:
    """KS statistic and p-value of one feature: ``(D, p_value)``, as ``scipy.stats.ks_2samp``."""
    statistic, p_value = ks_columns(reference, current)
    if statistic.size != 1:
        raise ValueError(f"current: ks() compares one feature, got {statistic.size}; use ks_columns()")
    return float(statistic[0]), float(p_value[0])


def ks_columns(reference: npt.ArrayLike | SortedReference, current: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """KS statistic and p-value per feature of 2-D ``(rows, features)`` samples (or one 1-D feature)."""
    sorted_reference, current_columns = sample_pair(reference, current)
    statistic = ks_statistic_columns(sorted_reference, current_columns)
    n, m = sorted_reference.n_rows, int(current_columns.shape[1])
    if max(n, m) > EXACT_P_VALUE_MAX_N:
        return statistic, ks_p_value(statistic, n, m)
    # Small samples: scipy's exact null distribution has no public entry point other than ks_2samp itself,
    # which is cheap at these sizes.
    p_value = np.array(
        [
            scipy_stats.ks_2samp(sorted_reference.columns[j], current_columns[j], method="auto").pvalue
            for j in range(sorted_reference.n_features)
        ],
        dtype=np.float64,
    )
    return statistic, p_value


def ks_statistic_columns(reference: SortedReference, current_columns: FloatArray) -> FloatArray:
    """Exact KS statistic per feature; ``current_columns`` is ``(features, rows)``, unsorted."""
    n = reference.n_rows
    m = int(current_columns.shape[1])
    statistic = np.empty(reference.n_features, dtype=np.float64)
    if m * 8 < n:
        # Small window: sort it (m log m) and search it into the reference (m log n).
        window = np.sort(current_columns, axis=1)
        for j in range(reference.n_features):
            statistic[j] = _sup_distance_sorted(window[j], reference.columns[j])
        return statistic
    for j in range(reference.n_features):
        statistic[j] = _sup_distance_sorted(reference.columns[j], None, current_columns[j])
    return statistic


def _sup_distance_sorted(
    sorted_sample: FloatArray, sorted_other: FloatArray | None, unsorted_other: FloatArray | None = None
) -> float:
    """``sup |F - G|`` with ``F`` from ``sorted_sample``; the other sample is given sorted or unsorted."""
    n = sorted_sample.size
    ranks = np.arange(n, dtype=np.float64)
    if sorted_other is not None:
        m = sorted_other.size
        at_or_below = np.searchsorted(sorted_other, sorted_sample, side="right")
        below = np.searchsorted(sorted_other, sorted_sample, side="left")
    else:
        assert unsorted_other is not None
        m = unsorted_other.size
        # Bin the other sample into the sorted one: bin i holds x with r_(i-1) < x <= r_i (side="left").
        index = np.searchsorted(sorted_sample, unsorted_other, side="left")
        at_or_below = np.cumsum(np.bincount(index, minlength=n + 1)[:n])
        # x < r_i needs the ties counted on the other side; skip the second search when there is none.
        clipped = np.minimum(index, n - 1)
        ties = sorted_sample[clipped] == unsorted_other
        if ties.any():
            index_right = np.searchsorted(sorted_sample, unsorted_other, side="right")
            below = np.cumsum(np.bincount(index_right, minlength=n + 1)[:n])
        else:
            below = at_or_below
    upper = np.max((ranks + 1.0) / n - at_or_below / m)
    lower = np.max(below / m - ranks / n)
    return float(min(max(upper, lower, 0.0), 1.0))


def ks_p_value(statistic: FloatArray, n: int, m: int) -> FloatArray:
    """Smirnov's asymptotic two-sided p-value ``kstwo.sf(D, round(n*m/(n+m)))``, vectorized over
    ``statistic``.

    This is what ``ks_2samp(method="auto")`` returns when ``max(n, m) > 10_000``; :func:`ks_columns` uses
    scipy's exact distribution below that size.
    """
    d = np.asarray(statistic, dtype=np.float64)
    effective_n = np.round(n * m / (n + m))
    # D takes few distinct values (multiples of 1/lcm(n, m)); kstwo.sf costs about a millisecond per value.
    distinct, inverse = np.unique(d, return_inverse=True)
    p_value = np.asarray(scipy_stats.kstwo.sf(distinct, effective_n), dtype=np.float64)[inverse]
    return np.clip(p_value.reshape(d.shape), 0.0, 1.0)


def ks_statistic_windows(reference_sorted: FloatArray, windows: FloatArray) -> FloatArray:
    """Exact KS statistic of each row of ``windows`` (``(count, m)``) against one sorted 1-D reference.

    All windows are searched into the reference in one call, so scoring a thousand bootstrap windows costs
    about as much as one search of all their values.
    """
    n = int(reference_sorted.size)
    count, m = windows.shape
    ordered = np.sort(windows, axis=1)
    at_or_below = np.searchsorted(reference_sorted, ordered.ravel(), side="right").reshape(count, m)
    below = np.searchsorted(reference_sorted, ordered.ravel(), side="left").reshape(count, m)
    ranks = np.arange(m, dtype=np.float64)
    upper = np.max((ranks + 1.0) / m - at_or_below / n, axis=1)
    lower = np.max(below / n - ranks / m, axis=1)
    return np.asarray(np.clip(np.maximum(upper, lower), 0.0, 1.0), dtype=np.float64)
