"""`query:` policies: the user's PromQL template, rendered per monitor (one query each)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelmonitor.policy.model import Measurement
from modelmonitor.promql import PromQLTemplateError, render_template
from modelmonitor.signals.answers import Index, Plan, values
from modelmonitor.signals.request import SignalRequest


def plan(request: SignalRequest, window: str) -> Plan | Measurement:
    """The rendered template, or Invalid naming what is wrong with it.

    ``spec.model.labels`` are not added: the template is the user's PromQL, which names its own matchers.
    """
    assert request.query is not None
    placeholders = {
        "model": request.model,
        "namespace": request.namespace,
        "version": request.version,
        "monitor": request.monitor,
        "window": window,
    }
    try:
        text = render_template(request.query, placeholders)
    except PromQLTemplateError as problem:
        return Measurement.invalid(str(problem))
    return Plan((text,), _compute)


def _compute(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    samples = answers[0].all_values()
    if not samples:
        return Measurement.no_data("the query returned no series")
    usable = [sample for sample in samples if not math.isnan(sample.value)]
    if not usable:
        return Measurement.no_data(f"the query returned only NaN ({len(samples)} series)")
    return values([s.value for s in usable], None, labels=[s.labels for s in usable])
