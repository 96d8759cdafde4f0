"""accuracy, precision, recall and f1 from the label-joined confusion counts of the whole fleet; with
``labelDelay``, from the maturity cohort's (:mod:`modelmonitor.signals.maturity`)."""

from __future__ import annotations

from collections.abc import Sequence

from modelmonitor.metricnames import LABELED_PREDICTIONS, MATURED_LABELED_PREDICTIONS
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, confusion, count, describe, values
from modelmonitor.signals.maturity import cohort, no_outcomes, series
from modelmonitor.signals.request import SignalRequest

SIGNALS = ("accuracy", "precision", "recall", "f1")


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan:
    """One query for all four signals (and every monitor of the batch)."""
    counts = series(request, grouping, LABELED_PREDICTIONS, MATURED_LABELED_PREDICTIONS)
    return Plan((f"sum by ({grouping.by('outcome')}) (increase({counts}[{window}]))",), _compute)


def _compute(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    counts = confusion(answers[0].select(request))
    if counts is None:
        return no_outcomes(request, LABELED_PREDICTIONS, MATURED_LABELED_PREDICTIONS)
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    # The sample count is the ratio's denominator, so minSamples guards exactly what the value rests on.
    signal = request.signal
    if signal == "accuracy":
        numerator, denominator, what = tp + tn, tp + fp + tn + fn, "labeled predictions"
    elif signal == "precision":
        numerator, denominator, what = tp, tp + fp, "positive predictions with a label"
    elif signal == "recall":
        numerator, denominator, what = tp, tp + fn, "labeled positives"
    else:
        numerator, denominator, what = 2 * tp, 2 * tp + fp + fn, "tp + fp + fn"
    samples = tp + fp + fn if signal == "f1" else denominator
    if denominator <= 0:
        return Measurement.no_data(f"{signal}: no {what} for {describe(request)} over {request.window}")
    return values(
        [numerator / denominator],
        count(samples),
        f"tp={tp:.0f} fp={fp:.0f} tn={tn:.0f} fn={fn:.0f} over {request.window}{cohort(request)}",
    )
