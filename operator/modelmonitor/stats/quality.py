"""Model quality from confusion counts, and fairness gaps from per-group confusion counts.

Everything here reads counts (true/false positives and negatives), the numbers the sidecar exports as
``modelmonitor_labeled_predictions_total{outcome=...}``, so the fleet-wide value comes from counts summed over
replicas. An undefined ratio (a denominator of 0) is ``NaN``, meaning "not measurable over this window", and is
never replaced by a made-up 0 or 1: the operator turns ``NaN`` into *NoData*, not into a breach.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ConfusionCounts",
    "FairnessGap",
    "GroupRate",
    "accuracy",
    "demographic_parity_difference",
    "disparate_impact_ratio",
    "equal_opportunity_difference",
    "f1",
    "precision",
    "quality_metrics",
    "recall",
]


@dataclass(frozen=True)
class ConfusionCounts:
    """Counts of labelled predictions relative to the positive class.

    Attributes:
        tp: predicted positive, labelled positive.
        fp: predicted positive, labelled negative.
        tn: predicted negative, labelled negative.
        fn: predicted negative, labelled positive.
    """

    tp: int
    fp: int
    tn: int
    fn: int

    def __post_init__(self) -> None:
        for name in ("tp", "fp", "tn", "fn"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a count (integer >= 0), got {value!r}")

    @property
    def total(self) -> int:
        """All labelled predictions."""
        return self.tp + self.fp + self.tn + self.fn

    @property
    def predicted_positive(self) -> int:
        """Predictions of the positive class (``tp + fp``)."""
        return self.tp + self.fp

    @property
    def actual_positive(self) -> int:
        """Labels of the positive class (``tp + fn``)."""
        return self.tp + self.fn


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def accuracy(counts: ConfusionCounts) -> float:
    """``(tp + tn) / total``; NaN when there is no labelled prediction."""
    return _ratio(counts.tp + counts.tn, counts.total)


def precision(counts: ConfusionCounts) -> float:
    """``tp / (tp + fp)``; NaN when the model predicted no positive (precision is then undefined)."""
    return _ratio(counts.tp, counts.predicted_positive)


def recall(counts: ConfusionCounts) -> float:
    """``tp / (tp + fn)``; NaN when no label is positive (there was nothing to recall)."""
    return _ratio(counts.tp, counts.actual_positive)


def f1(counts: ConfusionCounts) -> float:
    """``2 tp / (2 tp + fp + fn)``, the harmonic mean of precision and recall written in counts.

    NaN only when there is neither a positive prediction nor a positive label (``tp = fp = fn = 0``). When the
    model predicts no positive but positives exist, precision is undefined yet F1 is a true 0 (every positive
    was missed), which is what the count form gives.
    """
    return _ratio(2 * counts.tp, 2 * counts.tp + counts.fp + counts.fn)


def quality_metrics(counts: ConfusionCounts) -> dict[str, float]:
    """All four metrics by the names used in the ``metric`` label: accuracy, precision, recall, f1."""
    return {
        "accuracy": accuracy(counts),
        "precision": precision(counts),
        "recall": recall(counts),
        "f1": f1(counts),
    }


@dataclass(frozen=True)
class GroupRate:
    """One group's rate and the number of samples it was measured on.

    Attributes:
        rate: the group's rate (selection rate or true positive rate); NaN when ``samples`` is 0.
        samples: the denominator of ``rate`` (group size, or the group's positive labels).
        included: whether the group entered the gap (it has at least ``min_samples`` samples).
    """

    rate: float
    samples: int
    included: bool


@dataclass(frozen=True)
class FairnessGap:
    """A fairness measure with the per-group figures it was computed from.

    Attributes:
        value: the gap (difference or ratio); NaN when fewer than two groups have enough samples.
        groups: every group's rate and sample count, including the groups left out for too few samples.
    """

    value: float
    groups: dict[str, GroupRate]


def _group_rates(
    groups: Mapping[str, ConfusionCounts], numerator: str, denominator: str, min_samples: int
) -> dict[str, GroupRate]:
    if min_samples < 1:
        raise ValueError(f"min_samples: expected >= 1, got {min_samples}")
    rates: dict[str, GroupRate] = {}
    for name, counts in groups.items():
        if not isinstance(counts, ConfusionCounts):
            raise ValueError(f"groups[{name!r}]: expected ConfusionCounts, got {type(counts).__name__}")
        top = getattr(counts, numerator)
        bottom = getattr(counts, denominator)
        rates[name] = GroupRate(rate=_ratio(top, bottom), samples=bottom, included=bottom >= min_samples)
    return rates


def _included(rates: dict[str, GroupRate]) -> list[float]:
    return [group.rate for group in rates.values() if group.included]


def demographic_parity_difference(groups: Mapping[str, ConfusionCounts], *, min_samples: int = 1) -> FairnessGap:
    """Largest minus smallest selection rate ``(tp + fp) / group size`` over the groups.

    In ``[0, 1]``; 0 means every group is predicted positive equally often. Groups with fewer than
    ``min_samples`` predictions are reported but left out; NaN when fewer than two groups remain.
    """
    rates = _group_rates(groups, "predicted_positive", "total", min_samples)
    values = _included(rates)
    return FairnessGap(max(values) - min(values) if len(values) >= 2 else math.nan, rates)


def equal_opportunity_difference(groups: Mapping[str, ConfusionCounts], *, min_samples: int = 1) -> FairnessGap:
    """Largest minus smallest true positive rate ``tp / (tp + fn)`` over the groups.

    In ``[0, 1]``; 0 means positives are recognised equally well in every group. The samples of a group are its
    positive labels; groups with fewer than ``min_samples`` of them are reported but left out; NaN when fewer
    than two groups remain.
    """
    rates = _group_rates(groups, "tp", "actual_positive", min_samples)
    values = _included(rates)
    return FairnessGap(max(values) - min(values) if len(values) >= 2 else math.nan, rates)


def disparate_impact_ratio(groups: Mapping[str, ConfusionCounts], *, min_samples: int = 1) -> FairnessGap:
    """Smallest over largest selection rate over the groups.

    In ``[0, 1]``; 1 means parity, and the "four-fifths rule" flags values below 0.8. NaN when fewer than two
    groups have ``min_samples`` predictions, or when no group is ever predicted positive (0 / 0).
    """
    rates = _group_rates(groups, "predicted_positive", "total", min_samples)
    values = _included(rates)
    if len(values) < 2:
        return FairnessGap(math.nan, rates)
    return FairnessGap(min(values) / max(values) if max(values) > 0 else math.nan, rates)
