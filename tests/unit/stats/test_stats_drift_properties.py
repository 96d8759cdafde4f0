"""Invariants of the drift methods over generated data (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from modelmonitor.stats.drift import (
    chi_square,
    hellinger,
    js_distance,
    ks,
    linf,
    psi,
    wasserstein,
    wasserstein_normalized,
)

FAST = settings(max_examples=60, deadline=None)


@st.composite
def count_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    bins = draw(st.integers(min_value=1, max_value=12))
    counts = st.lists(st.integers(min_value=0, max_value=500), min_size=bins, max_size=bins).filter(
        lambda c: sum(c) > 0
    )
    return np.array(draw(counts)), np.array(draw(counts))


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
samples = arrays(np.float64, st.integers(min_value=1, max_value=60), elements=finite)


@FAST
@given(count_pairs())
def test_count_distances_are_bounded_and_symmetric(pair: tuple[np.ndarray, np.ndarray]) -> None:
    reference, current = pair
    for distance in (js_distance, hellinger, linf):
        forward = distance(reference, current)
        assert 0.0 <= forward <= 1.0
        assert (
            forward == np.float64(distance(current, reference)) or abs(forward - distance(current, reference)) < 1e-12
        )
    assert psi(reference, current) >= 0.0
    assert abs(psi(reference, current) - psi(current, reference)) < 1e-9
    statistic, p_value = chi_square(reference, current)
    assert statistic >= 0.0 and 0.0 <= p_value <= 1.0


@FAST
@given(count_pairs(), st.integers(min_value=1, max_value=50))
def test_same_proportions_give_no_drift(pair: tuple[np.ndarray, np.ndarray], factor: int) -> None:
    reference, _ = pair
    scaled = reference * factor  # same shape of distribution, more observations
    assert psi(reference, scaled) < 1e-12
    assert js_distance(reference, scaled) < 1e-7
    assert hellinger(reference, scaled) < 1e-7
    assert linf(reference, scaled) < 1e-12
    assert chi_square(reference, scaled)[0] < 1e-9
    assert chi_square(reference, scaled)[1] > 0.999


@FAST
@given(samples)
def test_identical_samples_give_no_drift(values: np.ndarray) -> None:
    constant = np.full(values.size, values[0])
    assert wasserstein_normalized(constant, constant) == 0.0
    assert wasserstein_normalized(constant, constant + 1.0) == np.inf
    statistic, p_value = ks(values, values)
    assert statistic == 0.0 and p_value == 1.0
    assert wasserstein(values, values) == 0.0
    assert wasserstein_normalized(values, values) == 0.0


@FAST
@given(samples, samples)
def test_sample_methods_are_symmetric_bounded_and_match_scipy(a: np.ndarray, b: np.ndarray) -> None:
    statistic, p_value = ks(a, b)
    assert 0.0 <= statistic <= 1.0 and 0.0 <= p_value <= 1.0
    assert statistic == ks(b, a)[0] or abs(statistic - ks(b, a)[0]) < 1e-12
    assert abs(statistic - stats.ks_2samp(a, b).statistic) < 1e-12
    scale = max(1.0, float(np.max(np.abs(np.concatenate([a, b])))))
    assert abs(wasserstein(a, b) - wasserstein(b, a)) <= 1e-12 * scale
    assert abs(wasserstein(a, b) - stats.wasserstein_distance(a, b)) <= 1e-9 * scale
    assert wasserstein(a, b) >= 0.0


@FAST
@given(samples, st.floats(min_value=-100, max_value=100), st.floats(min_value=0.01, max_value=100))
def test_normalized_wasserstein_ignores_the_feature_unit(values: np.ndarray, shift: float, scale: float) -> None:
    if values.std() < 1e-6 * max(1.0, float(np.max(np.abs(values)))):
        return  # (near-)constant reference: the ratio is inf or rounding noise by design
    current = values + 1.0
    before = wasserstein_normalized(values, current)
    after = wasserstein_normalized(values * scale + shift, current * scale + shift)
    assert abs(before - after) <= 1e-6 * max(1.0, before)
