"""Measuring one cycle: plan every request, send each distinct query once, split the answers per monitor."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

from modelmonitor.adapters.prometheus import PrometheusQuerier, QueryResult
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Index, Plan
from modelmonitor.signals.planning import extra_labels, plan
from modelmonitor.signals.request import CycleMeasurements, SignalRequest


def measure(
    requests: Iterable[SignalRequest],
    prometheus: PrometheusQuerier,
    *,
    at: datetime | None = None,
    max_parallel: int = 4,
) -> CycleMeasurements:
    """Measure every request against one Prometheus, built-in signals batched across monitors.

    All queries are evaluated at the same instant ``at`` (now when ``None``) so that a ratio computed from two
    queries compares the same window. Up to ``max_parallel`` queries are in flight at once. Blocking: call
    from a worker thread in async code.
    """
    at = at if at is not None else datetime.now(UTC)
    unique = list(dict.fromkeys(requests))
    extra = extra_labels(unique)
    plans: dict[SignalRequest, Plan | Measurement] = {}
    batched: dict[str, None] = {}
    templated: dict[str, None] = {}
    # A built-in signal's plan depends only on these fields, not on the monitor: plan each kind once.
    shared: dict[tuple[object, ...], Plan | Measurement] = {}
    for request in unique:
        if request.signal is not None and request.query is None:
            key = (
                request.signal,
                request.window,
                request.version is not None,
                request.auto_threshold,
                request.drift_method,
                request.min_samples < 0,
                request.label_delay,
            )
            known = shared.get(key)
            planned = known if known is not None else shared.setdefault(key, plan(request, extra))
        else:
            planned = plan(request, extra)
        plans[request] = planned
        if isinstance(planned, Plan):
            target = templated if request.query is not None else batched
            for text in planned.queries:
                target.setdefault(text, None)

    texts = list(dict.fromkeys([*batched, *templated]))
    answers: dict[str, QueryResult] = {}
    if texts:
        workers = max(1, min(max_parallel, len(texts)))
        if workers == 1:
            for text in texts:
                answers[text] = prometheus.query(text, at=at)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promql") as pool:
                for text, answer in zip(texts, pool.map(lambda q: prometheus.query(q, at=at), texts), strict=True):
                    answers[text] = answer

    indexes = {text: Index(answer) for text, answer in answers.items()}
    results: dict[SignalRequest, Measurement] = {}
    for request, planned in plans.items():
        if isinstance(planned, Measurement):
            results[request] = planned
            continue
        failed = [answers[text] for text in planned.queries if not answers[text].ok]
        warnings = tuple(dict.fromkeys(w for text in planned.queries for w in answers[text].warnings))
        if failed:
            error = failed[0].error
            assert error is not None
            measured = Measurement.error(str(error))
        else:
            measured = planned.compute(request, [indexes[text] for text in planned.queries])
        results[request] = replace(measured, query=planned.queries[0], queries=planned.queries, warnings=warnings)

    return CycleMeasurements(
        results=results,
        batched_queries=sum(1 for text in batched if text not in templated),
        template_queries=len(templated),
        failed_queries=sum(1 for answer in answers.values() if not answer.ok),
        query_seconds=sum(answer.elapsed_seconds for answer in answers.values()),
    )
