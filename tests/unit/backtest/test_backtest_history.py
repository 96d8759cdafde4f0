"""History: instant queries at replayed steps answered from chunked range queries, instant queries where a range
query cannot express the query, and failures kept apart (a refusal is an answer, an unreachable server stops)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelmonitor.adapters.prometheus import ErrorKind, QueryError, QueryResult, Sample
from modelmonitor.backtest.history import Grid, History, HistoryError

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
RANGE_VECTOR = 'Prometheus refused the query (bad_data): invalid expression type "range vector" for range query'


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


class Recorded:
    """A Prometheus client in a table: the value of every query at every minute is ``minute * 10`` except at the
    minutes in ``missing``; records what was asked."""

    def __init__(self, missing: tuple[int, ...] = (), error: QueryError | None = None) -> None:
        self.missing = missing
        self.error = error
        self.ranges: list[tuple[str, datetime, datetime]] = []
        self.instants: list[tuple[str, datetime | None]] = []

    def _value(self, moment: datetime) -> float:
        return (moment - T0).total_seconds() / 60 * 10

    def query(self, promql: str, *, at: datetime | None = None) -> QueryResult:
        self.instants.append((promql, at))
        assert at is not None
        if self.error is not None:
            return QueryResult(promql, error=self.error)
        return QueryResult(promql, "matrix", (Sample({"model": "m"}, self._value(at), at.timestamp()),))

    def query_range(self, promql: str, *, start: datetime, end: datetime, step_seconds: float) -> QueryResult:
        self.ranges.append((promql, start, end))
        if self.error is not None:
            return QueryResult(promql, error=self.error)
        if promql.endswith("]"):
            return QueryResult(promql, error=QueryError(ErrorKind.PROMQL, RANGE_VECTOR, 400, "bad_data"))
        samples = []
        moment = start
        while moment <= end:
            if round((moment - T0).total_seconds() / 60) not in self.missing:
                samples.append(Sample({"model": "m"}, self._value(moment), moment.timestamp()))
            moment += timedelta(seconds=step_seconds)
        return QueryResult(promql, "matrix", tuple(samples))


def test_each_step_gets_the_range_answer_at_its_time_one_range_query_per_chunk() -> None:
    prometheus = Recorded(missing=(3,))
    history = History(prometheus, Grid(at(0), at(9), 60), chunk_steps=4)
    answers = [history.query("up", at=at(i)) for i in range(10)]
    assert [a.values for a in answers] == [(i * 10.0,) if i != 3 else () for i in range(10)]
    assert [(start, end) for _, start, end in prometheus.ranges] == [(at(0), at(3)), (at(4), at(7)), (at(8), at(9))]
    assert prometheus.instants == [] and history.steps_with_data == set(range(10)) - {3}


def test_a_range_vector_is_read_with_instant_queries_and_reported() -> None:
    prometheus = Recorded()
    history = History(prometheus, Grid(at(0), at(2), 60))
    answers = [history.query("up[5m]", at=at(i)) for i in range(3)]
    assert [a.values for a in answers] == [(0.0,), (10.0,), (20.0,)]
    assert len(prometheus.ranges) == 1 and [t for _, t in prometheus.instants] == [at(0), at(1), at(2)]
    assert history.stats()["instantOnly"] == [{"query": "up[5m]", "reason": RANGE_VECTOR}]


def test_a_query_refused_at_every_step_is_an_error_at_every_step_as_live() -> None:
    refused = QueryError(ErrorKind.PROMQL, "Prometheus refused the query (bad_data): parse error", 400, "bad_data")
    prometheus = Recorded(error=refused)
    history = History(prometheus, Grid(at(0), at(1), 60))
    assert [history.query("up(", at=at(i)).error for i in range(2)] == [refused, refused]
    assert len(prometheus.ranges) == 1 and len(prometheus.instants) == 2


def test_an_unreachable_prometheus_stops_the_backtest() -> None:
    down = QueryError(ErrorKind.CONNECTION, "cannot connect to http://prom:9090/api/v1/query_range")
    history = History(Recorded(error=down), Grid(at(0), at(1), 60))
    with pytest.raises(HistoryError, match="cannot read the history from Prometheus: connection: cannot connect"):
        history.query("up", at=at(0))


def test_a_time_off_the_grid_is_a_bug_not_a_guess() -> None:
    history = History(Recorded(), Grid(at(0), at(2), 60))
    with pytest.raises(ValueError, match="not a step"):
        history.query("up", at=at(0) + timedelta(seconds=30))
    with pytest.raises(ValueError, match="needs the step's time"):
        history.query("up")


@pytest.mark.parametrize(
    ("start", "end", "first", "last", "steps"),
    [
        (at(0), at(10), at(0), at(10), 11),
        (at(0) + timedelta(seconds=1), at(10) - timedelta(seconds=1), at(1), at(9), 9),
    ],
)
def test_steps_align_to_the_interval_as_the_loop_does(
    start: datetime, end: datetime, first: datetime, last: datetime, steps: int
) -> None:
    grid = Grid.aligned(start, end, 60)
    assert (grid.start, grid.end, len(grid)) == (first, last, steps)
