"""Measuring one cycle: plan every request, send each distinct query once (restricted to the requests' models, in
parts, when its answer would pass the series budget or those models are a small share of it: `split`), split the
answers per monitor."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
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
    book's budget, or whose answer the requests' models are a small share of (another replica measures the
    rest), is sent restricted to the requests' models, in parts (`modelmonitor.signals.split`); without one,
    every batched query is sent whole. Blocking: call from a worker thread in async code.
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
    #: For each text to send, whose answer it is: a whole query's (None), or the nth part of a split one's (two
    #: parts may be the same text).
    answers_for: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
    for text in texts:
        answers_for[text].append((text, None))
    for (text, i), part_text in part_texts.items():
        answers_for[part_text].append((text, i))
    part_answers: dict[str, dict[int, QueryResult]] = {text: {} for text in parts}

    # Per query: one index over every model's samples, and the answer each model's samples came from.
    indexes: dict[str, Index] = {}
    answer_of: dict[str, Mapping[ModelKey, QueryResult]] = {}
    whole_answer: dict[str, QueryResult] = {**uncounted}

    def answer_for(text: str, request: SignalRequest) -> QueryResult:
        split = answer_of.get(text)
        return whole_answer[text] if split is None else split[(request.namespace, request.model)]

    # The requests of each plan are measured as soon as the answers to its queries are in, while Prometheus
    # is still working on the others: every monitor of a fleet waits for the slowest query, not for it and then
    # for the measuring of every request.
    results: dict[SignalRequest, Measurement] = {}
    waiting: dict[tuple[str, ...], list[tuple[SignalRequest, Plan]]] = defaultdict(list)
    for request, planned in plans.items():
        if isinstance(planned, Measurement):
            results[request] = planned
        else:
            waiting[planned.queries].append((request, planned))
    needing: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for queries in waiting:
        for text in dict.fromkeys(queries):
            needing[text].append(queries)

    def measure_waiting(queries: tuple[str, ...]) -> None:
        for request, planned in waiting.pop(queries):
            mine = [answer_for(text, request) for text in queries]
            failed = [answer for answer in mine if not answer.ok]
            warnings = tuple(dict.fromkeys(w for answer in mine for w in answer.warnings))
            if failed:
                error = failed[0].error
                assert error is not None
                measured = Measurement.error(str(error))
            else:
                measured = planned.compute(request, [indexes[text] for text in queries])
            results[request] = measured.with_queries(queries, warnings)

    def answered(text: str) -> None:
        """``text`` has its whole answer (or every part's): measure the requests that waited only for it."""
        for queries in needing.pop(text, ()):
            if queries in waiting and all(t in whole_answer or t in answer_of for t in queries):
                measure_waiting(queries)

    for text in uncounted:
        answered(text)
    for sent_text, answer in _stream(prometheus, list(answers_for), at, max_parallel, sent):
        for text, nth in answers_for[sent_text]:
            if nth is None:
                whole_answer[text] = answer
                indexes[text] = Index(answer)
                if book is not None and text in wanted and answer.ok:
                    book.learn(text, answer.samples, wanted[text], whole=True, counted=False)
                answered(text)
                continue
            split, got = parts[text], part_answers[text]
            got[nth] = answer
            if len(got) < len(split):
                continue
            by_model: dict[ModelKey, QueryResult] = {}
            merged: list[Sample] = []
            noted: dict[str, None] = {}
            for j, part in enumerate(split):
                answer_j = got[j]
                by_model.update(dict.fromkeys(part.models, answer_j))
                noted.update(dict.fromkeys(answer_j.warnings))
                if answer_j.ok:
                    assert book is not None
                    book.learn(text, answer_j.samples, part.models, whole=False, counted=False)
                    own = set(part.models)
                    # The cross product's other models are read from their own parts, so none is counted twice.
                    merged.extend(sample for sample in answer_j.samples if model_of(sample) in own)
            answer_of[text] = by_model
            indexes[text] = Index(
                QueryResult(query=text, result_type="vector", samples=tuple(merged), warnings=tuple(noted))
            )
            answered(text)
    if book is not None:
        book.forget_unused()
    assert not waiting, "every query was answered, so every request was measured"
    results = {request: results[request] for request in plans}

    sent_templates = sum(1 for text in templated if text in whole_answer and text not in uncounted)
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
    return dict(_stream(prometheus, texts, at, max_parallel, sent))


def _stream(
    prometheus: PrometheusQuerier, texts: Sequence[str], at: datetime, max_parallel: int, sent: list[QueryResult]
) -> Iterator[tuple[str, QueryResult]]:
    """Send ``texts`` (distinct), ``max_parallel`` at a time; each answer as it comes in (added to ``sent``)."""
    workers = max(1, min(max_parallel, len(texts)))
    if workers == 1:
        for text in texts:
            answer = prometheus.query(text, at=at)
            sent.append(answer)
            yield text, answer
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promql") as pool:
        pending = {pool.submit(prometheus.query, text, at=at): text for text in texts}
        for future in as_completed(pending):
            answer = future.result()
            sent.append(answer)
            yield pending[future], answer
