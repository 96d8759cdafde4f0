"""Fairness over the whole fleet, from summed per-group counts.

- ``fairnessGap``: demographic-parity difference, the largest minus the smallest positive-prediction rate over
  the groups, from ``modelmonitor_group_predictions_total{group, predicted}``: every prediction counts, no label
  is needed (and no group's label coverage skews it).
- ``disparateImpact``: the smallest over the largest positive-prediction rate, same counts (1 is parity; the
  "four-fifths rule" flags values below 0.8).
- ``equalOpportunityGap``: the largest minus the smallest true-positive rate ``tp / (tp + fn)`` over the groups,
  from the label-joined ``modelmonitor_labeled_predictions_total{group, outcome}``; with ``labelDelay``, from the
  maturity cohort's (:mod:`modelmonitor.signals.maturity`).

A group with fewer samples than the policy's ``minSamples`` (predictions; labeled positives for equal
opportunity) is left out, and the detail says so. The formulas are those of ``modelmonitor.stats.quality``
(which the sidecar's per-replica gauges use); here the counts are ``increase()``'s extrapolated floats, so the
rates are taken from them directly rather than from rounded integer counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from modelmonitor.metricnames import (
    GROUP_PREDICTIONS,
    LABELED_PREDICTIONS,
    MATURED_LABELED_PREDICTIONS,
    PREDICTED_NEGATIVE,
    PREDICTED_POSITIVE,
)
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, count, no_series, sum_by_two, values
from modelmonitor.signals.maturity import cohort, no_outcomes, series
from modelmonitor.signals.request import SignalRequest

SIGNALS = ("fairnessGap", "disparateImpact", "equalOpportunityGap")


@dataclass(frozen=True)
class _Group:
    """One group's rate from summed counts (floats: ``increase()`` extrapolates, and rounding them would skew
    the rate) and its sample count."""

    rate: float
    samples: float


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan:
    """fairnessGap and disparateImpact share one query over the group prediction counts."""
    if request.signal == "equalOpportunityGap":
        counts = series(request, grouping, LABELED_PREDICTIONS, MATURED_LABELED_PREDICTIONS)
        return Plan(
            (f"sum by ({grouping.by('group', 'outcome')}) (increase({counts}[{window}]))",),
            _compute_equal_opportunity,
        )
    return Plan(
        (f"sum by ({grouping.by('group', 'predicted')}) (increase({grouping.select(GROUP_PREDICTIONS)}[{window}]))",),
        _compute_parity,
    )


def _compute_parity(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    per_group = sum_by_two(answers[0].select(request), "group", "predicted")
    if not per_group:
        return no_series(request, GROUP_PREDICTIONS)
    groups = {}
    for group, counts in per_group.items():
        positive = max(counts.get(PREDICTED_POSITIVE, 0.0), 0.0)
        total = positive + max(counts.get(PREDICTED_NEGATIVE, 0.0), 0.0)
        groups[group] = _Group(positive / total if total > 0 else math.nan, total)
    if request.signal == "disparateImpact":
        what = "disparate impact: lowest / highest positive-prediction rate"
    else:
        what = "demographic parity: highest - lowest positive-prediction rate"
    return _result(request, groups, what, "predictions")


def _compute_equal_opportunity(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    per_group = sum_by_two(answers[0].select(request), "group", "outcome")
    if not per_group:
        return no_outcomes(request, LABELED_PREDICTIONS, MATURED_LABELED_PREDICTIONS)
    groups = {}
    for group, counts in per_group.items():
        tp, fn = max(counts.get("tp", 0.0), 0.0), max(counts.get("fn", 0.0), 0.0)
        groups[group] = _Group(tp / (tp + fn) if tp + fn > 0 else math.nan, tp + fn)
    what = f"equal opportunity: highest - lowest true-positive rate{cohort(request)}"
    return _result(request, groups, what, "labeled positives")


def _result(request: SignalRequest, groups: Mapping[str, _Group], what: str, unit: str) -> Measurement:
    """The value with the groups compared, their rates and counts; or NoData saying which groups were missing.

    A group takes part when it has at least ``minSamples`` samples (and at least one).
    """
    least = max(1, request.min_samples)
    compared = {name: g for name, g in sorted(groups.items()) if count(g.samples) >= least}
    left_out = [f"{name!r} ({count(g.samples)})" for name, g in sorted(groups.items()) if 0 < count(g.samples) < least]
    small = f"; left out for fewer than minSamples {request.min_samples}: {', '.join(left_out)}" if left_out else ""
    described = ", ".join(f"{name!r} {g.rate:.4g} of {count(g.samples)}" for name, g in compared.items())
    if len(compared) < 2:
        return Measurement.no_data(
            f"{request.signal}: {len(compared)} group(s) with {unit} over {request.window}; "
            f"a comparison needs at least two{small}"
        )
    rates = [g.rate for g in compared.values()]
    if request.signal == "disparateImpact":
        if max(rates) <= 0:
            return Measurement.no_data(f"{request.signal}: no positive predictions in any group compared ({described})")
        value = min(rates) / max(rates)
    else:
        value = max(rates) - min(rates)
    # The smallest group compared decides how far the value can be trusted.
    smallest = min(count(g.samples) for g in compared.values())
    return values([value], smallest, f"{what}; groups compared (rate of {unit}): {described}{small}")
