"""Prometheus history as the signals read it: an instant query at any replayed step, answered from range queries.

The backtest measures each step with the operator's own `modelmonitor.signals.measure`, which asks a
`PrometheusQuerier` for instant queries at one time. `History` is that querier over the past: the first time a
query text is asked for at a step, it fetches a whole chunk of steps of that text with one ``query_range`` and
answers the following steps from it. A range query's point at a step is, by Prometheus' definition, what an
instant query at that time returns (same lookback, same ``increase()`` extrapolation), so the signals see exactly
the numbers the operator would have seen live; only one request per query text and chunk goes out instead of
one per step.

Where Prometheus refuses the range query, each step of that query text is an instant query with ``time=``,
exactly as live. Mostly because a range query cannot express it: ``query_range`` takes only expressions that
return an instant vector or a scalar, and a `query:` template may return a range vector (``metric[5m]``, which
the operator accepts and reduces). Also when a range is too heavy for the server (its sample limit or query
timeout) while single steps are not, and for a template Prometheus cannot parse, whose instant queries are then
refused at every step, an Error for that policy as live. Such queries are listed in `History.instant_only` with
Prometheus' reason, and the report says so.

A Prometheus that cannot be reached or answers with an HTTP error is not history: the backtest stops with
`HistoryError` instead of replaying an outage that never happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from modelmonitor.adapters.prometheus import ErrorKind, QueryResult, Sample

#: Steps fetched per range query: well under Prometheus' 11,000 points per series, small enough that a
#: fleet-wide batched query (every model's series) stays a few megabytes.
CHUNK_STEPS = 720


class RangeQuerier(Protocol):
    """What `History` needs of a Prometheus client (`modelmonitor.adapters.prometheus.PrometheusClient`)."""

    def query(self, promql: str, *, at: datetime | None = None) -> QueryResult: ...

    def query_range(self, promql: str, *, start: datetime, end: datetime, step_seconds: float) -> QueryResult: ...


class HistoryError(Exception):
    """Prometheus could not give the history (unreachable, an HTTP error, an answer of the wrong shape)."""


@dataclass(frozen=True)
class Grid:
    """The replayed steps: ``start``, ``start + step``, ... up to ``end`` (inclusive)."""

    start: datetime
    end: datetime
    step_seconds: float

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("the backtest range needs timezone-aware times")
        if self.step_seconds <= 0:
            raise ValueError(f"step {self.step_seconds:g}s: expected a positive step")
        if self.end < self.start:
            raise ValueError("the backtest range ends before it starts")

    @classmethod
    def aligned(cls, start: datetime, end: datetime, step_seconds: float) -> Grid:
        """The steps at multiples of ``step_seconds`` (Unix time) within [start, end]: the times the operator's
        loop evaluates a monitor whose interval is the step (it aligns intervals to the wall clock)."""
        first = -(-int(start.timestamp()) // int(step_seconds)) * int(step_seconds)
        last = int(end.timestamp()) // int(step_seconds) * int(step_seconds)
        return cls(datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(max(first, last), UTC), step_seconds)

    def __len__(self) -> int:
        return int((self.end - self.start).total_seconds() // self.step_seconds) + 1

    def at(self, index: int) -> datetime:
        return self.start + timedelta(seconds=index * self.step_seconds)

    def index(self, moment: datetime) -> int:
        """The position of ``moment`` on the grid; ValueError when it is not one of the steps."""
        offset = (moment - self.start).total_seconds() / self.step_seconds
        index = round(offset)
        if abs(offset - index) > 1e-6 or not 0 <= index < len(self):
            raise ValueError(f"{moment.isoformat()} is not a step of the backtest")
        return index


@dataclass
class _Chunk:
    number: int
    #: Samples by step index (steps where the query has no series are absent: an empty answer).
    steps: dict[int, list[Sample]] = field(default_factory=dict)


class History:
    """A `PrometheusQuerier` over the past, for the steps of ``grid`` only. Not thread-safe: measure with
    ``max_parallel=1``. Keeps one chunk per query text in memory (the replay moves forward)."""

    def __init__(self, prometheus: RangeQuerier, grid: Grid, *, chunk_steps: int = CHUNK_STEPS) -> None:
        self.prometheus = prometheus
        self.grid = grid
        self.chunk_steps = chunk_steps
        self._chunks: dict[str, _Chunk] = {}
        #: Query texts answered by instant queries at each step, with Prometheus' reason.
        self.instant_only: dict[str, str] = {}
        self.range_queries = 0
        self.instant_queries = 0
        #: Steps at which at least one query had at least one series.
        self.steps_with_data: set[int] = set()

    def query(self, promql: str, *, at: datetime | None = None) -> QueryResult:
        """The answer of ``promql`` at step ``at`` (required: a backtest has no "now")."""
        if at is None:
            raise ValueError("a backtest query needs the step's time")
        index = self.grid.index(at)
        if promql in self.instant_only:
            return self._instant(promql, at, index)
        number = index // self.chunk_steps
        chunk = self._chunks.get(promql)
        if chunk is None or chunk.number != number:
            chunk = self._fetch(promql, number)
            if chunk is None:
                return self._instant(promql, at, index)
            self._chunks[promql] = chunk
        samples = chunk.steps.get(index, [])
        if samples:
            self.steps_with_data.add(index)
        return QueryResult(query=promql, result_type="vector", samples=tuple(samples))

    def _fetch(self, promql: str, number: int) -> _Chunk | None:
        """One chunk of ``promql`` from a range query; None when Prometheus refuses it (instant queries then)."""
        first = number * self.chunk_steps
        last = min(len(self.grid), first + self.chunk_steps) - 1
        answer = self.prometheus.query_range(
            promql, start=self.grid.at(first), end=self.grid.at(last), step_seconds=self.grid.step_seconds
        )
        self.range_queries += 1
        if answer.error is not None:
            _raise_unless_refused(answer)
            self.instant_only[promql] = answer.error.message
            return None
        chunk = _Chunk(number)
        for sample in answer.samples:
            index = self.grid.index(datetime.fromtimestamp(sample.timestamp, UTC))
            chunk.steps.setdefault(index, []).append(Sample(sample.labels, sample.value, sample.timestamp))
        return chunk

    def _instant(self, promql: str, at: datetime, index: int) -> QueryResult:
        answer = self.prometheus.query(promql, at=at)
        self.instant_queries += 1
        _raise_unless_refused(answer)
        if answer.samples:
            self.steps_with_data.add(index)
        return answer

    def stats(self) -> Mapping[str, object]:
        """How the history was read, for the report."""
        return {
            "rangeQueries": self.range_queries,
            "instantQueries": self.instant_queries,
            "instantOnly": [{"query": q, "reason": r} for q, r in self.instant_only.items()],
        }


def _raise_unless_refused(answer: QueryResult) -> None:
    """A PromQL refusal is an answer (instant queries then, an Error if they are refused too, as live); anything
    else means no history at all."""
    error = answer.error
    if error is not None and error.kind is not ErrorKind.PROMQL:
        raise HistoryError(f"cannot read the history from Prometheus: {error}")
