"""Per-replica scores computed from the monitor's windows at scrape time: drift, quality and fairness.

Drift compares the last ``window_size`` rows with the profile: count-based methods (PSI, Jensen-Shannon,
Hellinger, L-infinity, chi-square) on the window's counts in the reference buckets, sample-based methods (KS,
Wasserstein) against the profile's quantile sketch, exactly as the thresholds were calibrated. Quality and
fairness come from the window of joined labels (equal opportunity) and of recent predictions (demographic parity,
disparate impact, which need no label). Values that cannot be measured (too few rows, an undefined ratio) are
left out rather than exported as a made-up number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from modelmonitor.sidecar.profile import CategoricalReference, NumericalReference
from modelmonitor.stats.drift import METHODS, SortedReference
from modelmonitor.stats.quality import (
    ConfusionCounts,
    demographic_parity_difference,
    disparate_impact_ratio,
    equal_opportunity_difference,
    quality_metrics,
)


@dataclass
class NumericalScorer:
    """Drift of one numerical quantity's window against its reference."""

    reference: NumericalReference
    methods: tuple[str, ...]
    sorted_sketch: SortedReference = field(init=False)

    def __post_init__(self) -> None:
        self.sorted_sketch = SortedReference.from_samples(self.reference.sketch)

    def score(self, window: npt.NDArray[np.float64], min_rows: int) -> dict[str, float]:
        """Method -> score for the finite values of ``window``; empty when fewer than ``min_rows``."""
        values = window[np.isfinite(window)]
        if values.size < min_rows or values.size == 0:
            return {}
        counts = np.bincount(
            np.searchsorted(self.reference.bounds, values, side="left"), minlength=self.reference.counts.size
        )
        out: dict[str, float] = {}
        for name in self.methods:
            method = METHODS[name]
            try:
                if method.input == "counts":
                    out[name] = method.function(self.reference.counts, counts)
                else:
                    out[name] = method.function(self.sorted_sketch, values)
            except ValueError:
                continue  # e.g. a constant reference for a normalized distance: not measurable, not exported
        return {k: v for k, v in out.items() if math.isfinite(v)}


@dataclass
class CategoricalScorer:
    """Drift of one categorical quantity's window (category codes) against its reference counts."""

    reference: CategoricalReference
    methods: tuple[str, ...]

    def score(self, codes: npt.NDArray[np.int32], min_rows: int) -> dict[str, float]:
        """Method -> score for the known codes in ``codes``; empty when fewer than ``min_rows``."""
        valid = codes[codes >= 0]
        if valid.size < min_rows or valid.size == 0:
            return {}
        size = self.reference.counts.size
        counts = np.bincount(np.minimum(valid, size - 1), minlength=size)
        out: dict[str, float] = {}
        for name in self.methods:
            try:
                out[name] = METHODS[name].function(self.reference.counts, counts)
            except ValueError:
                continue
        return {k: v for k, v in out.items() if math.isfinite(v)}


OUTCOME_FIELDS = ("tp", "fp", "tn", "fn")


def confusion_by_group(outcomes: npt.NDArray[np.int32], n_groups: int) -> npt.NDArray[np.int64]:
    """``(groups, 4)`` counts of outcome codes ``0..3`` from a ``(rows, 2)`` window of (outcome, group)."""
    rows = outcomes[outcomes[:, 0] >= 0]
    table = np.zeros((n_groups, 4), dtype=np.int64)
    np.add.at(table, (rows[:, 1], rows[:, 0]), 1)
    return table


def quality_scores(table: npt.NDArray[np.int64]) -> dict[str, float]:
    """accuracy / precision / recall / f1 over all groups of a confusion table; undefined ones left out."""
    tp, fp, tn, fn = (int(v) for v in table.sum(axis=0))
    metrics = quality_metrics(ConfusionCounts(tp=tp, fp=fp, tn=tn, fn=fn))
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


@dataclass(frozen=True)
class Fairness:
    """Fairness gaps and, per metric and group, the rate and sample count behind them."""

    gaps: dict[str, float]
    rates: dict[str, dict[str, tuple[float, int]]]


def fairness_scores(
    predictions: npt.NDArray[np.int32],
    labeled: npt.NDArray[np.int64],
    group_names: list[str],
    min_samples: int,
) -> Fairness:
    """Gaps between groups: selection-rate ones from recent predictions, equal opportunity from joined labels.

    Args:
        predictions: ``(rows, 2)`` window of (predicted positive 1/0/-1, group code).
        labeled: ``(groups, 4)`` confusion counts of the window of joined labels.
        group_names: label value of each group code (a code beyond the list is skipped).
        min_samples: rows a group needs to take part in a gap.
    """
    known = predictions[predictions[:, 0] >= 0]
    selection: dict[str, ConfusionCounts] = {}
    for code, name in enumerate(group_names):
        rows = known[known[:, 1] == code, 0]
        if rows.size:
            positives = int(rows.sum())
            # Only the selection rate (tp + fp) / total is read, so positives/negatives stand in for tp/tn.
            selection[name] = ConfusionCounts(tp=positives, fp=0, tn=int(rows.size) - positives, fn=0)
    with_labels = {
        name: ConfusionCounts(*(int(v) for v in labeled[code]))
        for code, name in enumerate(group_names)
        if code < labeled.shape[0] and labeled[code].sum() > 0
    }
    results = {
        "demographic_parity_difference": demographic_parity_difference(selection, min_samples=min_samples),
        "disparate_impact_ratio": disparate_impact_ratio(selection, min_samples=min_samples),
        "equal_opportunity_difference": equal_opportunity_difference(with_labels, min_samples=min_samples),
    }
    gaps = {k: r.value for k, r in results.items() if math.isfinite(r.value)}
    rates = {k: {g: (rate.rate, rate.samples) for g, rate in r.groups.items()} for k, r in results.items()}
    return Fairness(gaps=gaps, rates=rates)
