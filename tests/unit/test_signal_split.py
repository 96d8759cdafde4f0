"""Splitting a batched query by models so that no answer passes the series budget (`modelmonitor.signals.split`).

The parts are checked directly (every model in exactly one part, each part's answer within the budget counted by
brute force over the cross product of its namespaces and model names), and through `measure` against the fake
Prometheus of `test_signals`, wrapped to understand the two things a split adds: the restriction matchers and
``count by (namespace, model) (...)``.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pytest
from test_signals import AT, FakePrometheus, add_confusion, add_latency, request

from modelmonitor.adapters.prometheus import ErrorKind, QueryError, QueryResult, Sample
from modelmonitor.policy.model import MeasurementKind
from modelmonitor.promql import matches_any
from modelmonitor.signals import SeriesBook, SignalRequest, measure
from modelmonitor.signals.answers import Restriction
from modelmonitor.signals.planning import plan
from modelmonitor.signals.split import ModelKey, split

_COUNT = re.compile(r"^count (?:by \(namespace, model\) )?\((.*)\)$")
_MATCHER = re.compile(r'(namespace|model)(=~?)"((?:[^"\\]|\\.)*)"')
_RESTRICTION = re.compile(r'\{namespace=~?"(?:[^"\\]|\\.)*", model=~?"(?:[^"\\]|\\.)*"\}')


def _values(operator: str, text: str) -> set[str]:
    return set(re.sub(r"\\(.)", r"\1", text).replace("\\", "").split("|")) if operator == "=~" else {text}


@dataclass
class SplitAwarePrometheus:
    """`test_signals.FakePrometheus` plus restriction matchers (series of other models are dropped, as the
    selector would), ``count`` and ``count by (namespace, model)``; it notes every query and its answer's size."""

    fake: FakePrometheus = field(default_factory=FakePrometheus)
    asked: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    failing: dict[str, QueryError] = field(default_factory=dict)

    def query(self, promql: str, *, at: datetime | None = None) -> QueryResult:
        self.asked.append(promql)
        answer = self._evaluate(promql, at)
        self.sizes.append(len(answer.samples))
        return answer

    def _evaluate(self, promql: str, at: datetime | None) -> QueryResult:
        for fragment, error in self.failing.items():
            if fragment in promql:
                return QueryResult(query=promql, error=error)
        counted = _COUNT.match(promql)
        inner = counted.group(1) if counted else promql
        wanted = {label: _values(op, text) for label, op, text in _MATCHER.findall(inner)}
        answer = self.fake.query(_RESTRICTION.sub("", inner), at=at)
        samples = [s for s in answer.samples if all(s.labels.get(label) in values for label, values in wanted.items())]
        if counted and not promql.startswith("count by"):
            return QueryResult(query=promql, result_type="vector", samples=(Sample({}, float(len(samples)), 0.0),))
        if counted:
            per_model: dict[tuple[str, str], int] = {}
            for s in samples:
                key = (s.labels["namespace"], s.labels["model"])
                per_model[key] = per_model.get(key, 0) + 1
            samples = [Sample({"namespace": ns, "model": m}, float(n), 0.0) for (ns, m), n in per_model.items()]
        return QueryResult(query=promql, result_type="vector", samples=tuple(samples))


#: Monitors that name a label get the latency buckets (4 series per model), not Prometheus' quantile (1).
EU = (("cluster", "eu"),)


def latency_fleet(n: int, namespaces: int = 3) -> tuple[SplitAwarePrometheus, list[SignalRequest]]:
    """n models, each with a 4-bucket latency histogram and confusion counts (2 outcome series)."""
    prometheus = SplitAwarePrometheus()
    requests = []
    for i in range(n):
        ns, model = f"ns-{i % namespaces}", f"model-{i}"
        add_latency(prometheus.fake, ns, model, (10.0 * i, 20.0 * i, 30.0 * i, 30.0 * i + 1), cluster="eu")
        add_confusion(prometheus.fake, ns, model, "v1", tp=i + 1, tn=5, fp=3, fn=1)
        requests += [latency(ns, model), request("accuracy", ns=ns, model=model)]
    return prometheus, requests


def latency(ns: str, model: str) -> SignalRequest:
    return request("latencyP95", ns=ns, model=model, labels=EU)


def brute_force_size(part: Restriction, sizes: dict[ModelKey, int]) -> int:
    """Series a part's selectors match: every known model in the cross product of its namespaces and names."""
    return sum(sizes.get(key, 0) for key in itertools.product(part.namespaces, part.models))


# --- the parts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_every_model_is_in_exactly_one_part_and_each_part_fits_the_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = {(f"ns-{rng.integers(6)}", f"model-{rng.integers(40)}"): int(rng.integers(0, 12)) for _ in range(150)}
    models = [key for key in sizes if rng.random() < 0.7]
    parts = split(models, sizes, budget=30)
    placed = [key for part in parts for key in part.models]
    assert sorted(placed) == sorted(set(models))  # each once
    for part in parts:
        assert part.expected == brute_force_size(part.restriction, sizes) <= 30
        assert set(part.restriction.namespaces) == {ns for ns, _ in part.models}
        assert set(part.restriction.models) == {m for _, m in part.models}
    # Greedy but not wasteful: no two neighbouring parts would have fitted together.
    assert len(parts) <= math.ceil(sum(sizes.values()) / 30) * 2


def test_the_cross_product_of_a_part_is_counted() -> None:
    sizes = {("team-a", "fraud"): 9, ("team-b", "churn"): 9, ("team-b", "fraud"): 9}
    # team-a/fraud with team-b/churn would also select team-b/fraud: 27 series, over a budget of 20.
    parts = split([("team-a", "fraud"), ("team-b", "churn")], sizes, budget=20)
    assert [part.models for part in parts] == [(("team-a", "fraud"),), (("team-b", "churn"),)]
    assert [part.expected for part in parts] == [9, 9]
    assert [p.expected for p in split([("team-a", "fraud"), ("team-b", "churn")], sizes, budget=27)] == [27]


def test_a_model_larger_than_the_budget_gets_a_part_of_its_own() -> None:
    sizes = {("a", "huge"): 50, ("a", "m1"): 5, ("a", "m2"): 5}
    parts = split(sizes, sizes, budget=10)
    assert [(part.models, part.expected) for part in parts] == [
        ((("a", "huge"),), 50),
        ((("a", "m1"), ("a", "m2")), 10),
    ]


def test_models_never_seen_count_nothing_and_a_bad_budget_is_refused() -> None:
    assert [part.expected for part in split([("a", "new")], {}, budget=1)] == [0]
    with pytest.raises(ValueError, match="series budget 0"):
        split([("a", "m")], {}, budget=0)
    with pytest.raises(ValueError, match="series budget 0"):
        SeriesBook(budget=0)


# --- the query text -----------------------------------------------------------------------------------------


def test_a_part_selects_its_namespaces_and_model_names_literally() -> None:
    only = Restriction(namespaces=("ns-1",), models=("a", "b.c|d"))
    planned = plan(request("latencyP95", ns="ns-1", model="a", window="5m"), (), only)
    assert not isinstance(planned, type(None))
    assert planned.queries == (  # type: ignore[union-attr]
        "histogram_quantile(0.95, sum by (namespace, model, le) (increase(modelmonitor_request_duration_seconds_bucket"
        '{namespace="ns-1", model=~"a|b\\\\.c\\\\|d"}[5m])))',
        "sum by (namespace, model) (increase(modelmonitor_request_duration_seconds_bucket"
        '{le="+Inf", namespace="ns-1", model=~"a|b\\\\.c\\\\|d"}[5m]))',
    )
    coverage = plan(request("labelCoverage", ns="ns-1", model="a"), (), only)
    assert 'modelmonitor_labels_received_total{result="joined", namespace="ns-1", model=~' in coverage.queries[0]  # type: ignore[union-attr]
    # cAdvisor's series know pods, not models: only the namespaces narrow them.
    cpu = plan(request("cpu", ns="ns-1", model="a"), (), only).queries[0]  # type: ignore[union-attr]
    assert 'container_cpu_usage_seconds_total{container!="", container!="POD", namespace="ns-1"}' in cpu
    assert 'modelmonitor_request_errors_total{namespace="ns-1", model=~"a|b' in cpu


def test_matches_any_is_an_equality_for_one_value_and_an_escaped_alternation_for_several() -> None:
    assert matches_any("model", ["fraud"]) == 'model="fraud"'
    assert matches_any("model", ["a.b", 'q"x']) == 'model=~"a\\\\.b|q\\"x"'
    with pytest.raises(ValueError, match="at least one value"):
        matches_any("model", [])


# --- measuring with a book ----------------------------------------------------------------------------------


def test_a_split_query_gives_every_monitor_the_measurement_of_one_query_within_the_budget() -> None:
    whole_prometheus, requests = latency_fleet(30)
    whole = measure(requests, whole_prometheus, at=AT)
    assert max(whole_prometheus.sizes) == 30 * 4  # the latency buckets of every model in one answer

    prometheus, _ = latency_fleet(30)
    book = SeriesBook(budget=20)
    first = measure(requests, prometheus, at=AT, book=book)
    # Each query counted whole once, then its models in parts of at most 20 (one series per model).
    assert len([q for q in prometheus.asked if q.startswith("count (")]) == 2
    assert len([q for q in prometheus.asked if q.startswith("count by")]) == 2 * 2
    prometheus.asked.clear()
    second = measure(requests, prometheus, at=AT, book=book)
    assert not any(q.startswith("count") for q in prometheus.asked)

    for cycle in (first, second):
        assert cycle.split_queries == 2
        assert cycle.largest_answer <= 20
        for item in requests:
            assert cycle.results[item].kind is MeasurementKind.VALUES
            assert cycle.results[item].series == whole.results[item].series
            assert cycle.results[item].queries == whole.results[item].queries  # the unrestricted text, short
    assert max(prometheus.sizes) <= 20
    # 30 models in 3 namespaces, 4 buckets and 4 outcomes each: parts of 5 models, not crossing a namespace.
    assert second.batched_queries == len(prometheus.asked) == 6 + 6


def test_below_the_budget_the_query_stays_whole() -> None:
    prometheus, requests = latency_fleet(10)
    plain = SplitAwarePrometheus(prometheus.fake)
    measure(requests, plain, at=AT)
    book = SeriesBook(budget=1000)
    measure(requests, prometheus, at=AT, book=book)
    prometheus.asked.clear()
    cycle = measure(requests, prometheus, at=AT, book=book)
    assert prometheus.asked == plain.asked
    assert cycle.split_queries == 0


def test_no_data_and_errors_stay_with_the_models_they_belong_to() -> None:
    prometheus, requests = latency_fleet(12)
    ghost = latency("ns-0", "ghost")
    book = SeriesBook(budget=12)
    measure([*requests, ghost], prometheus, at=AT, book=book)
    plain = measure([ghost], SplitAwarePrometheus(prometheus.fake), at=AT)
    prometheus.failing['model=~"model-0|'] = QueryError(ErrorKind.TIMEOUT, "no answer within 10s")
    cycle = measure([*requests, ghost], prometheus, at=AT, book=book)
    assert cycle.results[ghost].kind is MeasurementKind.NO_DATA
    assert cycle.results[ghost].reason == plain.results[ghost].reason
    # The failed part is the accuracy query's first (the latency query's first part also holds the ghost).
    failed = {item for item, result in cycle.results.items() if result.kind is MeasurementKind.ERROR}
    assert {item.signal for item in failed} == {"accuracy"}
    assert {item.model for item in failed} == {"model-0", "model-3", "model-6"}
    assert all(cycle.results[item].reason == "timeout: no answer within 10s" for item in failed)
    assert cycle.failed_queries == 1


def test_a_new_model_is_counted_before_it_joins_a_part() -> None:
    prometheus, requests = latency_fleet(12)
    book = SeriesBook(budget=12)
    measure(requests, prometheus, at=AT, book=book)
    add_latency(prometheus.fake, "ns-9", "late", (1.0, 2.0, 3.0, 4.0), cluster="eu")
    late = latency("ns-9", "late")
    prometheus.asked.clear()
    cycle = measure([*requests, late], prometheus, at=AT, book=book)
    assert [q for q in prometheus.asked if q.startswith("count")] == [
        "count by (namespace, model) (sum by (namespace, model, cluster, le) (increase("
        'modelmonitor_request_duration_seconds_bucket{namespace="ns-9", model="late"}[10m])))'
    ]
    assert cycle.results[late].kind is MeasurementKind.VALUES
    assert max(prometheus.sizes) <= 12


def test_a_failed_count_is_an_error_and_the_query_is_not_sent() -> None:
    prometheus, requests = latency_fleet(3)
    prometheus.failing["count ("] = QueryError(ErrorKind.CONNECTION, "connection refused")
    cycle = measure(requests, prometheus, at=AT, book=SeriesBook(budget=100))
    assert all(result.kind is MeasurementKind.ERROR for result in cycle.results.values())
    assert all(q.startswith("count (") for q in prometheus.asked)
    assert cycle.failed_queries == 2


# --- a replica's share --------------------------------------------------------------------------------------


def test_a_replica_measuring_half_the_models_asks_for_its_half_once_it_knows_the_sizes() -> None:
    prometheus, requests = latency_fleet(30)
    mine = [item for item in requests if int(item.model.split("-")[1]) % 2 == 0]
    whole = measure(mine, SplitAwarePrometheus(prometheus.fake), at=AT)
    book = SeriesBook(budget=1000)
    first = measure(mine, prometheus, at=AT, book=book)
    # The first cycle counts each query, then asks for it whole: that is what tells the sizes of every model.
    assert first.split_queries == 0
    assert max(prometheus.sizes) == 30 * 4
    prometheus.asked.clear()
    prometheus.sizes.clear()
    second = measure(mine, prometheus, at=AT, book=book)
    assert second.split_queries == 2 and second.batched_queries == 2
    assert second.largest_answer == max(prometheus.sizes) == 15 * 4  # this replica's models only
    asked = [set(_MATCHER.findall(query)) for query in prometheus.asked]
    assert all(("model", "=~", "|".join(sorted({item.model for item in mine}))) in found for found in asked)
    for item in mine:
        assert second.results[item].series == whole.results[item].series
        assert second.results[item].queries == whole.results[item].queries


def test_a_replica_measuring_most_of_the_models_asks_for_the_whole_answer() -> None:
    prometheus, requests = latency_fleet(20)
    most = [item for item in requests if item.model not in ("model-0", "model-1")]  # 90 %
    book = SeriesBook(budget=1000)
    measure(most, prometheus, at=AT, book=book)
    prometheus.asked.clear()
    cycle = measure(most, prometheus, at=AT, book=book)
    assert cycle.split_queries == 0
    assert not any("model=~" in query for query in prometheus.asked)


def test_a_share_whose_cross_product_selects_most_models_is_asked_for_whole() -> None:
    # The same model names in every namespace, shared out so that each name and each namespace is in the share:
    # namespace=~"ns-0|ns-1" and model=~"model-0|model-1" would select all four models.
    prometheus = SplitAwarePrometheus()
    for ns, model in itertools.product(("ns-0", "ns-1"), ("model-0", "model-1")):
        add_latency(prometheus.fake, ns, model, (1.0, 2.0, 3.0, 4.0), cluster="eu")
    mine = [latency("ns-0", "model-0"), latency("ns-1", "model-1")]
    book = SeriesBook(budget=1000)
    measure(mine, prometheus, at=AT, book=book)
    prometheus.asked.clear()
    assert measure(mine, prometheus, at=AT, book=book).split_queries == 0
    assert not any("=~" in query for query in prometheus.asked)


def test_an_empty_answer_stays_one_whole_query() -> None:
    prometheus = SplitAwarePrometheus()
    mine = [latency("ns-0", "model-0")]
    book = SeriesBook(budget=1000)
    for _ in range(2):
        prometheus.asked.clear()
        cycle = measure(mine, prometheus, at=AT, book=book)
        assert cycle.results[mine[0]].kind is MeasurementKind.NO_DATA
    assert cycle.split_queries == 0
    assert not any("model=" in query for query in prometheus.asked)
