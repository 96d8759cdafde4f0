"""mae and rmse of a regression model from sums of errors over joined labels, summed over the fleet.

The sidecar adds ``|prediction - label|`` and ``(prediction - label)^2`` of every joined label to two counters
and counts the labels in a third; the window's MAE is the increase of the first over the increase of the count,
its RMSE the square root of the second over the count. Both are in the label's unit. With ``labelDelay``, from
the maturity cohort's sums (:mod:`modelmonitor.signals.maturity`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelmonitor.metricnames import (
    MATURED_REGRESSION_ABSOLUTE_ERROR,
    MATURED_REGRESSION_LABELED,
    MATURED_REGRESSION_SQUARED_ERROR,
    REGRESSION_ABSOLUTE_ERROR,
    REGRESSION_LABELED,
    REGRESSION_SQUARED_ERROR,
)
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, count, describe, values
from modelmonitor.signals.maturity import cohort, no_outcomes, series
from modelmonitor.signals.request import SignalRequest

SIGNALS = ("mae", "rmse")


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan:
    """The error sum the signal needs, then the count of labeled predictions."""
    by = grouping.by()
    if request.signal == "mae":
        errors = series(request, grouping, REGRESSION_ABSOLUTE_ERROR, MATURED_REGRESSION_ABSOLUTE_ERROR)
    else:
        errors = series(request, grouping, REGRESSION_SQUARED_ERROR, MATURED_REGRESSION_SQUARED_ERROR)
    labeled = series(request, grouping, REGRESSION_LABELED, MATURED_REGRESSION_LABELED)
    return Plan(
        (
            f"sum by ({by}) (increase({errors}[{window}]))",
            f"sum by ({by}) (increase({labeled}[{window}]))",
        ),
        _compute,
    )


def _compute(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    labeled_seen = [s.value for s in answers[1].select(request) if not math.isnan(s.value)]
    if not labeled_seen:
        return no_outcomes(request, REGRESSION_LABELED, MATURED_REGRESSION_LABELED)
    labeled = sum(labeled_seen)
    if labeled <= 0:
        return Measurement.no_data(
            f"{request.signal}: no labeled predictions for {describe(request)} over {request.window}"
        )
    errors = max(0.0, sum(s.value for s in answers[0].select(request) if not math.isnan(s.value)))
    mean = errors / labeled
    if request.signal == "mae":
        return values([mean], count(labeled), f"mean |error| over {labeled:.0f} labeled predictions{cohort(request)}")
    return values(
        [math.sqrt(mean)],
        count(labeled),
        f"root mean squared error over {labeled:.0f} labeled predictions{cohort(request)}",
    )
