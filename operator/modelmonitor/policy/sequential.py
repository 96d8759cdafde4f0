"""A policy with ``detection.sequential``: its measurement becomes the CUSUM statistic, judged against the boundary.

The raw measurement is first judged as the policy would judge it (``minSamples``, NaN, ``reduce``), so missing or
thin data never moves the statistic: it holds (NoData, Error) exactly like any policy. A usable value is
standardized (`modelmonitor.policy.cusum`), folded into the statistic once per window, and the policy then
compares the statistic with the boundary: ``value`` is the statistic, ``threshold`` the boundary, and ``for``,
``keepFiringFor``, NoData and the actions work as for any policy.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from modelmonitor.policy.cusum import CusumState, advance
from modelmonitor.policy.model import Measurement, MeasurementKind, NoDataPolicy, Op, Rule, Series
from modelmonitor.policy.outcome import classify
from modelmonitor.policy.timefmt import format_duration, format_time


def sequential_rule(rule: Rule, measurement: Measurement) -> Rule:
    """The rule that judges the statistic: breach while it is above the boundary."""
    assert rule.sequential is not None
    return replace(
        rule,
        op=Op.GT,
        threshold=rule.sequential.boundary,
        auto_threshold=False,
        clear_threshold=None,
        min_samples=0,
        reduce=None,
        query=measurement.query or rule.query,
    )


def sequential_measurement(
    rule: Rule, measurement: Measurement, prior: CusumState | None, now: datetime
) -> tuple[Measurement, CusumState | None]:
    """The statistic after this cycle's measurement, as a measurement of its own, and the state to keep."""
    sequential = rule.sequential
    assert sequential is not None
    if measurement.kind is not MeasurementKind.VALUES:
        return measurement, prior
    judged = classify(replace(rule.for_measurement(measurement), no_data=NoDataPolicy.HOLD), measurement)
    if not judged.is_judgement or judged.value is None:
        return Measurement.no_data(judged.reason.removeprefix("no data: ")), prior
    if sequential.reference_level is None:
        if measurement.standardized is None:
            return Measurement.invalid(
                "sequential detection without referenceLevel needs a signal with its own null distribution "
                "(dataDrift, predictionDrift)"
            ), prior
        z = measurement.standardized
    else:
        assert sequential.standard_deviation is not None
        sign = 1.0 if rule.op.higher_is_worse else -1.0
        z = sign * (judged.value - sequential.reference_level) / sequential.standard_deviation
    state = advance(sequential, prior, z, now)
    taken = "this window taken in" if state.updated_at == now else f"next window after {format_time(state.updated_at)}"
    detail = (
        f"CUSUM {state.statistic:.3g} against boundary {sequential.boundary:.3g} (at most one false alarm per "
        f"{format_duration(sequential.false_alarm_every_seconds)} without change; z {z:.2f}, allowance "
        f"{sequential.allowance:.2g}, {taken}); the window: {judged.reason}"
    )
    statistic = Measurement(
        MeasurementKind.VALUES,
        (Series(state.statistic, judged.samples),),
        query=measurement.query,
        queries=measurement.queries,
        detail=detail,
        warnings=measurement.warnings,
    )
    return statistic, state
