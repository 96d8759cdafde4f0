"""estimatedAccuracy, estimatedPrecision, estimatedRecall: performance before labels arrive, from calibrated
scores (CBPE's idea).

The reference profile holds a calibration of the model's scores fitted on the reference labels (isotonic
regression, ``modelmonitor profile build --score S --label L``): ``p``, the probability that a prediction's label
is positive. For every scored prediction the sidecar adds to counters (which sum over replicas):

- its probability of being correct (``p`` for a positive prediction, ``1 - p`` for a negative one) and 1 for the
  prediction: estimated accuracy = the first's increase over the second's;
- for a positive prediction, ``p`` (an expected true positive) and 1: estimated precision = expected true
  positives / positive predictions;
- ``p`` for every prediction (an expected positive): estimated recall = expected true positives / expected
  positives.

Assumption: only the inputs' distribution moved (covariate shift); the probability of a label given the score
is the reference's. When the relation between inputs and labels changes (concept drift), the estimate is wrong
and only joined labels tell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from modelmonitor.metricnames import (
    ESTIMATED_CORRECT,
    ESTIMATED_POSITIVE_PREDICTIONS,
    ESTIMATED_POSITIVES,
    ESTIMATED_PREDICTIONS,
    ESTIMATED_TRUE_POSITIVES,
)
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, count, describe, no_series, values
from modelmonitor.signals.request import SignalRequest

#: signal -> (numerator, denominator, what the denominator counts)
_RATIOS: Mapping[str, tuple[str, str, str]] = {
    "estimatedAccuracy": (ESTIMATED_CORRECT, ESTIMATED_PREDICTIONS, "scored predictions"),
    "estimatedPrecision": (ESTIMATED_TRUE_POSITIVES, ESTIMATED_POSITIVE_PREDICTIONS, "positive predictions"),
    "estimatedRecall": (ESTIMATED_TRUE_POSITIVES, ESTIMATED_POSITIVES, "expected positives"),
}
SIGNALS = tuple(_RATIOS)


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan:
    """The summed probabilities, then what they are divided by."""
    assert request.signal is not None
    numerator, denominator, _what = _RATIOS[request.signal]
    by = grouping.by()
    return Plan(
        (
            f"sum by ({by}) (increase({grouping.select(numerator)}[{window}]))",
            f"sum by ({by}) (increase({grouping.select(denominator)}[{window}]))",
        ),
        _compute,
    )


def _compute(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    assert request.signal is not None
    _numerator, denominator, what = _RATIOS[request.signal]
    found = [s.value for s in answers[1].select(request) if not math.isnan(s.value)]
    if not found:
        return no_series(request, denominator)
    total = sum(found)
    if total <= 0:
        return Measurement.no_data(
            f"{request.signal}: no {what} for {describe(request)} over {request.window} (does the profile carry "
            "a score calibration, and do the predictions carry a score?)"
        )
    expected = sum(s.value for s in answers[0].select(request) if not math.isnan(s.value))
    return values(
        [expected / total],
        # a count of expected positives is a sum of probabilities: its rounding is the sample count
        count(total),
        f"{expected:.1f} expected of {total:.1f} {what} over {request.window} (calibrated scores; assumes "
        "covariate shift only)",
    )
