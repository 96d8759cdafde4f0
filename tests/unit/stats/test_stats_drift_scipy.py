"""Every drift method equals scipy (or the formula in docs/statistics.md) on the same data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from modelmonitor.stats.binning import bin_counts, quantile_edges
from modelmonitor.stats.drift import (
    METHODS,
    SortedReference,
    chi_square,
    chi_square_columns,
    hellinger,
    js_distance,
    js_distance_columns,
    ks,
    ks_columns,
    linf,
    psi,
    psi_columns,
    wasserstein,
    wasserstein_columns,
    wasserstein_normalized,
)
from modelmonitor.stats.drift.ks import ks_statistic_windows
from modelmonitor.stats.drift.wasserstein import wasserstein_windows

# (reference size, current size, rounding): rounding to 1 decimal makes ties within and across samples.
SAMPLE_CASES = [
    (100, 100, None),
    (1000, 100, None),
    (100, 1000, 1),
    (5000, 3000, 1),
    (20_000, 15_000, None),  # scipy switches to the asymptotic p-value above 10,000 rows
    (20_000, 500, 1),
    (37, 11, 0),
]


def _samples(n: int, m: int, decimals: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=n)
    current = rng.normal(0.15, 1.1, size=m)
    if decimals is not None:
        reference, current = np.round(reference, decimals), np.round(current, decimals)
    return reference, current


@pytest.mark.parametrize(("n", "m", "decimals"), SAMPLE_CASES)
def test_ks_statistic_and_p_value_equal_scipy(n: int, m: int, decimals: int | None) -> None:
    reference, current = _samples(n, m, decimals, seed=n + m)
    expected = stats.ks_2samp(reference, current)
    statistic, p_value = ks(reference, current)
    assert statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("n", "m", "decimals"), SAMPLE_CASES)
def test_wasserstein_equals_scipy_within_1e_9(n: int, m: int, decimals: int | None) -> None:
    reference, current = _samples(n, m, decimals, seed=n * m)
    expected = stats.wasserstein_distance(reference, current)
    assert abs(wasserstein(reference, current) - expected) < 1e-9
    assert abs(wasserstein_normalized(reference, current) - expected / reference.std()) < 1e-9
    # The bootstrap path (prefix sums) agrees too.
    assert abs(wasserstein_windows(np.sort(reference), current[None, :])[0] - expected) < 1e-9
    assert ks_statistic_windows(np.sort(reference), current[None, :])[0] == pytest.approx(
        stats.ks_2samp(reference, current).statistic, abs=1e-12
    )


def test_all_features_at_once_equal_a_per_feature_scipy_loop() -> None:
    rng = np.random.default_rng(11)
    reference = rng.normal(size=(12_000, 6))
    current = rng.normal(0.05, 1.0, size=(11_000, 6))
    current[:, 2] = np.round(current[:, 2], 1)  # ties with nothing in the reference, within the window
    sorted_reference = SortedReference.from_samples(reference)
    statistic, p_value = ks_columns(sorted_reference, current)
    distance = wasserstein_columns(sorted_reference, current)
    for j in range(6):
        expected = stats.ks_2samp(reference[:, j], current[:, j])
        assert statistic[j] == pytest.approx(expected.statistic, abs=1e-12)
        assert p_value[j] == pytest.approx(expected.pvalue, rel=1e-9)
        assert abs(distance[j] - stats.wasserstein_distance(reference[:, j], current[:, j])) < 1e-9


def _counts(seed: int, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=4000)
    edges = quantile_edges(reference, bins)
    return bin_counts(reference, edges), bin_counts(rng.normal(0.3, 1.0, size=700), edges)


@pytest.mark.parametrize("base", [2.0, math.e, 10.0])
def test_jensen_shannon_equals_scipy_with_the_same_base(base: float) -> None:
    reference, current = _counts(3)
    assert js_distance(reference, current, base=base) == pytest.approx(
        jensenshannon(reference, current, base=base), abs=1e-12
    )


def test_jensen_shannon_default_base_is_2() -> None:
    reference, current = np.array([10, 0]), np.array([0, 5])
    assert js_distance(reference, current) == pytest.approx(1.0)  # disjoint supports: the maximum
    assert js_distance(reference, current) == pytest.approx(jensenshannon(reference, current, base=2))


def test_chi_square_equals_scipy_chi2_contingency_without_yates_correction() -> None:
    reference, current = _counts(4)
    current[3] = 0  # a bin seen in the reference only
    expected = stats.chi2_contingency(np.stack([reference, current]), correction=False)
    statistic, p_value = chi_square(reference, current)
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_chi_square_drops_bins_empty_on_both_sides() -> None:
    reference, current = np.array([30, 0, 50, 20]), np.array([10, 0, 25, 5])
    expected = stats.chi2_contingency(np.array([[30, 50, 20], [10, 25, 5]]), correction=False)
    assert chi_square(reference, current) == pytest.approx((expected.statistic, expected.pvalue))


def test_psi_equals_the_documented_formula_and_worked_example() -> None:
    # docs/statistics.md: p = (0.5, 0.5), q = (0.25, 0.75): PSI = 0.25 ln 2 + 0.25 ln 1.5 = 0.274653...
    assert psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5), rel=1e-12)
    reference, current = _counts(5)
    current[0] = 0  # an empty bin: floored at 1e-4 as documented
    p = np.maximum(reference / reference.sum(), 1e-4)
    q = np.maximum(current / current.sum(), 1e-4)
    assert psi(reference, current) == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-12)


def test_js_equals_the_documented_formula() -> None:
    reference, current = _counts(6)
    p, q = reference / reference.sum(), current / current.sum()
    mid = (p + q) / 2
    divergence = 0.5 * np.sum(p * np.log2(p / mid)) + 0.5 * np.sum(q * np.log2(q / mid))
    assert js_distance(reference, current) == pytest.approx(math.sqrt(divergence), rel=1e-12)


def test_hellinger_and_linf_equal_their_formulas() -> None:
    reference, current = _counts(8)
    p, q = reference / reference.sum(), current / current.sum()
    assert hellinger(reference, current) == pytest.approx(math.sqrt(1 - np.sum(np.sqrt(p * q))), rel=1e-9)
    assert linf(reference, current) == pytest.approx(float(np.max(np.abs(p - q))), rel=1e-12)


def test_column_forms_score_each_feature_like_the_single_form() -> None:
    pairs = [_counts(seed) for seed in range(5)]
    reference = np.stack([r for r, _ in pairs])
    current = np.stack([c for _, c in pairs])
    psis = psi_columns(reference, current)
    jss = js_distance_columns(reference, current)
    chi = chi_square_columns(reference, current)
    for j, (r, c) in enumerate(pairs):
        assert psis[j] == pytest.approx(psi(r, c))  # type: ignore[index]
        assert jss[j] == pytest.approx(js_distance(r, c))  # type: ignore[index]
        assert (chi[0][j], chi[1][j]) == pytest.approx(chi_square(r, c))


def test_registry_states_direction_and_input_of_every_method() -> None:
    assert METHODS["psi"].direction == "higher_is_drift"
    assert METHODS["ks"].direction == "lower_is_drift"  # a p-value
    assert METHODS["chi_square"].direction == "lower_is_drift"
    assert {name for name, m in METHODS.items() if m.input == "counts"} == {
        "psi",
        "jensen_shannon",
        "hellinger",
        "linf",
        "chi_square",
    }
    assert METHODS["ks"].is_drift(0.001, 0.01) and not METHODS["ks"].is_drift(0.5, 0.01)
    assert METHODS["psi"].is_drift(0.3, 0.2) and not METHODS["psi"].is_drift(0.1, 0.2)
    reference, current = _samples(500, 200, None, seed=1)
    assert METHODS["ks"].function(reference, current) == pytest.approx(stats.ks_2samp(reference, current).pvalue)


@pytest.mark.parametrize(
    ("reference", "current", "message"),
    [
        ([1, 2, 3], [1, 2], "current_counts: shape"),
        ([1, -2, 3], [1, 2, 3], "reference_counts: counts must be >= 0"),
        ([0, 0, 0], [1, 2, 3], "reference_counts: all counts are zero"),
        ([1, 2, np.nan], [1, 2, 3], "reference_counts: counts must be finite"),
    ],
)
def test_bad_counts_are_refused_with_the_argument_named(
    reference: list[float], current: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        psi(reference, current)


def test_bad_samples_are_refused_with_the_argument_named() -> None:
    with pytest.raises(ValueError, match="current: 1 value"):
        ks(np.arange(10.0), np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="current: 3 feature column"):
        wasserstein_columns(np.ones((10, 2)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="reference: is empty"):
        wasserstein(np.array([]), np.array([1.0]))
