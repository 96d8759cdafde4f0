"""estimatedAccuracy: performance before labels arrive, from calibrated scores (CBPE's idea).

The reference profile holds a calibration of the model's scores fitted on the reference labels (isotonic
regression, ``modelmonitor profile build --score S --label L``). For every scored prediction the sidecar adds
its calibrated probability of being correct (``p`` for a positive prediction, ``1 - p`` for a negative one) to
``modelmonitor_estimated_correct_total`` and counts it in ``modelmonitor_estimated_predictions_total``; both
sum over replicas, and the fleet's estimate over the window is the first's increase over the second's.

Assumption: only the inputs' distribution moved (covariate shift); the probability of a label given the score
is the reference's. When the relation between inputs and labels changes (concept drift), the estimate is wrong
and only joined labels tell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelmonitor.metricnames import ESTIMATED_CORRECT, ESTIMATED_PREDICTIONS
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, count, describe, no_series, values
from modelmonitor.signals.request import SignalRequest

SIGNALS = ("estimatedAccuracy",)


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan:
    """The summed probabilities of being correct, then the predictions they came from."""
    by = grouping.by()
    return Plan(
        (
            f"sum by ({by}) (increase({ESTIMATED_CORRECT}[{window}]))",
            f"sum by ({by}) (increase({ESTIMATED_PREDICTIONS}[{window}]))",
        ),
        _compute,
    )


def _compute(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    predicted = [s.value for s in answers[1].select(request) if not math.isnan(s.value)]
    if not predicted:
        return no_series(request, ESTIMATED_PREDICTIONS)
    predictions = sum(predicted)
    if predictions <= 0:
        return Measurement.no_data(
            f"estimatedAccuracy: no scored prediction for {describe(request)} over {request.window} (does the "
            "profile carry a score calibration?)"
        )
    correct = sum(s.value for s in answers[0].select(request) if not math.isnan(s.value))
    return values(
        [correct / predictions],
        count(predictions),
        f"{correct:.1f} expected correct of {predictions:.0f} scored predictions over {request.window} "
        "(calibrated scores; assumes covariate shift only)",
    )
