"""Thresholds calibrated for the live window size, and the large-sample guard for p-value tests.

Why: a drift score of a window drawn from the reference distribution itself is not 0, and how far from 0 it
lands depends on the window size. A fixed threshold (Evidently's 0.1 on the normalized Wasserstein distance,
PSI's 0.1/0.25 folklore) fires on a large share of 100-row windows that did not drift at all, and hardly ever
on 100,000-row windows that did. So each threshold is the score that windows of the live size, drawn from the
reference, exceed only at the target false-alarm rate.

Procedure (:func:`calibrate_threshold`):

1. Draw ``n_boot`` windows of ``window_size`` rows from the reference, with replacement (a bootstrap of the
   null "live data follow the reference distribution"). For count-based methods a resampled window's bin
   counts are exactly ``Multinomial(window_size, reference bin proportions)``, so the counts are drawn
   directly; for sample-based methods rows are drawn.
2. Score each window against the full reference with the method.
3. Take the order statistic that leaves a share ``false_alarm_rate`` of the bootstrap scores beyond it, using
   rank ``ceil((1 - a) * (n_boot + 1))`` (higher-is-drift) or ``floor(a * (n_boot + 1))`` (lower-is-drift,
   p-values); with the strict comparison of ``DriftMethod.is_drift`` a fresh null window fires with probability
   at most ``a`` up to the bootstrap's sampling error (about ``sqrt(a (1 - a) / n_boot)``).

Large-sample guard (:func:`guarded_p_value_drift`): at large window sizes a p-value test calls any shift
"significant", however small (with 10^6 rows a 0.01 standard deviation shift gives p < 1e-9). A p-value test
therefore fires only if its p-value is below the threshold *and* an effect size reaches a floor:
the KS statistic ``D`` itself for ``ks`` and Cramer's V ``sqrt(X^2 / N)`` for ``chi_square``, both at least
``MIN_EFFECT_SIZE`` (0.1, "small" on Cohen's scale) by default.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray, as_float_array, require_finite, require_non_empty
from modelmonitor.stats.binning import bin_counts, bin_counts_columns, quantile_edges
from modelmonitor.stats.drift._counts import count_pair
from modelmonitor.stats.drift.ks import EXACT_P_VALUE_MAX_N, ks_p_value, ks_statistic_windows
from modelmonitor.stats.drift.registry import METHODS, DriftMethod
from modelmonitor.stats.drift.wasserstein import normalize_by_std, wasserstein_windows

__all__ = [
    "DEFAULT_BINS",
    "MIN_EFFECT_SIZE",
    "bootstrap_scores",
    "calibrate_threshold",
    "cramers_v",
    "guarded_p_value_drift",
    "score_windows",
    "threshold_from_scores",
]

#: Bins at reference quantiles used when no ``edges`` are given to a count-based method.
DEFAULT_BINS = 10

#: Smallest effect a p-value test must also show before it reports drift (see the module docstring).
MIN_EFFECT_SIZE = 0.1

# Windows are scored in chunks so a bootstrap of large windows stays within a few tens of MB.
_CHUNK_VALUES = 2_000_000


def calibrate_threshold(
    method: str,
    reference: np.ndarray,
    window_size: int,
    *,
    edges: np.ndarray | None = None,
    false_alarm_rate: float = 0.01,
    n_boot: int = 1000,
    rng: np.random.Generator,
) -> float:
    """The threshold of ``method`` that windows of ``window_size`` reference rows cross at ``false_alarm_rate``.

    Args:
        method: a name in ``METHODS`` (e.g. ``"psi"``, ``"ks"``).
        reference: 1-D finite reference values of one feature.
        window_size: rows per live window (the window the sidecar scores).
        edges: bin bounds for count-based methods (the profile's); default ``DEFAULT_BINS`` reference quantiles.
        false_alarm_rate: target share of null windows that fire, in ``(0, 0.5)``.
        n_boot: bootstrap windows; the rank rule needs ``n_boot >= 1 / false_alarm_rate``.
        rng: the random generator (seed it for reproducible profiles).

    Returns:
        The threshold; compare with ``METHODS[method].is_drift(score, threshold)``.
    """
    if not 0 < false_alarm_rate < 0.5:
        raise ValueError(f"false_alarm_rate: expected a rate in (0, 0.5), got {false_alarm_rate!r}")
    if n_boot * false_alarm_rate < 1:
        raise ValueError(
            f"n_boot: {n_boot} bootstrap windows cannot resolve a false-alarm rate of {false_alarm_rate}; "
            f"use at least {math.ceil(1 / false_alarm_rate)}"
        )
    scores = bootstrap_scores(method, reference, window_size, edges=edges, n_boot=n_boot, rng=rng)
    return threshold_from_scores(METHODS[method], scores, false_alarm_rate)


def threshold_from_scores(method: DriftMethod, scores: FloatArray, false_alarm_rate: float) -> float:
    """The bootstrap order statistic leaving ``false_alarm_rate`` of ``scores`` on the drift side."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    count = ordered.size
    if method.direction == "higher_is_drift":
        rank = min(math.ceil((1.0 - false_alarm_rate) * (count + 1)), count)
    else:
        rank = max(math.floor(false_alarm_rate * (count + 1)), 1)
    return float(ordered[rank - 1])


def bootstrap_scores(
    method: str,
    reference: np.ndarray,
    window_size: int,
    *,
    edges: np.ndarray | None = None,
    n_boot: int = 1000,
    rng: np.random.Generator,
) -> FloatArray:
    """Scores of ``n_boot`` windows of ``window_size`` rows resampled from ``reference``, against it."""
    if method not in METHODS:
        raise ValueError(f"method: unknown drift method {method!r}; known: {', '.join(sorted(METHODS))}")
    if isinstance(window_size, bool) or not isinstance(window_size, int | np.integer) or window_size < 1:
        raise ValueError(f"window_size: expected a positive integer, got {window_size!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot: expected a positive integer, got {n_boot!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng: expected a numpy.random.Generator (no global random state)")
    values = as_float_array(reference, "reference")
    require_non_empty(values, "reference")
    require_finite(values, "reference")
    spec = METHODS[method]
    if spec.input == "counts":
        bounds = quantile_edges(values, DEFAULT_BINS) if edges is None else np.asarray(edges, np.float64)
        reference_counts = bin_counts(values, bounds)
        probabilities = reference_counts / reference_counts.sum()
        windows = rng.multinomial(int(window_size), probabilities, size=int(n_boot))
        return spec.columns(np.broadcast_to(reference_counts, windows.shape), windows)
    return _sample_scores(method, np.sort(values), int(window_size), int(n_boot), rng)


def _sample_scores(
    method: str, reference_sorted: FloatArray, window_size: int, n_boot: int, rng: np.random.Generator
) -> FloatArray:
    n = reference_sorted.size
    scores = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, _CHUNK_VALUES // window_size)
    for start in range(0, n_boot, chunk):
        count = min(chunk, n_boot - start)
        windows = reference_sorted[rng.integers(0, n, size=(count, window_size))]
        scores[start : start + count] = _score_sample_windows(method, reference_sorted, windows)
    return scores


def score_windows(
    method: str, reference: np.ndarray, windows: np.ndarray, *, edges: np.ndarray | None = None
) -> FloatArray:
    """Score each row of ``windows`` (``(count, window_size)``, one feature) against ``reference``.

    The same scores :func:`calibrate_threshold` ranks, for live or simulated windows: count-based methods bin
    every window at ``edges`` (default: ``DEFAULT_BINS`` reference quantiles), sample-based methods compare
    each window with the sorted reference.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown drift method {method!r}; known: {', '.join(sorted(METHODS))}")
    values = as_float_array(reference, "reference")
    require_non_empty(values, "reference")
    require_finite(values, "reference")
    rows = as_float_array(windows, "windows", ndim=2)
    require_non_empty(rows, "windows", axis=1)
    require_finite(rows, "windows")
    spec = METHODS[method]
    if spec.input == "counts":
        bounds = quantile_edges(values, DEFAULT_BINS) if edges is None else np.asarray(edges, np.float64)
        reference_counts = bin_counts(values, bounds)
        counts = np.stack(bin_counts_columns(rows.T, [bounds] * rows.shape[0]))
        return spec.columns(np.broadcast_to(reference_counts, counts.shape), counts)
    return _score_sample_windows(method, np.sort(values), rows)


def _score_sample_windows(method: str, reference_sorted: FloatArray, windows: FloatArray) -> FloatArray:
    if method in ("ks", "ks_statistic"):
        scores = ks_statistic_windows(reference_sorted, windows)
        return _ks_p_values(reference_sorted, scores, windows.shape[1]) if method == "ks" else scores
    scores = wasserstein_windows(reference_sorted, windows)
    if method == "wasserstein_normalized":
        constant = reference_sorted[0] == reference_sorted[-1]
        return normalize_by_std(scores, np.full(scores.size, 0.0 if constant else reference_sorted.std()))
    return scores


def _ks_p_values(reference_sorted: FloatArray, statistics: FloatArray, window_size: int) -> FloatArray:
    n = reference_sorted.size
    if max(n, window_size) > EXACT_P_VALUE_MAX_N:
        return ks_p_value(statistics, n, window_size)
    # Exact p-values are a function of D alone for fixed sizes: compute each distinct D once through scipy.
    from scipy.stats import ks_2samp  # local: only this small-sample branch needs it

    distinct, inverse = np.unique(statistics, return_inverse=True)
    p_values = np.array([_exact_p_value(float(d), n, window_size, ks_2samp) for d in distinct])
    return np.asarray(p_values[inverse], dtype=np.float64)


def _exact_p_value(statistic: float, n: int, m: int, ks_2samp: object) -> float:
    """scipy's exact two-sided p-value for a KS statistic, via two step samples with that ``D``.

    ``D = |i/n - k/m|`` for some ``0 <= i <= n``, ``0 <= k <= m``: with ``i`` reference values at 0 and the
    rest at 1, and ``k`` window values at 0 and the rest at 1, both CDFs step once at 0 and ``sup|F - G|`` is
    exactly ``|i/n - k/m|``.
    """
    scaled = round(statistic * n * m)
    for k in range(m + 1):
        if (scaled + k * n) % m == 0 and (scaled + k * n) // m <= n:
            i = (scaled + k * n) // m
            break
    else:  # pragma: no cover - every KS statistic of sizes (n, m) has this form
        raise ValueError(f"statistic: {statistic} is not a KS statistic for sizes {n} and {m}")
    reference = np.concatenate([np.zeros(i), np.ones(n - i)])
    window = np.concatenate([np.zeros(k), np.ones(m - k)])
    return float(ks_2samp(reference, window, method="auto").pvalue)  # type: ignore[operator]


def cramers_v(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """Cramer's V of the 2 x k reference/current table, ``sqrt(X^2 / N)``: the chi-square effect size in [0, 1].

    ``N`` is all observations of both sides; for two rows ``min(rows, columns) - 1 = 1``.
    """
    from modelmonitor.stats.drift.chi_square import chi_square

    reference, current = count_pair(reference_counts, current_counts)
    statistic, _ = chi_square(reference, current)
    return float(math.sqrt(statistic / float(reference.sum() + current.sum())))


def guarded_p_value_drift(
    p_value: float, p_threshold: float, effect: float, *, min_effect: float = MIN_EFFECT_SIZE
) -> bool:
    """Drift only when the p-value is below its threshold *and* the effect size reaches ``min_effect``.

    ``effect`` is the KS statistic ``D`` for the KS test and Cramer's V (:func:`cramers_v`) for chi-square.
    Without the effect floor, large windows flag shifts too small to matter.
    """
    if not 0 <= min_effect <= 1:
        raise ValueError(f"min_effect: expected a value in [0, 1], got {min_effect!r}")
    return bool(p_value < p_threshold and effect >= min_effect)
