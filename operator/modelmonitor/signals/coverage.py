"""labelCoverage: the share of predictions that got their label, from counters summed over the fleet.

labels joined over the window / predictions that waited for a label (they carried a request id) over a window
of the same length, ``labelDelay`` earlier when the policy sets one (PromQL ``offset``). Labels that take about
``labelDelay`` to arrive then meet the predictions they are about; without it, a model whose labels come an hour
late reads low for the first hour of every traffic rise. A label pipeline that stops drives the value to 0
within one window, whatever the replica that would have received the labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelmonitor.metricnames import LABEL_PREDICTIONS, LABELS_RECEIVED
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, count, describe, no_series, values
from modelmonitor.signals.request import SignalRequest

SIGNALS = ("labelCoverage",)


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan:
    """Joined labels, then the predictions that waited for one (offset by the policy's labelDelay)."""
    offset = f" offset {request.label_delay}" if request.label_delay else ""
    by = grouping.by()
    joined = grouping.select(LABELS_RECEIVED, 'result="joined"')
    return Plan(
        (
            f"sum by ({by}) (increase({joined}[{window}]))",
            f"sum by ({by}) (increase({grouping.select(LABEL_PREDICTIONS)}[{window}]{offset}))",
        ),
        _compute,
    )


def _compute(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    predicted = [s.value for s in answers[1].select(request) if not math.isnan(s.value)]
    if not predicted:
        return no_series(request, LABEL_PREDICTIONS)
    predictions = sum(predicted)
    delay = f" ending {request.label_delay} ago" if request.label_delay else ""
    if predictions <= 0:
        return Measurement.no_data(
            f"labelCoverage: no prediction waited for a label for {describe(request)} over {request.window}{delay}"
        )
    joined = sum(s.value for s in answers[0].select(request) if not math.isnan(s.value))
    # The sample count is the denominator: minSamples guards the number of predictions the share rests on.
    return values(
        [joined / predictions],
        count(predictions),
        f"{joined:.0f} labels joined over {request.window} / {predictions:.0f} predictions over {request.window}"
        f"{delay}",
    )
