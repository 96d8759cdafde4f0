"""Reference-quantile bins follow Prometheus `le` semantics and the counts add up."""

from __future__ import annotations

import numpy as np
import pytest

from modelmonitor.stats.binning import bin_counts, bin_counts_columns, quantile_edges, quantile_edges_columns
from modelmonitor.stats.drift import SortedSample


def test_value_on_a_bound_goes_to_the_bin_that_ends_there() -> None:
    # Prometheus: bucket le=b counts v <= b, so 1.0 belongs to (-inf, 1], 1.5 to (1, 2], 3.5 to (3, +inf).
    counts = bin_counts(np.array([0.5, 1.0, 1.5, 2.0, 3.0, 3.5, np.inf, -np.inf]), np.array([1.0, 2.0, 3.0]))
    assert counts.tolist() == [3, 2, 1, 2]
    assert counts.dtype == np.int64


def test_counts_match_differenced_cumulative_prometheus_buckets() -> None:
    rng = np.random.default_rng(7)
    values = np.round(rng.normal(size=2000), 1)  # many values sit exactly on a bound
    edges = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    cumulative = [int(np.sum(values <= b)) for b in edges] + [values.size]  # le=b ... le=+Inf
    assert bin_counts(values, edges).tolist() == np.diff([0, *cumulative]).tolist()


def test_quantile_edges_split_a_continuous_reference_into_equal_bins() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=10_000)
    edges = quantile_edges(reference, 10)
    assert edges.size == 9 and np.all(np.diff(edges) > 0)
    assert bin_counts(reference, edges).tolist() == [1000] * 10


def test_discrete_reference_gets_one_bin_per_value_and_ties_are_merged() -> None:
    reference = np.repeat([1.0, 2.0, 3.0], [500, 300, 200])
    edges = quantile_edges(reference, 10)
    assert edges.tolist() == [1.0, 2.0, 3.0]
    assert bin_counts(reference, edges).tolist() == [500, 300, 200, 0]
    assert quantile_edges(np.full(50, 4.2), 5).tolist() == [4.2]


def test_columns_agree_with_one_feature_at_a_time() -> None:
    rng = np.random.default_rng(2)
    reference = rng.gamma(2.0, size=(3000, 4))
    current = rng.gamma(2.2, size=(500, 4))
    edges = quantile_edges_columns(reference, 8)
    for j, counts in enumerate(bin_counts_columns(current, edges)):
        assert edges[j].tolist() == quantile_edges(reference[:, j], 8).tolist()
        assert counts.tolist() == bin_counts(current[:, j], edges[j]).tolist()


@pytest.mark.parametrize(
    ("values", "edges", "message"),
    [
        (np.array([1.0, np.nan]), np.array([0.0]), "values: contains NaN"),
        (np.array([1.0]), np.array([1.0, 1.0]), "edges: bounds must be strictly increasing"),
        (np.array([1.0]), np.array([np.inf]), "edges: 1 value"),
        (np.ones((2, 2)), np.array([0.0]), "values: expected a 1-D array"),
        (np.array(["a"]), np.array([0.0]), "values: expected numbers"),
    ],
)
def test_bad_input_is_refused_with_the_argument_named(values: object, edges: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bin_counts(values, edges)  # type: ignore[arg-type]


def test_quantile_edges_refuses_nan_reference_and_too_few_bins() -> None:
    with pytest.raises(ValueError, match="reference: 1 value"):
        quantile_edges(np.array([1.0, np.nan]), 4)
    with pytest.raises(ValueError, match="n_bins: expected an integer >= 2"):
        quantile_edges(np.array([1.0, 2.0]), 1)
    with pytest.raises(ValueError, match="reference: is empty"):
        quantile_edges(np.array([]), 4)


def test_many_bins_use_the_same_le_semantics() -> None:
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=5000), 2)
    edges = quantile_edges(values, 100)  # more bounds than the compare-per-bound path handles
    assert edges.size > 32
    cumulative = [int(np.sum(values <= b)) for b in edges] + [values.size]
    assert bin_counts(values, edges).tolist() == np.diff([0, *cumulative]).tolist()


def test_a_sorted_sample_gives_the_same_bounds_and_counts() -> None:
    rng = np.random.default_rng(4)
    reference = np.round(rng.gamma(2.0, size=(4001, 3)), 1)
    current = np.round(rng.gamma(2.3, size=(777, 3)), 1)
    sorted_reference = SortedSample.from_samples(reference)
    for n_bins in (2, 7, 10, 64):
        edges = sorted_reference.quantile_edges(n_bins)
        assert [e.tolist() for e in edges] == [e.tolist() for e in quantile_edges_columns(reference, n_bins)]
        from_sorted = SortedSample.from_samples(current, "current").bin_counts(edges)
        assert [c.tolist() for c in from_sorted] == [c.tolist() for c in bin_counts_columns(current, edges)]
