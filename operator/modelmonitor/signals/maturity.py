"""labelDelay on the label-based signals other than labelCoverage: judge the maturity cohort.

A sidecar started with ``--label-maturity 1d`` counts each label a second time, into the same outcome counters
under a ``matured_`` name and ``maturity="1d"``, when its prediction turns 1d old, if the label joined by then
(later labels count in ``modelmonitor_labels_late_total``). The window's increase of those counters is then the
predictions made one window earlier, ``labelDelay`` before now, judged on the labels that reached them within
``labelDelay``: a cohort in which labels that come fast (often positives) are not over-represented, as they are
among labels that merely joined in the window. ``labelDelay`` must name a maturity the sidecars count (the
durations are compared in their normalized form: ``24h`` selects ``1d``).
"""

from __future__ import annotations

from modelmonitor.durations import normalized
from modelmonitor.policy.model import Measurement
from modelmonitor.promql import quote, selector
from modelmonitor.signals.answers import Grouping, describe, no_series
from modelmonitor.signals.request import SignalRequest


def maturity(request: SignalRequest) -> str | None:
    """The ``maturity`` label value the request reads, or None for counts as labels join."""
    return None if request.label_delay is None else normalized(request.label_delay)


def series(request: SignalRequest, grouping: Grouping, joined: str, matured: str) -> str:
    """The series to sum: ``joined`` as labels join, or ``matured{maturity="..."}`` with a labelDelay (with the
    grouping's restriction to some models when the query is split)."""
    age = maturity(request)
    return grouping.select(joined) if age is None else grouping.select(matured, f"maturity={quote(age)}")


def no_outcomes(request: SignalRequest, joined: str, matured: str) -> Measurement:
    """NoData when not one series of the counter exists, naming the flag to set when a cohort was asked for."""
    age = maturity(request)
    if age is None:
        return no_series(request, joined)
    return Measurement.no_data(
        f"no matured outcomes at {age} ({selector(matured, {'maturity': age})}) for {describe(request)} over "
        f"{request.window}: start the sidecars with --label-maturity {age} (and are they scraped?)"
    )


def cohort(request: SignalRequest) -> str:
    """For a measurement's detail: which predictions the counts are about."""
    age = maturity(request)
    return "" if age is None else f", predictions {age} old with their labels joined by then"
