"""Turn one measurement into one outcome: OK, Breach, NoData, Error or Invalid.

The rules, in the order they are applied:

1. Error and Invalid answers stay what they are: "could not measure" is never "measured and fine" nor
   "measured and bad" (Argo Rollouts keeps Error apart from Failed for the same reason).
2. A policy whose ``threshold: auto`` is not calibrated yet is NoData: there is nothing to compare with.
   The ``noData`` setting does not apply to it (it is about missing measurements, not a missing threshold).
3. Series with a non-finite value (NaN, +/-Inf) or fewer samples than ``minSamples`` (or an unknown count when
   ``minSamples`` is set) are left out. If nothing is left, the outcome is NoData (KEDA once read an empty
   answer as 0 and scaled production down during a Prometheus outage; we never invent a number).
4. The remaining series are reduced to one value with ``reduce``; ``any``/``all`` pick the worst/best series
   for the policy's direction, so ``any`` breaches when one series does and ``all`` only when every one does.
   Without ``reduce`` the worst series decides, as with ``any`` (the lowest for ``<``/``<=``, the highest for
   ``>``/``>=``). The reason names the series that decided by its labels.
5. Hysteresis: while the policy is Firing or Resolving (also when that episode is held by NoData/Error), the
   ``clearThreshold`` is the threshold in force, so a value between threshold and clearThreshold keeps it
   breaching.
6. NoData then becomes OK or Breach when the policy says ``noData: ok`` or ``noData: breach``.

The reason of a judged value ends with the measurement's ``detail`` (what the value is made of: the drift
method and worst feature, the groups compared), which the policy's status message then shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from modelmonitor.policy.model import (
    Measurement,
    MeasurementKind,
    NoDataPolicy,
    Reduce,
    Rule,
    Series,
)


class OutcomeKind(StrEnum):
    """The verdict on one measurement (the ``lastOutcome`` of a policy in status)."""

    OK = "OK"
    BREACH = "Breach"
    NO_DATA = "NoData"
    ERROR = "Error"
    INVALID = "Invalid"


@dataclass(frozen=True)
class Outcome:
    """The verdict with the facts behind it.

    ``threshold`` is the threshold in force (the clear threshold while firing, the calibrated one for
    ``auto``); ``value`` and ``samples`` are those of the series that decided. ``no_data_substituted`` is True
    when ``noData: ok|breach`` turned missing data into this OK/Breach.
    """

    kind: OutcomeKind
    value: float | None
    threshold: float | None
    samples: int | None
    reason: str
    series_used: int = 0
    series_total: int = 0
    no_data_substituted: bool = False

    @property
    def is_judgement(self) -> bool:
        """True for OK and Breach: the outcomes that may move the state machine."""
        return self.kind in (OutcomeKind.OK, OutcomeKind.BREACH)


def threshold_in_force(rule: Rule, *, clearing: bool) -> float | None:
    """The threshold the value is compared with: ``clearThreshold`` while clearing a firing policy."""
    if clearing and rule.clear_threshold is not None:
        return rule.clear_threshold
    return rule.threshold


def _num(value: float) -> str:
    return f"{value:.6g}"


def _pick(series: list[Series], rule: Rule) -> tuple[float, int | None, Series | None]:
    """Reduce usable series to (value, samples, deciding series) per the rule.

    Samples are those of the deciding series; ``avg`` has no deciding series (None) and sums the samples.
    """
    values = [s.value for s in series]
    if rule.reduce is Reduce.AVG:
        counts = [s.samples for s in series]
        total = None if any(c is None for c in counts) else sum(c for c in counts if c is not None)
        return math.fsum(values) / len(values), total, None
    worst_is_max = rule.op.higher_is_worse
    if rule.reduce is Reduce.MAX:
        take_max = True
    elif rule.reduce is Reduce.MIN:
        take_max = False
    elif rule.reduce is Reduce.ALL:
        take_max = not worst_is_max  # the least breaching series decides: all must breach
    else:
        # ANY, and no reduce at all: the most breaching series decides, so one failing series is never hidden
        # behind healthy ones.
        take_max = worst_is_max
    chosen = max(series, key=lambda s: s.value) if take_max else min(series, key=lambda s: s.value)
    return chosen.value, chosen.samples, chosen


def _reduce_text(rule: Rule, used: int, total: int, decided_by: Series | None) -> str:
    """How several series became one value, and which series decided (by its labels, when it has any)."""
    if rule.reduce is None:
        # No reduce: the worst series, named by its direction so the reader sees why it was picked.
        text = f"{'highest' if rule.op.higher_is_worse else 'lowest'} of {used} of {total} series"
    else:
        text = f"reduce {rule.reduce.value} over {used} of {total} series"
    if decided_by is not None and decided_by.labels:
        text += f": {decided_by.label_text()}"
    return text


def _no_data(rule: Rule, reason: str, threshold: float | None, total: int) -> Outcome:
    """NoData, or OK/Breach when the policy says so with ``noData``."""
    if rule.no_data is NoDataPolicy.OK:
        return Outcome(
            OutcomeKind.OK, None, threshold, None, f"no data ({reason}); counted as OK (noData: ok)", 0, total, True
        )
    if rule.no_data is NoDataPolicy.BREACH:
        return Outcome(
            OutcomeKind.BREACH,
            None,
            threshold,
            None,
            f"no data ({reason}); counted as a breach (noData: breach)",
            0,
            total,
            True,
        )
    return Outcome(OutcomeKind.NO_DATA, None, threshold, None, f"no data: {reason}", 0, total)


def classify(rule: Rule, measurement: Measurement, *, clearing: bool = False) -> Outcome:
    """The outcome of ``measurement`` for ``rule``.

    ``clearing`` is True while the policy's episode is Firing or Resolving: then the clear threshold decides
    (`PolicyState.clearing` gives it). Pure: no clock, no I/O.
    """
    if measurement.kind is MeasurementKind.ERROR:
        return Outcome(OutcomeKind.ERROR, None, None, None, f"could not measure: {measurement.reason or 'error'}")
    if measurement.kind is MeasurementKind.INVALID:
        return Outcome(
            OutcomeKind.INVALID, None, None, None, f"unusable answer: {measurement.reason or 'invalid shape'}"
        )
    threshold = threshold_in_force(rule, clearing=clearing)
    if measurement.kind is MeasurementKind.NO_DATA:
        return _no_data(rule, measurement.reason or "empty answer", threshold, 0)
    if threshold is None:
        # Not subject to noData: a missing calibration is our own gap, not the model's.
        return Outcome(
            OutcomeKind.NO_DATA,
            None,
            None,
            None,
            "no data: threshold 'auto' is not calibrated yet",
            0,
            len(measurement.series),
        )

    total = len(measurement.series)
    if total == 0:
        return _no_data(rule, "the query returned no series", threshold, 0)
    finite = [s for s in measurement.series if math.isfinite(s.value)]
    usable = [s for s in finite if rule.min_samples == 0 or (s.samples is not None and s.samples >= rule.min_samples)]
    if not usable:
        if not finite:
            what = "the value is NaN or infinite" if total == 1 else f"all {total} series are NaN or infinite"
        else:
            counts = [s.samples for s in finite if s.samples is not None]
            seen = f"at most {max(counts)}" if counts else "an unknown number of"
            what = f"{seen} samples, fewer than minSamples {rule.min_samples}"
            if total > 1:
                what = f"{len(finite)} of {total} series finite, each with {what}"
        if measurement.detail:
            what += f"; {measurement.detail}"
        return _no_data(rule, what, threshold, total)

    value, samples, decided_by = _pick(usable, rule)
    breach = rule.op.holds(value, threshold)
    if breach:
        verdict = f"value {_num(value)} {rule.op.value} {_num(threshold)}"
    else:
        verdict = f"value {_num(value)} is not {rule.op.value} {_num(threshold)}"
    if clearing and rule.clear_threshold is not None:
        verdict += " (clearThreshold)"
    details = []
    if rule.window:
        details.append(f"window {rule.window}")
    if samples is not None:
        details.append(f"{samples} samples")
    if total > 1:
        details.append(_reduce_text(rule, len(usable), total, decided_by))
    reason = verdict + (f" ({', '.join(details)})" if details else "")
    if measurement.detail:
        # What the value is made of (the drift method and worst feature, the groups compared).
        reason += f"; {measurement.detail}"
    kind = OutcomeKind.BREACH if breach else OutcomeKind.OK
    return Outcome(kind, value, threshold, samples, reason, len(usable), total)
