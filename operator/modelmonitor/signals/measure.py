"""Measuring one cycle: plan every request, send each distinct query once (in parts when its answer would pass the
series budget, `split`), split the answers per monitor."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

from modelmonitor.adapters.prometheus import PrometheusQuerier, QueryResult, Sample
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Index, Plan, Restriction
from modelmonitor.signals.planning import extra_labels, plan
from modelmonitor.signals.request import CycleMeasurements, SignalRequest
from modelmonitor.signals.split import ModelKey, Part, SeriesBook, counting, model_of, total


def measure(
    requests: Iterable[SignalRequest],
    prometheus: PrometheusQuerier,
    *,
    at: datetime | None = None,
    max_parallel: int = 4,
    book: SeriesBook | None = None,
) -> CycleMeasurements:
    """Measure every request against one Prometheus, built-in signals batched across monitors.

    All queries are evaluated at the same instant ``at`` (now when ``None``) so that a ratio computed from two
    queries compares the same window. Up to ``max_parallel`` queries are in flight at once. With a ``book``
    (kept across cycles for this Prometheus), a batched query whose answer would hold more series than the
    book's budget is sent in parts restricted to the requests' models (`modelmonitor.signals.split`); without
    one, every batched query is sent whole. Blocking: call from a worker thread in async code.
    """
    at = at if at is not None else datetime.now(UTC)
    unique = list(dict.fromkeys(requests))
    extra = extra_labels(unique)
    plans: dict[SignalRequest, Plan | Measurement] = {}
    batched: dict[str, None] = {}
    templated: dict[str, None] = {}
    #: A request whose plan holds the batched query, and where: to plan the query again restricted to a part.
    origin: dict[str, tuple[SignalRequest, int]] = {}
    #: The models each batched query is asked for.
    wanted: dict[str, set[ModelKey]] = defaultdict(set)
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
            for position, text in enumerate(planned.queries):
                target.setdefault(text, None)
                if request.query is None:
                    origin.setdefault(text, (request, position))
                    wanted[text].add((request.namespace, request.model))

    def restricted(text: str, only: Restriction) -> str:
        request, position = origin[text]
        planned = plan(request, extra, only)
        assert isinstance(planned, Plan)  # it planned unrestricted, and the restriction changes no check
        return planned.queries[position]

    sent: list[QueryResult] = []
    splittable = [text for text in batched if text not in templated]
    parts: dict[str, list[Part]] = {}
    #: A failed count of a query's series: the error of every request that needs the query, which is not sent.
    uncounted: dict[str, QueryResult] = {}
    if book is not None:
        parts, uncounted = _split(book, splittable, wanted, restricted, prometheus, at, max_parallel, sent)

    texts = [text for text in dict.fromkeys([*batched, *templated]) if text not in parts and text not in uncounted]
    part_texts = {
        (text, i): restricted(text, part.restriction) for text, split in parts.items() for i, part in enumerate(split)
    }
    answers = _send(prometheus, [*texts, *dict.fromkeys(part_texts.values())], at, max_parallel, sent)

    # Per batched query: one index over every model's samples, and the answer each model's samples came from.
    indexes: dict[str, Index] = {}
    answer_of: dict[str, Mapping[ModelKey, QueryResult]] = {}
    whole_answer: dict[str, QueryResult] = {**uncounted}
    for text in texts:
        whole_answer[text] = answers[text]
        indexes[text] = Index(answers[text])
        if book is not None and text in wanted and answers[text].ok:
            book.learn(text, answers[text].samples, wanted[text], whole=True, counted=False)
    for text, split in parts.items():
        by_model: dict[ModelKey, QueryResult] = {}
        merged: list[Sample] = []
        noted: dict[str, None] = {}
        for i, part in enumerate(split):
            answer = answers[part_texts[(text, i)]]
            by_model.update(dict.fromkeys(part.models, answer))
            noted.update(dict.fromkeys(answer.warnings))
            if answer.ok:
                assert book is not None
                book.learn(text, answer.samples, part.models, whole=False, counted=False)
                own = set(part.models)
                # The cross product's other models are read from their own parts, so none is counted twice.
                merged.extend(sample for sample in answer.samples if model_of(sample) in own)
        answer_of[text] = by_model
        indexes[text] = Index(
            QueryResult(query=text, result_type="vector", samples=tuple(merged), warnings=tuple(noted))
        )
    if book is not None:
        book.forget_unused()

    def answer_for(text: str, request: SignalRequest) -> QueryResult:
        split = answer_of.get(text)
        return whole_answer[text] if split is None else split[(request.namespace, request.model)]

    results: dict[SignalRequest, Measurement] = {}
    for request, planned in plans.items():
        if isinstance(planned, Measurement):
            results[request] = planned
            continue
        mine = [answer_for(text, request) for text in planned.queries]
        failed = [answer for answer in mine if not answer.ok]
        warnings = tuple(dict.fromkeys(w for answer in mine for w in answer.warnings))
        if failed:
            error = failed[0].error
            assert error is not None
            measured = Measurement.error(str(error))
        else:
            measured = planned.compute(request, [indexes[text] for text in planned.queries])
        results[request] = replace(measured, query=planned.queries[0], queries=planned.queries, warnings=warnings)

    sent_templates = sum(1 for text in templated if text in answers)
    return CycleMeasurements(
        results=results,
        batched_queries=len(sent) - sent_templates,
        template_queries=sent_templates,
        failed_queries=sum(1 for answer in sent if not answer.ok),
        query_seconds=sum(answer.elapsed_seconds for answer in sent),
        largest_answer=max((len(answer.samples) for answer in sent), default=0),
        split_queries=len(parts),
    )


def _split(
    book: SeriesBook,
    texts: Sequence[str],
    wanted: Mapping[str, set[ModelKey]],
    restricted: Callable[[str, Restriction], str],
    prometheus: PrometheusQuerier,
    at: datetime,
    max_parallel: int,
    sent: list[QueryResult],
) -> tuple[dict[str, list[Part]], dict[str, QueryResult]]:
    """The parts of each batched query in ``texts`` whose answer would pass the budget; and the failed counts.

    First the size of each new query's whole answer; then, for those that do not fit, the size of each model
    asked for that is not known yet. Both cost queries in a query's first cycle only (and in the cycle a new
    model comes). A query whose count failed is not sent: the count's error is its answer.
    """
    uncounted: dict[str, QueryResult] = {}
    totals = {total(text): text for text in texts if not book.known(text)}
    for count_text, answer in _send(prometheus, list(totals), at, max_parallel, sent).items():
        if answer.ok:
            book.learn_total(totals[count_text], sum(int(s.value) for s in answer.samples))
        else:
            uncounted[totals[count_text]] = answer
    counts: dict[str, tuple[str, Part]] = {}
    for text in texts:
        if text not in uncounted and not book.fits(text):
            for part in book.counting_parts(text, wanted[text]):
                counts[counting(restricted(text, part.restriction))] = (text, part)
    for count_text, answer in _send(prometheus, list(counts), at, max_parallel, sent).items():
        text, part = counts[count_text]
        if answer.ok:
            book.learn(text, answer.samples, part.models, whole=False, counted=True)
        else:
            uncounted.setdefault(text, answer)
    parts: dict[str, list[Part]] = {}
    for text in texts:
        if text not in uncounted:
            split = book.plan(text, sorted(wanted[text]))
            if split is not None:
                parts[text] = split
    return parts, uncounted


def _send(
    prometheus: PrometheusQuerier, texts: Sequence[str], at: datetime, max_parallel: int, sent: list[QueryResult]
) -> dict[str, QueryResult]:
    """Send ``texts`` (distinct), ``max_parallel`` at a time; their answers by text, each also added to ``sent``."""
    answers: dict[str, QueryResult] = {}
    workers = max(1, min(max_parallel, len(texts)))
    if workers == 1:
        for text in texts:
            answers[text] = prometheus.query(text, at=at)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promql") as pool:
            for text, answer in zip(texts, pool.map(lambda q: prometheus.query(q, at=at), texts), strict=True):
                answers[text] = answer
    sent.extend(answers.values())
    return answers
