"""multiclassAccuracy and macroF1 from the per-class (one-vs-rest) outcome counts of joined labels.

The sidecar of a multiclass model counts, per joined label, ``tp`` for the true class when the prediction was
right, else ``fp`` for the predicted class and ``fn`` for the true class
(``modelmonitor_class_outcomes_total{class, outcome}``): counters that sum over replicas. Every joined label
adds exactly one ``tp`` or one ``fn``, so their total is the number of labeled predictions:

- accuracy = sum(tp) / sum(tp + fn);
- macro F1 = the mean over classes of 2 tp / (2 tp + fp + fn), over the classes that occur in the window (as
  true or predicted class), the rest having no F1 to average.

With ``labelDelay``, from the maturity cohort's counts (:mod:`modelmonitor.signals.maturity`).
"""

from __future__ import annotations

from collections.abc import Sequence

from modelmonitor.metricnames import CLASS_OUTCOMES, MATURED_CLASS_OUTCOMES
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, count, describe, sum_by_two, values
from modelmonitor.signals.maturity import cohort, no_outcomes, series
from modelmonitor.signals.request import SignalRequest

SIGNALS = ("multiclassAccuracy", "macroF1")


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan:
    """One query for both signals."""
    counts = series(request, grouping, CLASS_OUTCOMES, MATURED_CLASS_OUTCOMES)
    return Plan((f"sum by ({grouping.by('class', 'outcome')}) (increase({counts}[{window}]))",), _compute)


def _compute(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    per_class = sum_by_two(answers[0].select(request), "class", "outcome")
    if not per_class:
        return no_outcomes(request, CLASS_OUTCOMES, MATURED_CLASS_OUTCOMES)
    counts = {
        name: {outcome: max(0.0, outcomes.get(outcome, 0.0)) for outcome in ("tp", "fp", "fn")}
        for name, outcomes in per_class.items()
    }
    labeled = sum(c["tp"] + c["fn"] for c in counts.values())
    if labeled <= 0:
        return Measurement.no_data(
            f"{request.signal}: no labeled predictions for {describe(request)} over {request.window}"
        )
    if request.signal == "multiclassAccuracy":
        correct = sum(c["tp"] for c in counts.values())
        return values(
            [correct / labeled],
            count(labeled),
            f"{correct:.0f} correct of {labeled:.0f} labeled predictions over {request.window}{cohort(request)}",
        )
    scores = {
        name: 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"])
        for name, c in sorted(counts.items())
        if 2 * c["tp"] + c["fp"] + c["fn"] > 0
    }
    described = ", ".join(f"{name!r} {score:.4g}" for name, score in scores.items())
    return values(
        [sum(scores.values()) / len(scores)],
        count(labeled),
        f"mean F1 of {len(scores)} classes over {labeled:.0f} labeled predictions{cohort(request)}: {described}",
    )
