"""Two-sample Kolmogorov-Smirnov test.

Formula, with ``F`` the empirical CDF of the reference (``n`` rows) and ``G`` that of the current window
(``m`` rows)::

    D = sup_x |F(x) - G(x)|

in ``[0, 1]``. No bins, so no epsilon. Symmetric. Direction: **D is high under drift; the p-value is low under
drift.** At large ``n`` and ``m`` any trivial shift gives a tiny p-value: see
``modelmonitor.stats.calibration`` for the effect-size guard.

P-values. ``p_value="scipy"`` (the default) returns exactly ``scipy.stats.ks_2samp(method="auto")``: the exact
null distribution when ``max(n, m) <= 10_000``, otherwise ``kstwo.sf(D, round(n*m/(n+m)))``. That last
function costs up to ~0.1 s per feature at ``n*m/(n+m)`` around 50,000, so ``p_value="fast"`` offers
Stephens' approximation ``kstwobign.sf(D * (sqrt(N) + 0.12 + 0.11/sqrt(N)))``, ``N = n*m/(n+m)``: within 1%
(relative) of scipy's value at p >= 0.001 for ``N >= 1000``, within 2% at ``N = 90``.

Computation (exact, ties included): with the window sorted (``c_0 <= ... <= c_(m-1)``) and the reference
sorted, ``F`` and ``G`` are step functions, so ``G - F`` is largest at a window point and smallest just below
one::

    D = max( max_k (k+1)/m - #{r <= c_k}/n ,  max_k #{r < c_k}/n - k/m ,  0 )

Taking every ``k`` (not only the last/first of a run of tied values) is safe: the others give smaller values.
The counts come from one ``searchsorted`` of the sorted window into the sorted reference (a second one only
when a window value equals a reference value), so the cost beyond sorting the window is one linear pass.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray
from modelmonitor.stats.drift._samples import SortedSample, sample_pair


def _scipy_stats() -> Any:
    """scipy.stats, imported on first use: it costs ~60 MiB that the operator (count-based drift) never needs."""
    from scipy import stats

    return stats


#: scipy's ``ks_2samp(method="auto")`` uses the exact null distribution up to this sample size.
EXACT_P_VALUE_MAX_N = 10_000

PValueMethod = Literal["scipy", "fast"]


def ks(
    reference: npt.ArrayLike | SortedSample, current: npt.ArrayLike | SortedSample, *, p_value: PValueMethod = "scipy"
) -> tuple[float, float]:
    """KS statistic and p-value of one feature: ``(D, p_value)``, as ``scipy.stats.ks_2samp``."""
    statistic, p = ks_columns(reference, current, p_value=p_value)
    if statistic.size != 1:
        raise ValueError(f"current: ks() compares one feature, got {statistic.size}; use ks_columns()")
    return float(statistic[0]), float(p[0])


def ks_columns(
    reference: npt.ArrayLike | SortedSample,
    current: npt.ArrayLike | SortedSample,
    *,
    p_value: PValueMethod = "scipy",
) -> tuple[FloatArray, FloatArray]:
    """KS statistic and p-value per feature of 2-D ``(rows, features)`` samples (or one 1-D feature).

    Either side may be a :class:`SortedSample` (sorted once, e.g. the profile's reference).
    """
    if p_value not in ("scipy", "fast"):
        raise ValueError(f"p_value: expected 'scipy' or 'fast', got {p_value!r}")
    sorted_reference, sorted_current = sample_pair(reference, current)
    statistic = ks_statistic_sorted(sorted_reference.columns, sorted_current.columns)
    n, m = sorted_reference.n_rows, sorted_current.n_rows
    if p_value == "fast":
        return statistic, ks_p_value_fast(statistic, n, m)
    if max(n, m) > EXACT_P_VALUE_MAX_N:
        return statistic, ks_p_value(statistic, n, m)
    # Small samples: scipy's exact null distribution has no public entry point other than ks_2samp itself,
    # which is cheap at these sizes.
    exact = [
        _scipy_stats().ks_2samp(sorted_reference.columns[j], sorted_current.columns[j], method="auto").pvalue
        for j in range(sorted_reference.n_features)
    ]
    return statistic, np.asarray(exact, dtype=np.float64)


def ks_statistic_sorted(reference_sorted: FloatArray, current_sorted: FloatArray) -> FloatArray:
    """Exact KS statistic per feature of ``(features, rows)`` arrays whose rows are sorted."""
    features, m = current_sorted.shape
    n = int(reference_sorted.shape[1])
    # Work in integers over the common denominator n*m: exact, and fewer temporaries than float division.
    step_up = np.arange(1, m + 1, dtype=np.int64) * n  # (k+1) * n
    step_down = np.arange(m, dtype=np.int64) * n  # k * n
    scaled = np.empty(features, dtype=np.int64)
    for j in range(features):
        window = current_sorted[j]
        reference = reference_sorted[j]
        below = np.searchsorted(reference, window, side="left")
        # Equal values on both sides need #{r <= c} as well; without ties it equals #{r < c}.
        tied = reference[np.minimum(below, n - 1)] == window
        at_or_below = np.searchsorted(reference, window, side="right") if tied.any() else below
        upper = np.max(step_up - at_or_below * m)
        lower = np.max(below * m - step_down)
        scaled[j] = max(upper, lower, 0)
    return np.minimum(scaled / (float(n) * float(m)), 1.0)


def ks_p_value(statistic: FloatArray, n: int, m: int) -> FloatArray:
    """Smirnov's asymptotic two-sided p-value ``kstwo.sf(D, round(n*m/(n+m)))``, vectorized over
    ``statistic``.

    This is what ``ks_2samp(method="auto")`` returns when ``max(n, m) > 10_000``; :func:`ks_columns` uses
    scipy's exact distribution below that size.
    """
    d = np.asarray(statistic, dtype=np.float64)
    effective_n = np.round(n * m / (n + m))
    # D takes few distinct values (multiples of 1/lcm(n, m)); kstwo.sf can cost 0.1 s per value.
    distinct, inverse = np.unique(d, return_inverse=True)
    p_value = np.asarray(_scipy_stats().kstwo.sf(distinct, effective_n), dtype=np.float64)[inverse]
    return np.clip(p_value.reshape(d.shape), 0.0, 1.0)


def ks_p_value_fast(statistic: FloatArray, n: int, m: int) -> FloatArray:
    """Stephens' approximation of the two-sided p-value, vectorized: see the module docstring for accuracy."""
    effective_n = n * m / (n + m)
    root = np.sqrt(effective_n)
    scaled = np.asarray(statistic, dtype=np.float64) * (root + 0.12 + 0.11 / root)
    return np.clip(np.asarray(_scipy_stats().kstwobign.sf(scaled), dtype=np.float64), 0.0, 1.0)


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
