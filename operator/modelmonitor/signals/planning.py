"""Which queries a request needs: one plan per signal kind, shared by every monitor of the batch."""

from __future__ import annotations

from collections.abc import Sequence

from modelmonitor.api.spec import DRIFT_SIGNALS, LABEL_DELAY_SIGNALS
from modelmonitor.policy.model import Measurement
from modelmonitor.promql import validate_window
from modelmonitor.signals import (
    coverage,
    dataquality,
    drift,
    estimated,
    fairness,
    multiclass,
    quality,
    regression,
    resources,
    template,
    traffic,
)
from modelmonitor.signals.answers import Grouping, Plan, Restriction
from modelmonitor.signals.request import BUILTIN_SIGNALS, SignalRequest

_PLANNERS = {
    **dict.fromkeys(quality.SIGNALS, quality.plan),
    **dict.fromkeys(fairness.SIGNALS, fairness.plan),
    **dict.fromkeys(traffic.SIGNALS, traffic.plan),
    **dict.fromkeys(dataquality.SIGNALS, dataquality.plan),
    **dict.fromkeys(resources.SIGNALS, resources.plan),
    **dict.fromkeys(drift.SIGNALS, drift.plan),
    **dict.fromkeys(coverage.SIGNALS, coverage.plan),
    **dict.fromkeys(multiclass.SIGNALS, multiclass.plan),
    **dict.fromkeys(regression.SIGNALS, regression.plan),
    **dict.fromkeys(estimated.SIGNALS, estimated.plan),
}


def extra_labels(requests: Sequence[SignalRequest]) -> tuple[str, ...]:
    """The union of the ``spec.model.labels`` names of the batch's built-in requests, sorted: every batched
    query groups by them, so one query per signal kind serves monitors that narrow by different labels."""
    return tuple(sorted({name for request in requests if request.signal is not None for name, _ in request.labels}))


def plan(request: SignalRequest, extra: Sequence[str], only: Restriction | None = None) -> Plan | Measurement:
    """The queries ``request`` needs and how to turn their answers into its measurement; or why it is Invalid.

    ``only`` restricts a built-in signal's queries to some models (a part of a split query); ``None`` asks for
    every model's series."""
    if (request.signal is None) == (request.query is None):
        return Measurement.invalid("set exactly one of signal and query")
    try:
        window = validate_window(request.window)
    except ValueError as problem:
        return Measurement.invalid(str(problem))
    if request.min_samples < 0:
        return Measurement.invalid(f"minSamples {request.min_samples}: expected >= 0")
    if request.query is not None:
        return template.plan(request, window)

    signal = request.signal
    planner = _PLANNERS.get(signal or "")
    if planner is None:
        return Measurement.invalid(f"signal {signal!r}: expected one of {', '.join(BUILTIN_SIGNALS)}")
    if request.label_delay is not None:
        if signal not in LABEL_DELAY_SIGNALS:
            return Measurement.invalid(f"labelDelay: only {', '.join(LABEL_DELAY_SIGNALS)} takes a label delay")
        try:
            validate_window(request.label_delay)
        except ValueError as problem:
            return Measurement.invalid(f"labelDelay: {problem}")
    if request.auto_threshold and signal not in DRIFT_SIGNALS:
        return Measurement.invalid(f"threshold auto: only {' and '.join(DRIFT_SIGNALS)} have a calibrated threshold")
    return planner(request, Grouping.of(request, extra, version=signal in DRIFT_SIGNALS, only=only), window)
