"""Quality and fairness from confusion counts: exact values, NaN where undefined, per-group counts."""

from __future__ import annotations

import math

import pytest

from modelmonitor.stats.quality import (
    ConfusionCounts,
    accuracy,
    demographic_parity_difference,
    disparate_impact_ratio,
    equal_opportunity_difference,
    f1,
    precision,
    quality_metrics,
    recall,
)


def test_metrics_from_counts() -> None:
    counts = ConfusionCounts(tp=40, fp=10, tn=45, fn=5)
    assert quality_metrics(counts) == {
        "accuracy": pytest.approx(0.85),
        "precision": pytest.approx(0.8),
        "recall": pytest.approx(40 / 45),
        "f1": pytest.approx(2 * 0.8 * (40 / 45) / (0.8 + 40 / 45)),
    }


def test_undefined_ratios_are_nan_never_a_made_up_number() -> None:
    nothing = ConfusionCounts(0, 0, 0, 0)
    assert all(math.isnan(value) for value in quality_metrics(nothing).values())
    no_positive_prediction = ConfusionCounts(tp=0, fp=0, tn=90, fn=10)
    assert math.isnan(precision(no_positive_prediction))
    assert recall(no_positive_prediction) == 0.0
    assert f1(no_positive_prediction) == 0.0  # every positive was missed: a true 0, defined from counts
    all_negative_labels = ConfusionCounts(tp=0, fp=3, tn=97, fn=0)
    assert math.isnan(recall(all_negative_labels))
    assert f1(all_negative_labels) == 0.0
    assert accuracy(all_negative_labels) == pytest.approx(0.97)
    only_true_negatives = ConfusionCounts(tp=0, fp=0, tn=50, fn=0)
    assert math.isnan(f1(only_true_negatives))


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_counts_must_be_non_negative_integers(bad: object) -> None:
    with pytest.raises(ValueError, match="tp: expected a count"):
        ConfusionCounts(tp=bad, fp=0, tn=0, fn=0)  # type: ignore[arg-type]


GROUPS = {
    # selection rate (tp+fp)/n: a 0.5, b 0.3, c 0.6 (but only 5 rows); TPR tp/(tp+fn): a 0.8, b 0.5
    "a": ConfusionCounts(tp=40, fp=10, tn=40, fn=10),
    "b": ConfusionCounts(tp=20, fp=10, tn=50, fn=20),
    "c": ConfusionCounts(tp=2, fp=1, tn=2, fn=0),
}


def test_demographic_parity_difference_reports_per_group_counts() -> None:
    gap = demographic_parity_difference(GROUPS, min_samples=10)
    assert gap.value == pytest.approx(0.5 - 0.3)
    assert gap.groups["a"].rate == pytest.approx(0.5) and gap.groups["a"].samples == 100
    assert gap.groups["c"].samples == 5 and not gap.groups["c"].included
    assert demographic_parity_difference(GROUPS).value == pytest.approx(0.6 - 0.3)


def test_equal_opportunity_difference_counts_positive_labels() -> None:
    gap = equal_opportunity_difference(GROUPS, min_samples=10)
    assert gap.value == pytest.approx(0.8 - 0.5)
    assert gap.groups["b"].samples == 40
    assert gap.groups["c"].samples == 2 and not gap.groups["c"].included


def test_disparate_impact_ratio() -> None:
    assert disparate_impact_ratio(GROUPS, min_samples=10).value == pytest.approx(0.3 / 0.5)
    never_positive = {"x": ConfusionCounts(0, 0, 10, 0), "y": ConfusionCounts(0, 0, 20, 0)}
    assert math.isnan(disparate_impact_ratio(never_positive).value)


def test_fewer_than_two_groups_is_nan() -> None:
    assert math.isnan(demographic_parity_difference({"a": GROUPS["a"]}).value)
    assert math.isnan(equal_opportunity_difference(GROUPS, min_samples=1000).value)
    with pytest.raises(ValueError, match="min_samples"):
        disparate_impact_ratio(GROUPS, min_samples=0)
