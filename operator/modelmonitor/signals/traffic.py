"""errorRate and latencyP50/P95/P99 from the sidecar's request counters and latency histogram."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from modelmonitor.metricnames import REQUEST_DURATION, REQUEST_ERRORS, REQUESTS
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, count, describe, no_series, sum_by, values
from modelmonitor.signals.request import SignalRequest

LATENCY_QUANTILES: Mapping[str, float] = {"latencyP50": 0.5, "latencyP95": 0.95, "latencyP99": 0.99}
SIGNALS = ("errorRate", *LATENCY_QUANTILES)


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan:
    """errorRate: errors, then requests. Latency: the quantile, then the requests (the ``+Inf`` bucket).

    When the batch names no extra labels, each group of the answer is exactly one monitor's selection, and
    Prometheus computes the quantile (``histogram_quantile`` over the summed buckets): one series per model
    instead of one per bucket (a tenth of the series with the sidecar's 15 buckets). A batch with extra labels is
    grouped by them, and a monitor that names fewer of them needs the quantile of the merged histogram, which no
    per-group quantile can give: its bucket counts are fetched (one query serves the three quantiles) and the
    quantile is computed here, as Prometheus would.
    """
    by = grouping.by()
    if request.signal == "errorRate":
        return Plan(
            (
                f"sum by ({by}) (increase({grouping.select(REQUEST_ERRORS)}[{window}]))",
                f"sum by ({by}) (increase({grouping.select(REQUESTS)}[{window}]))",
            ),
            _compute_error_rate,
        )
    buckets = f"sum by ({grouping.by('le')}) (increase({grouping.select(REQUEST_DURATION + '_bucket')}[{window}]))"
    if grouping.extra:
        return Plan((buckets,), _compute_latency)
    assert request.signal is not None
    everything = grouping.select(REQUEST_DURATION + "_bucket", 'le="+Inf"')
    requests_seen = f"sum by ({by}) (increase({everything}[{window}]))"
    return Plan(
        (f"histogram_quantile({LATENCY_QUANTILES[request.signal]}, {buckets})", requests_seen),
        _read_latency,
    )


def _compute_error_rate(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    requests_seen = [s.value for s in answers[1].select(request) if not math.isnan(s.value)]
    if not requests_seen:
        return no_series(request, REQUESTS)
    total = sum(requests_seen)
    if total <= 0:
        return Measurement.no_data(f"errorRate: no requests for {describe(request)} over {request.window}")
    errors = sum(s.value for s in answers[0].select(request) if not math.isnan(s.value))
    return values([errors / total], count(total), f"{errors:.0f} errors in {total:.0f} requests")


def histogram_quantile(q: float, cumulative: Mapping[float, float]) -> float:
    """The ``q`` quantile of a histogram given as cumulative counts by upper bound, as Prometheus computes it.

    Linear interpolation inside the bucket that holds the rank; the lowest bucket starts at 0 (when its bound is
    positive); a rank in the ``+Inf`` bucket gives the highest finite bound. NaN without a ``+Inf`` bucket or
    observations. Counts are made monotonic first (each bucket's ``increase()`` is extrapolated on its own).
    """
    if math.inf not in cumulative or len(cumulative) < 2:
        return math.nan
    bounds = sorted(cumulative)
    counts: list[float] = []
    for bound in bounds:
        counts.append(max(cumulative[bound], counts[-1] if counts else 0.0))
    observations = counts[-1]
    if observations <= 0 or math.isnan(observations):
        return math.nan
    rank = q * observations
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, in_bucket = 0.0, counts[b]
    if b > 0:
        start = bounds[b - 1]
        in_bucket -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (bounds[b] - start) * (rank / in_bucket)


def _compute_latency(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    buckets = answers[0].select(request)
    if not buckets:
        return no_series(request, f"{REQUEST_DURATION}_bucket")
    cumulative: dict[float, float] = {}
    for le, total in sum_by(buckets, "le").items():
        try:
            cumulative[float(le)] = total
        except ValueError:
            continue
    observations = cumulative.get(math.inf, 0.0)
    if observations <= 0:
        return Measurement.no_data(f"{request.signal}: no requests for {describe(request)} over {request.window}")
    assert request.signal is not None
    value = histogram_quantile(LATENCY_QUANTILES[request.signal], cumulative)
    if math.isnan(value):
        return Measurement.no_data(f"{request.signal}: the latency histogram of {describe(request)} has no buckets")
    return values([value], count(observations), f"{observations:.0f} requests over {request.window}")


def _read_latency(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    """The quantile Prometheus computed for the monitor's group, with the requests behind it."""
    totals = [s.value for s in answers[1].select(request) if not math.isnan(s.value)]
    if not totals:
        return no_series(request, f"{REQUEST_DURATION}_bucket")
    observations = sum(totals)
    if observations <= 0:
        return Measurement.no_data(f"{request.signal}: no requests for {describe(request)} over {request.window}")
    quantiles = [s.value for s in answers[0].select(request) if not math.isnan(s.value)]
    if len(quantiles) != 1:
        return Measurement.no_data(f"{request.signal}: the latency histogram of {describe(request)} has no buckets")
    return values(quantiles, count(observations), f"{observations:.0f} requests over {request.window}")
