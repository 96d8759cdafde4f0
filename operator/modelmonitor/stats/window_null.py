"""The null distribution of a count-based drift score for the number of rows actually in the window.

Why: a threshold calibrated for one window size (the sidecar's 1,000 rows) is wrong for a policy window that
holds 50 rows (it fires on most undrifted windows) or 500,000 (it misses real drift). Under "no drift" the
window's bin counts over the reference bins are ``Multinomial(n, p)``, with ``p`` the reference proportions the
sidecar exports and ``n`` the rows counted in the window. So the score's null distribution, and from it a
p-value and a threshold for a stated false-alarm rate, follow from ``(method, p, n)`` alone:

- **Large windows, analytically.** With every expected count ``n p_i`` at least ``MIN_EXPECTED_COUNT``, the
  methods are second-order equivalent to Pearson's ``X^2 = n sum (q_i - p_i)^2 / p_i``, which is
  ``chi^2(k - 1)`` under the null: ``n PSI``, ``8 n H^2`` (Hellinger) and ``8 ln(2) n JS^2`` (Jensen-Shannon
  distance, log base 2) all tend to ``X^2``. ``linf`` (the largest ``|q_i - p_i|``) uses the normal
  approximation of each bin with a union bound over the bins (slightly conservative).
- **Small windows, by simulation.** Below that, empty bins (and PSI's floor for them) make the asymptotics
  wrong by orders of magnitude: ``NULL_DRAWS`` multinomial windows of ``n`` rows are scored, with a seed derived
  from ``(method, p, n)`` so the answer is reproducible, and cached (a model's ``p`` is fixed and small windows
  take few distinct sizes). Rates too small for the simulation to resolve (under ``TAIL_ANCHOR /
  NULL_DRAWS``, 1 in 1,000) use the analytic tail, stretched on the score axis so that it meets the simulated
  one at that depth: approximate, and checked by simulation at 1 in 10,000.

`window_test` gives both the p-value of an observed window and the threshold for a false-alarm rate at its size.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray
from modelmonitor.stats.drift.registry import METHODS

__all__ = [
    "MIN_EXPECTED_COUNT",
    "NULL_DRAWS",
    "TAIL_ANCHOR",
    "WINDOW_METHODS",
    "WindowTest",
    "benjamini_hochberg",
    "probit_of_p_value",
    "window_test",
    "window_tests",
]

#: Count-based methods whose null distribution at the window's size this module knows.
WINDOW_METHODS = ("psi", "jensen_shannon", "hellinger", "linf")

#: Smallest expected count in every bin for the analytic (chi-square / normal) null; below it, simulation.
#: Checked by tests/unit/stats/test_window_null.py: at 100 the analytic tail is within 10% of the stated
#: rate down to 1 in 1,000 (at 20 it fires up to 1.7 times too often).
MIN_EXPECTED_COUNT = 100.0

#: Simulated null windows for small windows: 20 exceedances at a rate of 1 in 1,000 (about 30 ms each).
NULL_DRAWS = 20_000

#: Below this many simulated windows beyond a score (rates under 1 in 1,000), the simulation cannot resolve the
#: tail: thresholds and p-values there come from the analytic tail stretched to meet the simulated one.
TAIL_ANCHOR = 20

# Reference proportions below this are treated as empty (the sidecar exports ratios rounded to floats).
_EMPTY_SHARE = 1e-12


@dataclass(frozen=True)
class WindowTest:
    """The drift test of one window of ``rows`` rows against the reference proportions.

    ``threshold``: the score beyond which (strictly) a drift-free window of this size lands at most at
    ``false_alarm_rate``; ``p_value``: the share of drift-free windows of this size scoring at least as high as
    the observed one; ``method``/``rows``/``analytic`` say how they were obtained.
    """

    method: str
    rows: int
    score: float
    threshold: float
    p_value: float
    false_alarm_rate: float
    analytic: bool

    @property
    def drifted(self) -> bool:
        """Whether the score is beyond the threshold."""
        return self.score > self.threshold


def window_test(
    method: str,
    reference_shares: npt.ArrayLike,
    current_counts: npt.ArrayLike,
    *,
    false_alarm_rate: float,
) -> WindowTest:
    """Score ``current_counts`` against ``reference_shares`` with ``method``, and judge it at its own size.

    ``current_counts`` are per-bin counts (rounded to whole rows: Prometheus' ``increase()`` extrapolates);
    ``reference_shares`` the reference proportions over the same bins (any positive scale). Raises ValueError
    naming the argument for an unknown method, mismatched bins, a window without rows or a bad rate.
    """
    counts = np.asarray(current_counts, dtype=np.float64)
    if counts.ndim != 1:
        raise ValueError(f"current_counts: expected one window's counts (1-D), got shape {counts.shape}")
    return window_tests(method, reference_shares, counts[np.newaxis, :], false_alarm_rate=false_alarm_rate)[0]


def window_tests(
    method: str,
    reference_shares: npt.ArrayLike,
    current_counts: npt.ArrayLike,
    *,
    false_alarm_rate: float,
) -> list[WindowTest]:
    """`window_test` for many windows of one feature at once (``current_counts`` of shape ``(windows, bins)``):
    the scores in one vectorized call, each window judged at its own number of rows."""
    if method not in WINDOW_METHODS:
        raise ValueError(f"method: {method!r} has no window-size null distribution; expected one of {WINDOW_METHODS}")
    if not 0 < false_alarm_rate < 0.5:
        raise ValueError(f"false_alarm_rate: expected a rate in (0, 0.5), got {false_alarm_rate!r}")
    shares = _shares(reference_shares)
    counts = np.rint(np.asarray(current_counts, dtype=np.float64))
    if counts.ndim != 2 or counts.shape[1] != shares.shape[0]:
        raise ValueError(f"current_counts: {counts.shape[-1]} bins, but the reference has {shares.shape[0]}")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("current_counts: counts must be finite and >= 0")
    all_rows = counts.sum(axis=1).astype(np.int64)
    if (all_rows < 1).any():
        raise ValueError("current_counts: no rows in the window")
    scores = np.atleast_1d(METHODS[method].columns(np.broadcast_to(shares, counts.shape), counts))
    tests = []
    for score, rows in zip(scores.tolist(), all_rows.tolist(), strict=True):
        if _analytic(shares, rows):
            threshold = _analytic_threshold(method, shares, rows, false_alarm_rate)
            p_value = _analytic_p_value(method, shares, rows, score)
            tests.append(WindowTest(method, rows, score, threshold, p_value, false_alarm_rate, True))
            continue
        null = _null_scores(method, shares.tobytes(), rows)
        exceed = null.size - int(np.searchsorted(null, score, side="left"))
        scale = _tail_scale(method, shares.tobytes(), rows)
        if exceed < TAIL_ANCHOR:
            p_value = _analytic_p_value(method, shares, rows, score / scale)
        else:
            p_value = (1 + exceed) / (1 + null.size)
        if false_alarm_rate * null.size < TAIL_ANCHOR:
            threshold = scale * _analytic_threshold(method, shares, rows, false_alarm_rate)
        else:
            threshold = _simulated_threshold(null, false_alarm_rate)
        tests.append(WindowTest(method, rows, score, threshold, p_value, false_alarm_rate, False))
    return tests


def benjamini_hochberg(p_values: npt.ArrayLike, rate: float) -> npt.NDArray[np.bool_]:
    """Which hypotheses Benjamini-Hochberg rejects at false-discovery rate ``rate`` (step-up, independent or
    positively dependent tests): the ``r`` smallest p-values, ``r`` the largest rank with ``p_(r) <= r rate / m``."""
    values = np.asarray(p_values, dtype=np.float64)
    rejected = np.zeros(values.shape, dtype=bool)
    if values.size == 0:
        return rejected
    order = np.argsort(values, kind="stable")
    limits = rate * np.arange(1, values.size + 1) / values.size
    passing = np.nonzero(values[order] <= limits)[0]
    if passing.size:
        rejected[order[: passing[-1] + 1]] = True
    return rejected


def _shares(reference_shares: npt.ArrayLike) -> FloatArray:
    shares = np.asarray(reference_shares, dtype=np.float64)
    if shares.ndim != 1 or shares.size < 2:
        raise ValueError("reference_shares: expected a 1-D vector over at least two bins")
    if not np.isfinite(shares).all() or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError("reference_shares: expected finite, non-negative shares with a positive total")
    shares = shares / shares.sum()
    return np.asarray(np.where(shares < _EMPTY_SHARE, 0.0, shares), dtype=np.float64)


def _analytic(shares: FloatArray, rows: int) -> bool:
    # A bin the reference never saw has no normal approximation (no variance under the null): simulate.
    return bool(shares.min() > 0 and rows * shares.min() >= MIN_EXPECTED_COUNT)


def _analytic_threshold(method: str, shares: FloatArray, rows: int, rate: float) -> float:
    """The threshold from the chi-square (or, for linf, the normal) approximation."""
    if method == "linf":
        return _linf_threshold(shares.tobytes(), rows, rate)
    critical = _chi_square_critical(rate, shares.size - 1)
    if method == "psi":
        return critical / rows
    return math.sqrt(critical / _pearson_scale(method, rows))


def _analytic_p_value(method: str, shares: FloatArray, rows: int, score: float) -> float:
    """The p-value from the same approximation (scipy.special's chi-square tail directly: this runs for every
    feature of every model each cycle, and scipy.stats' distribution objects cost ~50 times more per call)."""
    if method == "linf":
        return _linf_tail(np.sqrt(shares * (1.0 - shares) / rows), score)
    # scipy.special is imported where it is used: it costs ~28 MiB that an operator without drift policies
    # never needs.
    from scipy import special

    degrees = shares.size - 1
    if method == "psi":
        return float(special.chdtrc(degrees, rows * score))
    return float(special.chdtrc(degrees, _pearson_scale(method, rows) * score * score))


def _pearson_scale(method: str, rows: int) -> float:
    """``c`` with ``c * score^2`` equivalent to Pearson's X^2: 8 n for Hellinger, 8 ln(2) n for Jensen-Shannon."""
    return 8.0 * rows * (math.log(2.0) if method == "jensen_shannon" else 1.0)


@lru_cache(maxsize=1024)
def _chi_square_critical(rate: float, degrees: int) -> float:
    """The chi-square(``degrees``) value exceeded with probability ``rate``."""
    from scipy import special

    return float(special.chdtri(degrees, rate))


def _linf_tail(sigma: FloatArray, deviation: float) -> float:
    """The union bound on P(max_i |q_i - p_i| >= deviation) with each bin's normal approximation."""
    spread = sigma[sigma > 0]  # a bin the reference never saw cannot deviate under the null
    from scipy import special

    return float(min(1.0, np.sum(2.0 * special.ndtr(-deviation / spread))))


@lru_cache(maxsize=1024)
def _linf_threshold(shares_bytes: bytes, rows: int, rate: float) -> float:
    """The deviation whose union-bound tail is ``rate`` (the bound decreases with it: a root in (0, 40 sigma))."""
    shares = np.frombuffer(shares_bytes, dtype=np.float64)
    sigma = np.sqrt(shares * (1.0 - shares) / rows)
    low, high = 0.0, float(sigma.max()) * 40.0
    for _ in range(60):  # bisection (scipy.optimize is not loaded by the operator for one root)
        middle = (low + high) / 2.0
        if _linf_tail(sigma, middle) > rate:
            low = middle
        else:
            high = middle
    return high


@lru_cache(maxsize=128)
def _null_scores(method: str, shares_bytes: bytes, rows: int) -> FloatArray:
    """Sorted scores of ``NULL_DRAWS`` drift-free windows of ``rows`` rows (160 kB per entry: 20 MB at most).

    float64 on purpose: discrete scores (linf, few rows) tie exactly, and a threshold rounded to float32 would
    count the ties at it as alarms."""
    shares = np.frombuffer(shares_bytes, dtype=np.float64)
    seed = [zlib.crc32(shares_bytes), zlib.crc32(method.encode()), rows]
    draws = np.random.default_rng(seed).multinomial(rows, shares, size=NULL_DRAWS)
    scores = METHODS[method].columns(np.broadcast_to(shares, draws.shape), draws)
    return np.sort(np.asarray(scores, dtype=np.float64))


@lru_cache(maxsize=1024)
def _tail_scale(method: str, shares_bytes: bytes, rows: int) -> float:
    """How much wider the simulated null is than the analytic one at the deepest point the simulation resolves
    (``TAIL_ANCHOR`` windows beyond it): the analytic tail, stretched by this factor on the score axis, continues
    the simulated one."""
    null = _null_scores(method, shares_bytes, rows)
    shares = np.frombuffer(shares_bytes, dtype=np.float64)
    anchor = float(null[null.size - TAIL_ANCHOR - 1])
    analytic = _analytic_threshold(method, shares, rows, TAIL_ANCHOR / null.size)
    return anchor / analytic if anchor > 0 and analytic > 0 else 1.0


def _simulated_threshold(null: FloatArray, rate: float) -> float:
    """The smallest simulated score that at most ``rate`` of the null exceeds (strictly)."""
    allowed = math.floor(rate * null.size)
    index = max(null.size - allowed - 1, 0)
    return float(null[index])


def probit_of_p_value(p_value: float) -> float:
    """The standard normal score ``z`` with upper tail ``p_value`` (``N(0, 1)`` when the null holds)."""
    from scipy import special

    return float(-special.ndtri(min(max(p_value, 1e-300), 1.0 - 1e-16)))
