"""missingRate and schemaViolationRate: the worst feature's rate over the rows checked."""

from __future__ import annotations

from collections.abc import Sequence

from modelmonitor.metricnames import FEATURE_MISSING, FEATURE_OBSERVATIONS, SCHEMA_VIOLATIONS
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, count, describe, no_series, sum_by, values
from modelmonitor.signals.request import SignalRequest

SIGNALS = ("missingRate", "schemaViolationRate")


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan:
    """The numerator per feature, then the rows checked per feature (shared by both signals)."""
    numerator = FEATURE_MISSING if request.signal == "missingRate" else SCHEMA_VIOLATIONS
    by = grouping.by("feature")
    return Plan(
        (
            f"sum by ({by}) (increase({grouping.select(numerator)}[{window}]))",
            f"sum by ({by}) (increase({grouping.select(FEATURE_OBSERVATIONS)}[{window}]))",
        ),
        _compute,
    )


def _compute(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    observations = sum_by(answers[1].select(request), "feature")
    if not observations:
        return no_series(request, FEATURE_OBSERVATIONS)
    rows = max(observations.values())
    if rows <= 0:
        return Measurement.no_data(f"{request.signal}: no rows for {describe(request)} over {request.window}")
    numerators = sum_by(answers[0].select(request), "feature")
    rates: dict[str, float] = {}
    for feature, seen in observations.items():
        if seen > 0:
            rates[feature] = numerators.get(feature, 0.0) / seen
    # Violations of features the profile does not know (kind unknown_feature) have no observation counter of
    # their own: count them per row.
    for feature, violations in numerators.items():
        if feature not in observations:
            rates[feature] = violations / rows
    worst = max(rates, key=rates.__getitem__)
    return values(
        [rates[worst]],
        count(rows),
        f"highest in feature {worst!r}: {numerators.get(worst, 0.0):.0f} of "
        f"{observations.get(worst, rows):.0f} over {request.window}",
    )
