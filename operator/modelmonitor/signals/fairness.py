"""Fairness over the whole fleet, from summed per-group counts.

- ``fairnessGap``: demographic-parity difference, the largest minus the smallest positive-prediction rate over
  the groups, from ``modelmonitor_group_predictions_total{group, predicted}``: every prediction counts, no label
  is needed (and no group's label coverage skews it).
- ``disparateImpact``: the smallest over the largest positive-prediction rate, same counts (1 is parity; the
  "four-fifths rule" flags values below 0.8).
- ``equalOpportunityGap``: the largest minus the smallest true-positive rate ``tp / (tp + fn)`` over the groups,
  from the label-joined ``modelmonitor_labeled_predictions_total{group, outcome}``.

A group with fewer samples than the policy's ``minSamples`` (predictions; labeled positives for equal
opportunity) is left out, and the detail says so. The formulas are those of ``modelmonitor.stats.quality``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelmonitor.metricnames import GROUP_PREDICTIONS, LABELED_PREDICTIONS, PREDICTED_NEGATIVE, PREDICTED_POSITIVE
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, count, no_series, sum_by_two, values
from modelmonitor.signals.request import SignalRequest
from modelmonitor.stats.quality import (
    ConfusionCounts,
    FairnessGap,
    demographic_parity_difference,
    disparate_impact_ratio,
    equal_opportunity_difference,
)

SIGNALS = ("fairnessGap", "disparateImpact", "equalOpportunityGap")


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan:
    """fairnessGap and disparateImpact share one query over the group prediction counts."""
    if request.signal == "equalOpportunityGap":
        return Plan(
            (f"sum by ({grouping.by('group', 'outcome')}) (increase({LABELED_PREDICTIONS}[{window}]))",),
            _compute_equal_opportunity,
        )
    return Plan(
        (f"sum by ({grouping.by('group', 'predicted')}) (increase({GROUP_PREDICTIONS}[{window}]))",),
        _compute_parity,
    )


def _compute_parity(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    per_group = sum_by_two(answers[0].select(request), "group", "predicted")
    if not per_group:
        return no_series(request, GROUP_PREDICTIONS)
    # Only the selection rate (tp + fp) / total is read, so positives and negatives stand in for tp and tn.
    groups = {
        group: ConfusionCounts(
            tp=count(counts.get(PREDICTED_POSITIVE, 0.0)), fp=0, tn=count(counts.get(PREDICTED_NEGATIVE, 0.0)), fn=0
        )
        for group, counts in per_group.items()
    }
    min_samples = max(1, request.min_samples)
    if request.signal == "disparateImpact":
        gap = disparate_impact_ratio(groups, min_samples=min_samples)
        what = "disparate impact: lowest / highest positive-prediction rate"
    else:
        gap = demographic_parity_difference(groups, min_samples=min_samples)
        what = "demographic parity: highest - lowest positive-prediction rate"
    return _result(request, gap, what, "predictions")


def _compute_equal_opportunity(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    per_group = sum_by_two(answers[0].select(request), "group", "outcome")
    if not per_group:
        return no_series(request, LABELED_PREDICTIONS)
    groups = {
        group: ConfusionCounts(*(count(counts.get(outcome, 0.0)) for outcome in ("tp", "fp", "tn", "fn")))
        for group, counts in per_group.items()
    }
    gap = equal_opportunity_difference(groups, min_samples=max(1, request.min_samples))
    return _result(request, gap, "equal opportunity: highest - lowest true-positive rate", "labeled positives")


def _result(request: SignalRequest, gap: FairnessGap, what: str, unit: str) -> Measurement:
    """The value with the groups compared, their rates and counts; or NoData saying which groups were missing."""
    compared = {name: g for name, g in sorted(gap.groups.items()) if g.included}
    left_out = [f"{name!r} ({g.samples})" for name, g in sorted(gap.groups.items()) if not g.included and g.samples > 0]
    small = f"; left out for fewer than minSamples {request.min_samples}: {', '.join(left_out)}" if left_out else ""
    groups = ", ".join(f"{name!r} {g.rate:.4g} of {g.samples}" for name, g in compared.items())
    if len(compared) < 2:
        return Measurement.no_data(
            f"{request.signal}: {len(compared)} group(s) with {unit} over {request.window}; "
            f"a comparison needs at least two{small}"
        )
    if math.isnan(gap.value):
        return Measurement.no_data(f"{request.signal}: no positive predictions in any group compared ({groups})")
    # The smallest group compared decides how far the value can be trusted.
    smallest = min(g.samples for g in compared.values())
    return values([gap.value], smallest, f"{what}; groups compared (rate of {unit}): {groups}{small}")
