"""Batched built-in signals and `query:` policies, against a fake Prometheus holding a synthetic fleet.

The fake evaluates the aggregation shapes the built-in signals use (``sum|max|group by (...) (increase(m[w]))``
and ``... (m)``) over stored series, the way Prometheus would, so splitting per monitor is tested on grouped
answers built from raw series rather than on hand-written ones. Queries it does not understand get canned
answers or fail the test.
"""

from __future__ import annotations

import math
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pytest

from modelmonitor.adapters.prometheus import ErrorKind, QueryError, QueryResult, Sample
from modelmonitor.policy.model import Measurement, MeasurementKind
from modelmonitor.signals import (
    BUILTIN_SIGNALS,
    SignalRequest,
    measure,
)
from modelmonitor.signals.planning import plan
from modelmonitor.stats.drift import METHODS
from modelmonitor.stats.window_null import window_test

AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
_AGGREGATION = re.compile(
    r"^(sum|max|group) by \(([^)]*)\) "
    r"\((?:(increase|rate)\(([a-zA-Z_:]+)(?:\{(\w+)=\"([^\"]+)\"\})?\[(\w+)\](?: offset (\w+))?\)|([a-zA-Z_:]+))\)$"
)


@dataclass
class FakePrometheus:
    """Raw series per metric name; ``increase``/``rate`` over any window read the stored value as the result.

    One equality matcher (``m{result="joined"}``) selects series; ``offset D`` reads the series stored with an
    ``offset`` label of ``D`` (and only those).
    """

    series: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=lambda: defaultdict(list))
    canned: dict[str, QueryResult] = field(default_factory=dict)
    failing: dict[str, QueryError] = field(default_factory=dict)
    asked: list[tuple[str, datetime | None]] = field(default_factory=list)
    warnings: tuple[str, ...] = ()

    def add(self, metric: str, value: float, **labels: str) -> None:
        self.series[metric].append((labels, value))

    def query(self, promql: str, *, at: datetime | None = None) -> QueryResult:
        self.asked.append((promql, at))
        for fragment, error in self.failing.items():
            if fragment in promql:
                return QueryResult(query=promql, error=error)
        if promql in self.canned:
            return self.canned[promql]
        match = _AGGREGATION.match(promql)
        if match is None:
            raise AssertionError(f"the fake cannot evaluate {promql!r}")
        operator, by, _function, ranged, matcher, matched, _window, offset, instant = match.groups()
        labels = [label.strip() for label in by.split(",")]
        groups: dict[tuple[str, ...], list[float]] = defaultdict(list)
        for series_labels, value in self.series.get(ranged or instant, []):
            # A series stored with an "offset" label is what the metric read that long ago.
            if series_labels.get("offset") != offset:
                continue
            if matcher is not None and series_labels.get(matcher) != matched:
                continue
            groups[tuple(series_labels.get(label, "") for label in labels)].append(value)
        samples = []
        for key, values in groups.items():
            value = {"sum": sum, "max": max, "group": lambda _v: 1.0}[operator](values)
            samples.append(Sample({k: v for k, v in zip(labels, key, strict=True) if v}, float(value), 0.0))
        return QueryResult(query=promql, result_type="vector", samples=tuple(samples), warnings=self.warnings)


def request(
    signal: str | None = "accuracy", *, ns: str = "team-a", model: str = "fraud", **extra: object
) -> SignalRequest:
    return SignalRequest(
        namespace=ns,
        monitor=f"{model}-mm",
        policy=extra.pop("policy", signal or "custom"),  # type: ignore[arg-type]
        model=model,
        window=extra.pop("window", "10m"),  # type: ignore[arg-type]
        signal=signal,
        **extra,  # type: ignore[arg-type]
    )


def numbers(measurement: Measurement) -> tuple[float, ...]:
    """The values of a measurement's series."""
    return tuple(series.value for series in measurement.series)


def samples_of(measurement: Measurement) -> int | None:
    """The sample count behind the (first) series."""
    return measurement.series[0].samples if measurement.series else None


def labels_of(measurement: Measurement) -> tuple[tuple[tuple[str, str], ...], ...]:
    return tuple(series.labels for series in measurement.series)


def said(measurement: Measurement) -> str:
    """What a user reads: why there is no value, or what the value is made of."""
    return f"{measurement.reason} {measurement.detail}".strip()


def add_confusion(fake: FakePrometheus, ns: str, model: str, version: str, group: str = "all", **counts: float) -> None:
    for outcome, count in counts.items():
        fake.add(
            "modelmonitor_labeled_predictions_total",
            count,
            namespace=ns,
            model=model,
            version=version,
            group=group,
            outcome=outcome,
        )


def fleet(n: int) -> FakePrometheus:
    """n models, model i with accuracy i/(n+1), error rate i/(2n), and two features."""
    fake = FakePrometheus()
    for i in range(1, n + 1):
        ns, model = f"ns-{i % 7}", f"model-{i}"
        add_confusion(fake, ns, model, "v1", tp=i, tn=0, fp=n + 1 - i, fn=0)
        fake.add("modelmonitor_requests_total", 2 * n, namespace=ns, model=model, version="v1", code="2xx")
        fake.add("modelmonitor_request_errors_total", i, namespace=ns, model=model, version="v1")
        for feature in ("age", "income"):
            fake.add(
                "modelmonitor_feature_observations_total", 100, namespace=ns, model=model, version="v1", feature=feature
            )
        fake.add("modelmonitor_feature_missing_total", i % 10, namespace=ns, model=model, version="v1", feature="age")
    return fake


def fleet_requests(
    n: int, signals: tuple[str, ...] = ("accuracy", "precision", "errorRate", "missingRate")
) -> list[SignalRequest]:
    return [request(signal, ns=f"ns-{i % 7}", model=f"model-{i}") for i in range(1, n + 1) for signal in signals]


# --- batching ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 10, 300])
def test_queries_per_cycle_do_not_grow_with_monitors(n: int) -> None:
    fake = fleet(n)
    cycle = measure(fleet_requests(n), fake, at=AT)
    # accuracy and precision share one query; errorRate needs 2; missingRate 2 (observations shared by none).
    assert cycle.batched_queries == 5
    assert cycle.template_queries == 0
    assert len(fake.asked) == 5
    assert len(cycle.results) == 4 * n


def test_a_request_is_measured_as_soon_as_its_answers_are_in_not_after_the_slowest_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prometheus holds the error-rate query until every accuracy and precision request has been measured: a
    # measure() that waited for every answer before measuring any request would hold it forever (10 s here).
    n = 20
    fake = fleet(n)
    measured_quality = threading.Event()
    done = 0
    with_queries = Measurement.with_queries

    def counting(self: Measurement, queries: tuple[str, ...], warnings: tuple[str, ...] = ()) -> Measurement:
        nonlocal done
        done += "modelmonitor_labeled_predictions_total" in queries[0]
        if done == 2 * n:
            measured_quality.set()
        return with_queries(self, queries, warnings)

    class Slow:
        def query(self, promql: str, *, at: datetime | None = None) -> QueryResult:
            if "modelmonitor_request_errors_total" in promql:
                assert measured_quality.wait(10), "the quality requests waited for the error-rate answer"
            return fake.query(promql, at=at)

    monkeypatch.setattr(Measurement, "with_queries", counting)
    requests = fleet_requests(n)
    cycle = measure(requests, Slow(), at=AT)
    assert measured_quality.is_set()
    assert all(cycle.results[r].kind is MeasurementKind.VALUES for r in requests), cycle.results
    assert list(cycle.results) == requests  # in the order asked, not the order measured


def test_each_monitor_gets_its_own_models_value() -> None:
    n = 50
    cycle = measure(fleet_requests(n), fleet(n), at=AT)
    for i in range(1, n + 1):
        ns, model = f"ns-{i % 7}", f"model-{i}"
        accuracy = cycle.results[request("accuracy", ns=ns, model=model)]
        assert accuracy.kind is MeasurementKind.VALUES
        assert numbers(accuracy) == (pytest.approx(i / (n + 1)),)
        assert samples_of(accuracy) == n + 1
        error_rate = cycle.results[request("errorRate", ns=ns, model=model)]
        assert numbers(error_rate) == (pytest.approx(i / (2 * n)),)
        assert samples_of(error_rate) == 2 * n
        missing = cycle.results[request("missingRate", ns=ns, model=model)]
        assert numbers(missing) == (pytest.approx((i % 10) / 100),)


def test_all_queries_are_evaluated_at_the_cycle_instant() -> None:
    fake = fleet(3)
    measure(fleet_requests(3), fake, at=AT)
    assert {at for _, at in fake.asked} == {AT}


def test_absent_monitors_get_no_data_never_zero() -> None:
    fake = fleet(3)
    absent = [
        request("accuracy", ns="ns-1", model="ghost"),
        request("accuracy", ns="elsewhere", model="model-1"),  # the model exists, but in another namespace
        request("errorRate", ns="ns-1", model="ghost"),
        request("latencyP99", ns="ns-1", model="ghost"),
        request("dataDrift", ns="ns-1", model="ghost"),
        request("missingRate", ns="ns-1", model="ghost"),
        request("accuracy", ns="ns-1", model="model-1", version="v9"),  # a version that does not exist
    ]
    quantile = plan(absent[3], ()).queries[0]  # type: ignore[union-attr]
    fake.canned[quantile] = QueryResult(query=quantile, result_type="vector", samples=())  # the fake computes none
    cycle = measure(absent, fake, at=AT)
    for item in absent:
        result = cycle.results[item]
        assert result.kind is MeasurementKind.NO_DATA, (item, result)
        assert numbers(result) == ()
        assert said(result)
    assert 'namespace="elsewhere", model="model-1"' in cycle.results[absent[1]].reason


def test_version_is_grouped_only_for_monitors_that_name_one() -> None:
    fake = FakePrometheus()
    add_confusion(fake, "a", "m", "v1", tp=9, fp=1)
    add_confusion(fake, "a", "m", "v2", tp=1, fp=9)
    both, v1, v2 = (
        request("precision", ns="a", model="m"),
        *(request("precision", ns="a", model="m", version=v, policy=f"p-{v}") for v in ("v1", "v2")),
    )
    cycle = measure([both, v1, v2], fake, at=AT)
    assert numbers(cycle.results[both]) == (pytest.approx(0.5),)
    assert numbers(cycle.results[v1]) == (pytest.approx(0.9),)
    assert numbers(cycle.results[v2]) == (pytest.approx(0.1),)
    assert "by (namespace, model, outcome)" in cycle.results[both].query
    assert "by (namespace, model, version, outcome)" in cycle.results[v1].query
    # Two groupings, two queries, whatever the number of monitors on each side.
    assert cycle.batched_queries == 2


# --- quality -----------------------------------------------------------------------------------------------


def test_quality_signals_from_one_confusion_query() -> None:
    fake = FakePrometheus()
    add_confusion(fake, "a", "m", "v1", tp=40, fp=10, tn=30, fn=20)
    wanted = {
        "accuracy": (70 / 100, 100),
        "precision": (40 / 50, 50),
        "recall": (40 / 60, 60),
        "f1": (80 / 110, 70),
    }
    requests = [request(signal, ns="a", model="m") for signal in wanted]
    cycle = measure(requests, fake, at=AT)
    assert cycle.batched_queries == 1
    for item in requests:
        value, samples = wanted[item.signal or ""]
        result = cycle.results[item]
        assert numbers(result) == (pytest.approx(value),)
        assert samples_of(result) == samples
        assert (
            result.query == "sum by (namespace, model, outcome) (increase(modelmonitor_labeled_predictions_total[10m]))"
        )
        assert "tp=40 fp=10 tn=30 fn=20" in said(result)
        assert labels_of(result) == ((),)


def test_outcomes_absent_next_to_present_ones_count_zero() -> None:
    fake = FakePrometheus()
    add_confusion(fake, "a", "m", "v1", tp=5, tn=5)  # no fp/fn series yet: never incremented
    cycle = measure([request("accuracy", ns="a", model="m")], fake, at=AT)
    assert numbers(cycle.results[request("accuracy", ns="a", model="m")]) == (1.0,)


def test_precision_without_positive_predictions_is_no_data() -> None:
    fake = FakePrometheus()
    add_confusion(fake, "a", "m", "v1", tn=50, fn=3)
    result = measure([request("precision", ns="a", model="m")], fake, at=AT).results[
        request("precision", ns="a", model="m")
    ]
    assert result.kind is MeasurementKind.NO_DATA
    assert "no positive predictions" in said(result)


def add_group_predictions(fake: FakePrometheus, ns: str, model: str, version: str, group: str, **counts: float) -> None:
    for predicted, value in counts.items():
        fake.add(
            "modelmonitor_group_predictions_total",
            value,
            namespace=ns,
            model=model,
            version=version,
            group=group,
            predicted=predicted,
            **({"cluster": "eu-1"} if group == "__cluster__" else {}),
        )


def test_fairness_gap_is_max_minus_min_positive_rate_from_group_predictions() -> None:
    fake = FakePrometheus()
    add_group_predictions(fake, "a", "m", "v1", "young", positive=40, negative=60)  # 0.4
    add_group_predictions(fake, "a", "m", "v1", "old", positive=10, negative=40)  # 0.2
    add_group_predictions(fake, "a", "m", "v2", "old", positive=0, negative=0)  # a version without traffic
    add_group_predictions(fake, "a", "m", "v1", "__other__", positive=10, negative=10)  # 0.5 of 20
    item = request("fairnessGap", ns="a", model="m")
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result) == (pytest.approx(0.3),)
    assert samples_of(result) == 20  # the smallest group
    # no label is needed: the query reads the per-group prediction counts
    assert result.query == (
        "sum by (namespace, model, group, predicted) (increase(modelmonitor_group_predictions_total[10m]))"
    )
    assert "'__other__' 0.5 of 20" in result.detail and "'old' 0.2 of 50" in result.detail
    assert "'young' 0.4 of 100" in result.detail


def test_disparate_impact_is_lowest_over_highest_rate_and_shares_the_query() -> None:
    fake = FakePrometheus()
    add_group_predictions(fake, "a", "m", "v1", "f", positive=30, negative=70)  # 0.3
    add_group_predictions(fake, "a", "m", "v1", "m", positive=60, negative=40)  # 0.6
    gap, impact = request("fairnessGap", ns="a", model="m"), request("disparateImpact", ns="a", model="m")
    cycle = measure([gap, impact], fake, at=AT)
    assert cycle.batched_queries == 1
    assert numbers(cycle.results[impact]) == (pytest.approx(0.5),)
    assert numbers(cycle.results[gap]) == (pytest.approx(0.3),)
    assert "disparate impact" in cycle.results[impact].detail
    assert "'f' 0.3 of 100, 'm' 0.6 of 100" in cycle.results[impact].detail


def test_disparate_impact_without_any_positive_prediction_is_no_data() -> None:
    fake = FakePrometheus()
    add_group_predictions(fake, "a", "m", "v1", "f", positive=0, negative=70)
    add_group_predictions(fake, "a", "m", "v1", "m", positive=0, negative=40)
    item = request("disparateImpact", ns="a", model="m")
    result = measure([item], fake, at=AT).results[item]
    assert result.kind is MeasurementKind.NO_DATA
    assert "no positive predictions" in result.reason


def test_fairness_gap_leaves_out_groups_below_min_samples() -> None:
    fake = FakePrometheus()
    add_group_predictions(fake, "a", "m", "v1", "young", positive=40, negative=60)  # 0.4 of 100
    add_group_predictions(fake, "a", "m", "v1", "old", positive=10, negative=40)  # 0.2 of 50
    add_group_predictions(fake, "a", "m", "v1", "__other__", positive=3)  # 1.0 of 3: noise
    item = request("fairnessGap", ns="a", model="m", min_samples=20)
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result) == (pytest.approx(0.2),)
    assert samples_of(result) == 50
    assert "left out for fewer than minSamples 20: '__other__' (3)" in result.detail

    alone = request("fairnessGap", ns="a", model="m", min_samples=60, policy="strict")
    result = measure([alone], fake, at=AT).results[alone]
    assert result.kind is MeasurementKind.NO_DATA
    assert "'old' (50)" in result.reason and "'__other__' (3)" in result.reason


def test_fairness_gap_needs_two_groups() -> None:
    fake = FakePrometheus()
    add_group_predictions(fake, "a", "m", "v1", "only", positive=3, negative=3)
    item = request("fairnessGap", ns="a", model="m")
    result = measure([item], fake, at=AT).results[item]
    assert result.kind is MeasurementKind.NO_DATA
    assert "at least two" in result.reason


def test_equal_opportunity_gap_is_the_true_positive_rate_difference() -> None:
    fake = FakePrometheus()
    add_confusion(fake, "a", "m", "v1", group="young", tp=30, fp=10, tn=50, fn=10)  # tpr 0.75 of 40 positives
    add_confusion(fake, "a", "m", "v1", group="old", tp=5, fp=5, tn=35, fn=15)  # tpr 0.25 of 20
    add_confusion(fake, "a", "m", "v1", group="__other__", tp=1, tn=40)  # tpr 1.0 of 1 positive
    item = request("equalOpportunityGap", ns="a", model="m", min_samples=10)
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result) == (pytest.approx(0.5),)
    assert samples_of(result) == 20
    assert result.query == (
        "sum by (namespace, model, group, outcome) (increase(modelmonitor_labeled_predictions_total[10m]))"
    )
    assert "true-positive rate" in result.detail
    assert "'old' 0.25 of 20, 'young' 0.75 of 40" in result.detail
    assert "left out for fewer than minSamples 10: '__other__' (1)" in result.detail


# --- rates -------------------------------------------------------------------------------------------------


def test_error_rate_counts_errors_as_zero_only_when_requests_prove_traffic() -> None:
    fake = FakePrometheus()
    fake.add("modelmonitor_requests_total", 80, namespace="a", model="quiet", version="v1", code="2xx")
    fake.add("modelmonitor_requests_total", 0, namespace="a", model="idle", version="v1", code="2xx")
    quiet, idle = request("errorRate", ns="a", model="quiet"), request("errorRate", ns="a", model="idle")
    cycle = measure([quiet, idle], fake, at=AT)
    assert numbers(cycle.results[quiet]) == (0.0,)
    assert samples_of(cycle.results[quiet]) == 80
    assert cycle.results[idle].kind is MeasurementKind.NO_DATA
    assert "no requests" in said(cycle.results[idle])


def test_schema_violation_rate_is_the_worst_feature() -> None:
    fake = FakePrometheus()
    for feature in ("age", "city"):
        fake.add(
            "modelmonitor_feature_observations_total", 200, namespace="a", model="m", version="v1", feature=feature
        )
    fake.add(
        "modelmonitor_schema_violations_total", 4, namespace="a", model="m", version="v1", feature="age", kind="range"
    )
    fake.add(
        "modelmonitor_schema_violations_total", 6, namespace="a", model="m", version="v1", feature="age", kind="type"
    )
    fake.add(
        "modelmonitor_schema_violations_total",
        30,
        namespace="a",
        model="m",
        version="v1",
        feature="__unknown__",
        kind="unknown_feature",
    )
    item = request("schemaViolationRate", ns="a", model="m")
    result = measure([item], fake, at=AT).results[item]
    # age: 10/200; the unknown-feature bucket has no observations of its own and counts per row: 30/200.
    assert numbers(result) == (pytest.approx(0.15),)
    assert samples_of(result) == 200
    assert "'__unknown__'" in said(result)


LATENCY_BOUNDS = ("0.1", "0.2", "0.5", "+Inf")


def add_latency(fake: FakePrometheus, ns: str, model: str, cumulative: tuple[float, ...], **labels: str) -> None:
    for le, value in zip(LATENCY_BOUNDS, cumulative, strict=True):
        fake.add(
            "modelmonitor_request_duration_seconds_bucket",
            value,
            namespace=ns,
            model=model,
            version="v1",
            le=le,
            **labels,
        )


def test_latency_quantile_from_summed_buckets_and_its_sample_count() -> None:
    # With spec.model.labels in the batch the operator reads the buckets and computes the quantile itself.
    fake = FakePrometheus()
    # 1000 requests: 500 up to 0.1 s, 300 in (0.1, 0.2], 180 in (0.2, 0.5], 20 slower.
    add_latency(fake, "a", "m", (500, 800, 980, 1000.4), cluster="eu")
    add_latency(fake, "a", "idle", (0, 0, 0, 0), cluster="eu")
    eu = (("cluster", "eu"),)
    busy50, busy95, busy99, idle = (
        request("latencyP50", ns="a", model="m", window="5m", labels=eu),
        request("latencyP95", ns="a", model="m", window="5m", labels=eu),
        request("latencyP99", ns="a", model="m", window="5m", labels=eu),
        request("latencyP95", ns="a", model="idle", window="5m", labels=eu),
    )
    cycle = measure([busy50, busy95, busy99, idle], fake, at=AT)
    assert cycle.batched_queries == 1  # the three quantiles share the bucket counts
    # Prometheus' histogram_quantile: rank 500.2 lies in (0.1, 0.2] at 0.2/300 of the way.
    assert numbers(cycle.results[busy50]) == (pytest.approx(0.1 + 0.1 * (0.5 * 1000.4 - 500) / 300),)
    assert numbers(cycle.results[busy95]) == (pytest.approx(0.2 + 0.3 * (0.95 * 1000.4 - 800) / 180),)
    assert numbers(cycle.results[busy99]) == (0.5,)  # in the +Inf bucket: the highest finite bound
    assert samples_of(cycle.results[busy95]) == 1000
    assert cycle.results[idle].kind is MeasurementKind.NO_DATA  # no requests in the window
    assert "no requests" in cycle.results[idle].reason


QUANTILE_P95 = (
    "histogram_quantile(0.95, sum by (namespace, model, le) "
    "(increase(modelmonitor_request_duration_seconds_bucket[5m])))"
)


def test_without_extra_labels_prometheus_computes_the_quantile_and_the_requests_count_the_samples() -> None:
    fake = FakePrometheus()
    add_latency(fake, "a", "m", (500, 800, 980, 1000.4))
    add_latency(fake, "a", "idle", (0, 0, 0, 0))
    add_latency(fake, "a", "one-bucket", (0, 0, 0, 7))
    # What Prometheus answers (the fake does not compute quantiles): NaN where it has nothing to interpolate.
    fake.canned[QUANTILE_P95] = QueryResult(
        query=QUANTILE_P95,
        result_type="vector",
        samples=(
            Sample({"namespace": "a", "model": "m"}, 0.4, 0.0),
            Sample({"namespace": "a", "model": "idle"}, math.nan, 0.0),
            Sample({"namespace": "a", "model": "one-bucket"}, math.nan, 0.0),
        ),
    )
    busy, idle, unbucketed, ghost = (
        request("latencyP95", ns="a", model=model, window="5m") for model in ("m", "idle", "one-bucket", "ghost")
    )
    cycle = measure([busy, idle, unbucketed, ghost], fake, at=AT)
    assert sorted(text for text, _ in fake.asked) == [
        QUANTILE_P95,
        'sum by (namespace, model) (increase(modelmonitor_request_duration_seconds_bucket{le="+Inf"}[5m]))',
    ]
    assert cycle.largest_answer == 3  # a series per model, not one per bucket
    assert numbers(cycle.results[busy]) == (0.4,)
    assert samples_of(cycle.results[busy]) == 1000
    assert cycle.results[busy].query == QUANTILE_P95
    assert cycle.results[idle].kind is MeasurementKind.NO_DATA
    assert "no requests" in cycle.results[idle].reason
    assert cycle.results[unbucketed].kind is MeasurementKind.NO_DATA
    assert "has no buckets" in cycle.results[unbucketed].reason
    assert cycle.results[ghost].kind is MeasurementKind.NO_DATA
    assert "modelmonitor_request_duration_seconds_bucket" in cycle.results[ghost].reason


def test_each_quantile_is_its_own_query_and_they_share_the_requests_query() -> None:
    fake = FakePrometheus()
    add_latency(fake, "a", "m", (500, 800, 980, 1000.4))
    quantiles = [request(signal, ns="a", model="m", window="5m") for signal in ("latencyP50", "latencyP99")]
    for item in quantiles:
        text = plan(item, ()).queries[0]  # type: ignore[union-attr]
        fake.canned[text] = QueryResult(query=text, result_type="vector", samples=())
    cycle = measure(quantiles, fake, at=AT)
    assert cycle.batched_queries == 3
    asked = sorted(text.split(",")[0] for text, _ in fake.asked)
    assert asked == ["histogram_quantile(0.5", "histogram_quantile(0.99", "sum by (namespace"]


def test_cpu_gives_one_value_per_pod() -> None:
    fake = FakePrometheus()
    item = request("cpu", ns="a", model="m", window="5m")
    text = (
        "group by (namespace, pod, model, version) (modelmonitor_request_errors_total) * on (namespace, pod) "
        "group_left () sum by (namespace, pod) "
        '(rate(container_cpu_usage_seconds_total{container!="", container!="POD"}[5m]))'
    )
    fake.canned[text] = QueryResult(
        query=text,
        result_type="vector",
        samples=tuple(
            Sample({"namespace": "a", "model": "m", "version": "v1", "pod": f"m-{i}"}, 0.1 * i, 0) for i in (1, 2, 3)
        ),
    )
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result) == pytest.approx((0.1, 0.2, 0.3))
    assert [dict(labels)["pod"] for labels in labels_of(result)] == ["m-1", "m-2", "m-3"]
    assert samples_of(result) is None
    assert "m-1, m-2, m-3" in said(result)


def test_memory_without_cadvisor_is_no_data() -> None:
    fake = FakePrometheus()
    item = request("memory", ns="a", model="m")
    text = (
        "group by (namespace, pod, model, version) (modelmonitor_request_errors_total) * on (namespace, pod) "
        "group_left () sum by (namespace, pod) "
        '(max_over_time(container_memory_working_set_bytes{container!="", container!="POD"}[10m]))'
    )
    fake.canned[text] = QueryResult(query=text, result_type="vector")
    result = measure([item], fake, at=AT).results[item]
    assert result.kind is MeasurementKind.NO_DATA
    assert "cAdvisor" in said(result)


# --- drift -------------------------------------------------------------------------------------------------

BOUNDS = ("1.0", "2.0", "3.0", "+Inf")
REFERENCE = (0.25, 0.5, 0.75, 1.0)
REFERENCE_SHARES = (0.25, 0.25, 0.25, 0.25)


def add_histogram(
    fake: FakePrometheus, ns: str, model: str, version: str, feature: str, bins: tuple[float, ...]
) -> None:
    cumulative = np.cumsum(bins)
    for le, count, ratio in zip(BOUNDS, cumulative, REFERENCE, strict=True):
        fake.add(
            "modelmonitor_feature_value_bucket",
            float(count),
            namespace=ns,
            model=model,
            version=version,
            feature=feature,
            le=le,
        )
        fake.add(
            "modelmonitor_feature_reference_ratio",
            ratio,
            namespace=ns,
            model=model,
            version=version,
            feature=feature,
            le=le,
        )


def test_data_drift_is_the_worst_feature_psi_from_summed_buckets() -> None:
    fake = FakePrometheus()
    add_histogram(fake, "a", "m", "v1", "age", (25, 25, 25, 25))
    add_histogram(fake, "a", "m", "v1", "income", (10, 10, 10, 70))
    item = request("dataDrift", ns="a", model="m")
    result = measure([item], fake, at=AT).results[item]
    expected = METHODS["psi"].function(np.array([0.25] * 4), np.array([10.0, 10, 10, 70]))
    assert numbers(result) == (pytest.approx(expected),)
    assert samples_of(result) == 100
    assert result.threshold is None
    assert "'income'" in said(result)


def test_data_drift_auto_threshold_judges_each_feature_at_its_own_rows() -> None:
    fake = FakePrometheus()
    add_histogram(fake, "a", "m", "v1", "age", (10, 10, 10, 70))  # 100 rows, psi ~0.8: far past its threshold
    add_histogram(fake, "a", "m", "v1", "income", (2400, 2600, 2500, 2500))  # 10,000 rows, nearly the reference
    item = request("dataDrift", ns="a", model="m", auto_threshold=True, false_alarm_rate=0.02)
    result = measure([item], fake, at=AT).results[item]
    # The policy's 2% is split over the two features compared; age's threshold is the one for its 100 rows.
    age = window_test("psi", REFERENCE_SHARES, (10, 10, 10, 70), false_alarm_rate=0.01)
    assert result.threshold == pytest.approx(age.threshold)
    assert numbers(result) == (pytest.approx(age.score),)
    assert samples_of(result) == 100
    assert "'age'" in said(result) and "for its 100 rows" in said(result)
    # The same score over 10,000 rows has a threshold a hundred times lower (the chi-square law scales as 1/n).
    income = window_test("psi", REFERENCE_SHARES, (2400, 2600, 2500, 2500), false_alarm_rate=0.01)
    assert income.analytic and income.threshold < age.threshold / 50
    assert result.standardized is not None and result.standardized > 3


def test_data_drift_names_the_drifting_features_with_benjamini_hochberg() -> None:
    fake = FakePrometheus()
    add_histogram(fake, "a", "m", "v1", "age", (100, 100, 100, 700))  # drifted
    add_histogram(fake, "a", "m", "v1", "income", (150, 250, 250, 350))  # drifted, less
    add_histogram(fake, "a", "m", "v1", "tenure", (250, 250, 250, 250))  # exactly the reference
    item = request("dataDrift", ns="a", model="m", auto_threshold=True, false_alarm_rate=0.01)
    text = said(measure([item], fake, at=AT).results[item])
    listed = text.split("drifting (Benjamini-Hochberg at 1%): ")[1]
    assert listed.index("'age'") < listed.index("'income'")  # most significant first
    assert "'tenure'" not in listed
    assert "3 compared" in text


def test_data_drift_lists_at_most_a_few_features() -> None:
    fake = FakePrometheus()
    for index in range(8):
        add_histogram(fake, "a", "m", "v1", f"f{index}", (100, 100, 100, 700 + index))
    item = request("dataDrift", ns="a", model="m", auto_threshold=True)
    text = said(measure([item], fake, at=AT).results[item])
    assert "and 3 more" in text
    assert text.count("threshold ") == 6  # the worst feature's, then the five listed


def test_data_drift_without_drift_has_no_drifting_list() -> None:
    fake = FakePrometheus()
    add_histogram(fake, "a", "m", "v1", "age", (250, 250, 250, 250))
    item = request("dataDrift", ns="a", model="m", auto_threshold=True)
    result = measure([item], fake, at=AT).results[item]
    assert "drifting" not in said(result)
    assert numbers(result)[0] < result.threshold  # type: ignore[operator]
    assert result.standardized is not None and result.standardized < 0  # p-value near 1


def test_data_drift_other_methods_and_categories() -> None:
    fake = FakePrometheus()
    for category, count, share in (("red", 90, 0.5), ("blue", 10, 0.5)):
        fake.add(
            "modelmonitor_feature_category_total",
            count,
            namespace="a",
            model="m",
            version="v1",
            feature="colour",
            category=category,
        )
        fake.add(
            "modelmonitor_feature_category_reference_ratio",
            share,
            namespace="a",
            model="m",
            version="v1",
            feature="colour",
            category=category,
        )
    fake.add(
        "modelmonitor_feature_category_reference_ratio",
        0.0,
        namespace="a",
        model="m",
        version="v1",
        feature="colour",
        category="__other__",
    )
    item = request("dataDrift", ns="a", model="m", drift_method="linf")
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result) == (pytest.approx(0.4),)  # |0.9 - 0.5|
    assert samples_of(result) == 100


def test_data_drift_across_versions_reports_the_worst_version() -> None:
    fake = FakePrometheus()
    add_histogram(fake, "a", "m", "v1", "age", (25, 25, 25, 25))
    add_histogram(fake, "a", "m", "v2", "age", (0, 0, 0, 40))
    item = request("dataDrift", ns="a", model="m")
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result)[0] > 1
    assert samples_of(result) == 40
    assert "version 'v2'" in said(result)


def test_data_drift_skips_features_whose_bounds_changed() -> None:
    fake = FakePrometheus()
    add_histogram(fake, "a", "m", "v1", "age", (25, 25, 25, 25))
    fake.add("modelmonitor_feature_value_bucket", 5, namespace="a", model="m", version="v1", feature="new", le="7")
    fake.add("modelmonitor_feature_value_bucket", 9, namespace="a", model="m", version="v1", feature="new", le="+Inf")
    fake.add("modelmonitor_feature_reference_ratio", 0.5, namespace="a", model="m", version="v1", feature="new", le="8")
    item = request("dataDrift", ns="a", model="m")
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result) == (pytest.approx(0.0),)
    assert "1 skipped" in said(result)


def test_data_drift_leaves_out_sparse_features_unless_all_are() -> None:
    fake = FakePrometheus()
    add_histogram(fake, "a", "m", "v1", "age", (25, 25, 25, 25))
    add_histogram(fake, "a", "m", "v1", "rare", (0, 0, 0, 5))  # huge PSI on 5 rows
    item = request("dataDrift", ns="a", model="m", min_samples=50)
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result) == (pytest.approx(0.0),)
    assert samples_of(result) == 100
    assert "1 skipped" in said(result)

    unfiltered = request("dataDrift", ns="a", model="m", policy="any")
    assert numbers(measure([unfiltered], fake, at=AT).results[unfiltered])[0] > 1

    strict = request("dataDrift", ns="a", model="m", min_samples=500, policy="strict")
    result = measure([strict], fake, at=AT).results[strict]
    # All features are sparse: the worst is reported with its few samples; the engine's minSamples says NoData.
    assert samples_of(result) == 5


def test_data_drift_with_an_idle_window_is_no_data() -> None:
    fake = FakePrometheus()
    add_histogram(fake, "a", "m", "v1", "age", (0, 0, 0, 0))
    item = request("dataDrift", ns="a", model="m")
    result = measure([item], fake, at=AT).results[item]
    assert result.kind is MeasurementKind.NO_DATA
    assert "no observations" in said(result)


def test_prediction_drift_auto_threshold() -> None:
    fake = FakePrometheus()
    for le, count, ratio in zip(BOUNDS, (0, 0, 50, 100), REFERENCE, strict=True):
        fake.add("modelmonitor_prediction_score_bucket", count, namespace="a", model="m", version="v1", le=le)
        fake.add("modelmonitor_prediction_reference_ratio", ratio, namespace="a", model="m", version="v1", le=le)
    item = request("predictionDrift", ns="a", model="m", auto_threshold=True, false_alarm_rate=0.01)
    result = measure([item], fake, at=AT).results[item]
    expected = window_test("psi", REFERENCE_SHARES, (0, 0, 50, 50), false_alarm_rate=0.01)
    assert result.threshold == pytest.approx(expected.threshold)
    assert numbers(result)[0] > 1
    assert "the prediction" in said(result)


# --- errors and invalid requests ---------------------------------------------------------------------------


def test_a_failed_query_is_an_error_for_exactly_the_requests_that_needed_it() -> None:
    fake = fleet(5)
    fake.failing["modelmonitor_requests_total"] = QueryError(ErrorKind.CONNECTION, "connection refused")
    cycle = measure(fleet_requests(5), fake, at=AT)
    for item, result in cycle.results.items():
        if item.signal == "errorRate":
            assert result.kind is MeasurementKind.ERROR
            assert numbers(result) == ()
            assert result.reason == "connection: connection refused"
            assert result.query
        else:
            assert result.kind is MeasurementKind.VALUES
    assert cycle.failed_queries == 1


def test_warnings_reach_the_results() -> None:
    fake = fleet(2)
    fake.warnings = ("PromQL info: metric might not be a counter",)
    cycle = measure(fleet_requests(2, ("accuracy",)), fake, at=AT)
    assert all(r.warnings == fake.warnings for r in cycle.results.values())


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (request("accuracy", window="10 minutes"), "window '10 minutes'"),
        (request("accuracy", window="30m1h"), "largest first"),
        (request("accurracy"), "signal 'accurracy': expected one of accuracy"),
        (request(None), "set exactly one of signal and query"),
        (request("accuracy", query="up"), "set exactly one of signal and query"),
        (request("accuracy", auto_threshold=True), "threshold auto: only dataDrift and predictionDrift"),
        (request("dataDrift", drift_method="ks"), "drift method 'ks'"),
        (request("dataDrift", drift_method="nope"), "expected one of psi, jensen_shannon, hellinger, linf"),
        (request("dataDrift", drift_method="chi_square"), "drift method 'chi_square'"),
        (request("accuracy", min_samples=-1), "minSamples -1: expected >= 0"),
        (request(None, query="m{model={{modle}}}"), "unknown placeholder {{modle}}"),
        (request(None, query="m{version={{version}}}"), "{{version}} has no value"),
    ],
)
def test_invalid_requests_are_invalid_and_cost_no_query(item: SignalRequest, message: str) -> None:
    fake = FakePrometheus()
    result = measure([item], fake, at=AT).results[item]
    assert result.kind is MeasurementKind.INVALID
    assert message in said(result)
    assert fake.asked == []


def test_every_builtin_signal_plans_a_query() -> None:
    fake = FakePrometheus()
    for signal in BUILTIN_SIGNALS:
        item = request(signal, ns="a", model="m")
        fake.canned.clear()

        def answer_empty(promql: str, *, at: datetime | None = None) -> QueryResult:
            return QueryResult(query=promql, result_type="vector")

        fake.query = answer_empty  # type: ignore[method-assign]
        result = measure([item], fake, at=AT).results[item]
        assert result.kind is MeasurementKind.NO_DATA, (signal, result)
        assert result.query and "modelmonitor_" in result.query


# --- query: templates --------------------------------------------------------------------------------------


def test_templates_are_rendered_per_monitor_with_quoted_values() -> None:
    template = (
        "max by (pod) (my_queue_depth{namespace={{namespace}}, app={{model}}}) / on() group_left scalar(vector(1))"
    )
    first = request(None, ns="a", model='we"ird', query=template, policy="queue")
    second = request(None, ns="b", model="plain", query=template, policy="queue")
    fake = FakePrometheus()
    rendered_first = 'max by (pod) (my_queue_depth{namespace="a", app="we\\"ird"}) / on() group_left scalar(vector(1))'
    fake.canned[rendered_first] = QueryResult(
        query=rendered_first,
        result_type="vector",
        samples=(Sample({"pod": "p1"}, 3.0, 0), Sample({"pod": "p2"}, math.nan, 0), Sample({"pod": "p3"}, 5.0, 0)),
    )
    rendered_second = rendered_first.replace('"a"', '"b"').replace('"we\\"ird"', '"plain"')
    fake.canned[rendered_second] = QueryResult(query=rendered_second, result_type="vector")
    cycle = measure([first, second], fake, at=AT)
    assert cycle.template_queries == 2
    assert cycle.batched_queries == 0
    assert numbers(cycle.results[first]) == (3.0, 5.0)  # NaN dropped; several series -> several values
    assert labels_of(cycle.results[first]) == ((("pod", "p1"),), (("pod", "p3"),))
    assert samples_of(cycle.results[first]) is None
    assert cycle.results[first].query == rendered_first
    assert cycle.results[second].kind is MeasurementKind.NO_DATA
    assert "no series" in said(cycle.results[second])


def test_template_answering_only_nan_is_no_data() -> None:
    item = request(None, query="x{model={{model}}}")
    fake = FakePrometheus()
    fake.canned['x{model="fraud"}'] = QueryResult(query="", result_type="scalar", samples=(Sample({}, math.nan, 0),))
    result = measure([item], fake, at=AT).results[item]
    assert result.kind is MeasurementKind.NO_DATA
    assert "only NaN" in said(result)


def test_templates_cost_one_query_each_and_builtins_stay_batched() -> None:
    n = 20
    fake = fleet(n)
    templated = [request(None, ns=f"ns-{i % 7}", model=f"model-{i}", query="vector(1)", policy="t") for i in range(n)]
    fake.canned["vector(1)"] = QueryResult(query="vector(1)", result_type="vector", samples=(Sample({}, 1.0, 0),))
    cycle = measure([*fleet_requests(n), *templated], fake, at=AT)
    # The same rendered text is asked once, and counted as a template query.
    assert cycle.template_queries == 1
    assert cycle.batched_queries == 5
    assert cycle.queries == 6


# --- spec.model.labels -------------------------------------------------------------------------------------


def two_clusters() -> FakePrometheus:
    """Model m in namespace a runs in two clusters with different numbers (series labelled by `cluster`)."""
    fake = FakePrometheus()
    for cluster, (tp, fp), errors, fast in (("eu-1", (90, 10), 5, 900), ("us-1", (50, 50), 50, 100)):
        for outcome, value in (("tp", tp), ("fp", fp)):
            fake.add(
                "modelmonitor_labeled_predictions_total",
                value,
                namespace="a",
                model="m",
                version="v1",
                group="all",
                outcome=outcome,
                cluster=cluster,
            )
        fake.add(
            "modelmonitor_requests_total", 1000, namespace="a", model="m", version="v1", code="2xx", cluster=cluster
        )
        fake.add("modelmonitor_request_errors_total", errors, namespace="a", model="m", version="v1", cluster=cluster)
        add_latency(fake, "a", "m", (fast, 1000, 1000, 1000), cluster=cluster)
        add_histogram(fake, "a", "m", "v1", "age", (25, 25, 25, 25) if cluster == "eu-1" else (0, 0, 10, 90))
        for metric in ("modelmonitor_feature_value_bucket", "modelmonitor_feature_reference_ratio"):
            fake.series[metric][-4:] = [
                ({**labels, "cluster": cluster}, value) for labels, value in fake.series[metric][-4:]
            ]
    return fake


def test_model_labels_narrow_every_builtin_signal_with_one_query_per_kind() -> None:
    fake = two_clusters()
    signals = ("precision", "errorRate", "latencyP50", "dataDrift")
    eu = [request(s, ns="a", model="m", labels=(("cluster", "eu-1"),), policy=f"eu-{s}") for s in signals]
    us = [request(s, ns="a", model="m", labels=(("cluster", "us-1"),), policy=f"us-{s}") for s in signals]
    everywhere = [request(s, ns="a", model="m", policy=f"all-{s}") for s in signals]
    cycle = measure([*eu, *us, *everywhere], fake, at=AT)
    # precision 1, errorRate 2, latency 1, dataDrift 4: the same as for one monitor.
    assert cycle.batched_queries == 8
    assert all("cluster" in text for text, _ in fake.asked)
    results = {item.policy: cycle.results[item] for item in [*eu, *us, *everywhere]}
    assert numbers(results["eu-precision"]) == (pytest.approx(0.9),)
    assert numbers(results["us-precision"]) == (pytest.approx(0.5),)
    assert numbers(results["all-precision"]) == (pytest.approx(140 / 200),)  # summed over the clusters
    assert numbers(results["eu-errorRate"]) == (pytest.approx(0.005),)
    assert numbers(results["us-errorRate"]) == (pytest.approx(0.05),)
    assert numbers(results["all-errorRate"]) == (pytest.approx(55 / 2000),)
    # latency: eu has 900 of 1000 requests under 0.1 s, us 100; the merged histogram 1000 of 2000.
    assert numbers(results["eu-latencyP50"]) == (pytest.approx(0.1 * 500 / 900),)
    assert numbers(results["us-latencyP50"]) == (pytest.approx(0.1 + 0.1 * 400 / 900),)
    assert numbers(results["all-latencyP50"]) == (pytest.approx(0.1),)
    assert numbers(results["eu-dataDrift"]) == (pytest.approx(0.0),)
    assert numbers(results["us-dataDrift"])[0] > 1
    assert samples_of(results["all-dataDrift"]) == 200  # both clusters' counts in one histogram


def test_model_labels_without_matching_series_are_no_data_naming_the_labels() -> None:
    fake = two_clusters()
    item = request("precision", ns="a", model="m", labels=(("cluster", "ap-9"),))
    result = measure([item], fake, at=AT).results[item]
    assert result.kind is MeasurementKind.NO_DATA
    assert 'cluster="ap-9"' in result.reason and "spec.model.labels" in result.reason


def test_cpu_joins_on_the_extra_labels_too() -> None:
    fake = FakePrometheus()
    item = request("cpu", ns="a", model="m", window="5m", labels=(("cluster", "eu-1"),))
    text = (
        "group by (namespace, pod, cluster, model, version) (modelmonitor_request_errors_total) * on (namespace, pod, "
        "cluster) group_left () sum by (namespace, pod, cluster) "
        '(rate(container_cpu_usage_seconds_total{container!="", container!="POD"}[5m]))'
    )
    fake.canned[text] = QueryResult(
        query=text,
        result_type="vector",
        samples=tuple(
            Sample({"namespace": "a", "model": "m", "version": "v1", "pod": "m-1", "cluster": cluster}, value, 0)
            for cluster, value in (("eu-1", 0.25), ("us-1", 2.0))
        ),
    )
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result) == (0.25,)


# --- method ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["psi", "jensen_shannon", "hellinger", "linf"])
def test_drift_method_is_used_and_named(method: str) -> None:
    fake = FakePrometheus()
    add_histogram(fake, "a", "m", "v1", "age", (25, 25, 25, 25))
    add_histogram(fake, "a", "m", "v1", "income", (10, 10, 10, 70))
    plain = request("dataDrift", ns="a", model="m", drift_method=method)
    auto = request(
        "dataDrift", ns="a", model="m", drift_method=method, auto_threshold=True, false_alarm_rate=0.01, policy="auto"
    )
    cycle = measure([plain, auto], fake, at=AT)
    expected = METHODS[method].function(np.array([0.25] * 4), np.array([10.0, 10, 10, 70]))
    assert numbers(cycle.results[plain]) == (pytest.approx(expected),)
    assert cycle.results[plain].detail.startswith(f"method {method}: ")
    assert "feature 'income'" in cycle.results[plain].detail
    # The auto threshold is the method's own, for income's 100 rows (the policy's 1% over two features).
    income = window_test(method, REFERENCE_SHARES, (10, 10, 10, 70), false_alarm_rate=0.005)
    assert cycle.results[auto].threshold == pytest.approx(income.threshold)


def test_the_engine_message_carries_the_detail() -> None:
    from modelmonitor.policy.model import Op, Rule
    from modelmonitor.policy.outcome import classify

    fake = FakePrometheus()
    add_histogram(fake, "a", "m", "v1", "income", (10, 10, 10, 70))
    item = request("dataDrift", ns="a", model="m", drift_method="hellinger")
    measured = measure([item], fake, at=AT).results[item]
    outcome = classify(Rule("drift", Op.GT, 0.1, window="10m"), measured)
    assert outcome.reason.startswith("value ")
    assert "method hellinger" in outcome.reason and "feature 'income'" in outcome.reason


def test_every_method_the_api_offers_compares_proportions() -> None:
    """The API's `method` enum is what summed counts against reference proportions can compute."""
    from modelmonitor.signals import FLEET_DRIFT_METHODS

    assert FLEET_DRIFT_METHODS == ("psi", "jensen_shannon", "hellinger", "linf")
    assert all(METHODS[name].input == "counts" for name in FLEET_DRIFT_METHODS)
    assert all(METHODS[name].direction == "higher_is_drift" for name in FLEET_DRIFT_METHODS)


# --- labels: coverage, multiclass, regression, estimated accuracy -----------------------------------------


def test_label_coverage_is_joined_labels_over_predictions_that_waited_for_one() -> None:
    fake = FakePrometheus()
    for version, joined, waited in (("v1", 30, 100), ("v2", 10, 100)):
        labels = {"namespace": "a", "model": "m", "version": version}
        fake.add("modelmonitor_labels_received_total", joined, result="joined", **labels)
        fake.add("modelmonitor_labels_received_total", 500, result="unmatched", **labels)
        fake.add("modelmonitor_label_predictions_total", waited, **labels)
    item = request("labelCoverage", ns="a", model="m")
    result = measure([item], fake, at=AT).results[item]
    # unmatched labels are not coverage; both versions (replicas) sum
    assert numbers(result) == (pytest.approx(40 / 200),)
    assert samples_of(result) == 200
    assert "40 labels joined over 10m / 200 predictions over 10m" in said(result)


def test_label_delay_sets_the_labels_against_the_predictions_of_an_earlier_window() -> None:
    fake = FakePrometheus()
    labels = {"namespace": "a", "model": "m", "version": "v1"}
    fake.add("modelmonitor_labels_received_total", 90, result="joined", **labels)
    fake.add("modelmonitor_label_predictions_total", 300, **labels)  # traffic rose: now 300 per window
    fake.add("modelmonitor_label_predictions_total", 100, offset="1h", **labels)  # an hour ago: 100
    item = request("labelCoverage", ns="a", model="m", label_delay="1h")
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result) == (pytest.approx(0.9),)
    assert "offset 1h" in result.queries[1]
    assert "ending 1h ago" in said(result)
    undelayed = request("labelCoverage", ns="a", model="m", policy="now")
    assert numbers(measure([undelayed], fake, at=AT).results[undelayed]) == (pytest.approx(0.3),)


def test_label_coverage_without_predictions_is_no_data_and_a_stopped_pipeline_is_zero() -> None:
    fake = FakePrometheus()
    fake.add("modelmonitor_label_predictions_total", 0, namespace="a", model="idle", version="v1")
    fake.add("modelmonitor_label_predictions_total", 50, namespace="a", model="broken", version="v1")
    idle, broken = request("labelCoverage", ns="a", model="idle"), request("labelCoverage", ns="a", model="broken")
    results = measure([idle, broken], fake, at=AT).results
    assert results[idle].kind is MeasurementKind.NO_DATA
    assert "no prediction waited for a label" in said(results[idle])
    # No joined-label series at all while predictions waited: the pipeline delivers nothing, coverage 0.
    assert numbers(results[broken]) == (0.0,)


def add_matured_confusion(
    fake: FakePrometheus, version: str, maturity: str, group: str = "all", **counts: float
) -> None:
    for outcome, value in counts.items():
        fake.add(
            "modelmonitor_matured_labeled_predictions_total",
            value,
            namespace="a",
            model="m",
            version=version,
            group=group,
            outcome=outcome,
            maturity=maturity,
        )


def test_label_delay_judges_accuracy_on_the_maturity_cohort_of_every_replica() -> None:
    fake = FakePrometheus()
    # As labels joined: fast positives over-represented; the 1d cohort: every label that came within a day.
    add_confusion(fake, "a", "m", "v1", tp=50, fp=0, tn=10, fn=0)
    add_matured_confusion(fake, "v1", "1d", tp=30, fp=10, tn=40, fn=10)
    add_matured_confusion(fake, "v2", "1d", tp=10, fp=0, tn=10, fn=0)
    add_matured_confusion(fake, "v1", "1h", tp=1, fp=0, tn=0, fn=0)
    # 24h is the 1d maturity: the sidecar and the policy need not write it alike
    accuracy = request("accuracy", ns="a", model="m", label_delay="24h")
    recall = request("recall", ns="a", model="m", label_delay="1d")
    cycle = measure([accuracy, recall], fake, at=AT)
    assert cycle.batched_queries == 1
    assert numbers(cycle.results[accuracy]) == (pytest.approx(90 / 110),)
    assert samples_of(cycle.results[accuracy]) == 110
    assert numbers(cycle.results[recall]) == (pytest.approx(40 / 50),)
    assert 'maturity="1d"' in cycle.results[accuracy].query
    assert "predictions 1d old with their labels joined by then" in said(cycle.results[accuracy])
    undelayed = request("accuracy", ns="a", model="m", policy="as-joined")
    assert numbers(measure([undelayed], fake, at=AT).results[undelayed]) == (pytest.approx(1.0),)


def test_label_delay_judges_equal_opportunity_on_the_cohort_per_group() -> None:
    fake = FakePrometheus()
    add_confusion(fake, "a", "m", "v1", group="f", tp=10, fn=0)
    add_confusion(fake, "a", "m", "v1", group="m", tp=10, fn=0)
    for group, (tp, fn) in {"f": (8, 2), "m": (5, 5)}.items():
        add_matured_confusion(fake, "v1", "1d", group=group, tp=tp, fn=fn)
    item = request("equalOpportunityGap", ns="a", model="m", label_delay="1d")
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result) == (pytest.approx(0.8 - 0.5),)
    assert "predictions 1d old" in said(result)
    undelayed = request("equalOpportunityGap", ns="a", model="m", policy="as-joined")
    assert numbers(measure([undelayed], fake, at=AT).results[undelayed]) == (0.0,)


def test_label_delay_without_a_matured_cohort_is_no_data_naming_the_sidecar_flag() -> None:
    fake = FakePrometheus()
    add_confusion(fake, "a", "m", "v1", tp=50, fp=0, tn=10, fn=0)
    add_matured_confusion(fake, "v1", "1h", tp=1, fp=0, tn=0, fn=0)
    item = request("f1", ns="a", model="m", label_delay="2h")
    result = measure([item], fake, at=AT).results[item]
    assert result.kind is MeasurementKind.NO_DATA
    assert "no matured outcomes at 2h" in said(result)
    assert "start the sidecars with --label-maturity 2h" in said(result)


@pytest.mark.parametrize("signal", ["estimatedAccuracy", "dataDrift", "errorRate", "fairnessGap"])
def test_label_delay_is_invalid_on_other_signals(signal: str) -> None:
    item = request(signal, label_delay="1h")
    result = measure([item], FakePrometheus(), at=AT).results[item]
    assert result.kind is MeasurementKind.INVALID
    assert "labelDelay: only labelCoverage" in said(result)


def add_class_outcomes(fake: FakePrometheus, version: str, **counts: tuple[float, float, float]) -> None:
    for name, (tp, fp, fn) in counts.items():
        for outcome, value in (("tp", tp), ("fp", fp), ("fn", fn)):
            fake.add(
                "modelmonitor_class_outcomes_total",
                value,
                namespace="a",
                model="m",
                version=version,
                **{"class": name, "outcome": outcome},
            )


def test_multiclass_accuracy_and_macro_f1_from_per_class_outcomes_summed_over_replicas() -> None:
    fake = FakePrometheus()
    # Two replicas' counts of one model; summed: cat (8, 2, 4), dog (5, 4, 1), bird (2, 1, 2), __other__ 0.
    add_class_outcomes(fake, "v1", cat=(5, 1, 2), dog=(3, 2, 1), bird=(2, 1, 1), __other__=(0, 0, 0))
    add_class_outcomes(fake, "v2", cat=(3, 1, 2), dog=(2, 2, 0), bird=(0, 0, 1), __other__=(0, 0, 0))
    accuracy, f1 = request("multiclassAccuracy", ns="a", model="m"), request("macroF1", ns="a", model="m")
    cycle = measure([accuracy, f1], fake, at=AT)
    assert cycle.batched_queries == 1
    labeled = (8 + 4) + (5 + 1) + (2 + 2)
    assert numbers(cycle.results[accuracy]) == (pytest.approx(15 / labeled),)
    assert samples_of(cycle.results[accuracy]) == labeled
    expected_f1 = np.mean([2 * 8 / (16 + 2 + 4), 2 * 5 / (10 + 4 + 1), 2 * 2 / (4 + 1 + 2)])
    assert numbers(cycle.results[f1]) == (pytest.approx(expected_f1),)
    assert "mean F1 of 3 classes" in said(cycle.results[f1])  # __other__ never occurred: not averaged


def test_multiclass_without_labels_is_no_data() -> None:
    fake = FakePrometheus()
    add_class_outcomes(fake, "v1", cat=(0, 0, 0))
    item = request("macroF1", ns="a", model="m")
    result = measure([item], fake, at=AT).results[item]
    assert result.kind is MeasurementKind.NO_DATA
    assert "no labeled predictions" in said(result)


def test_label_delay_judges_multiclass_and_regression_models_on_their_cohorts() -> None:
    fake = FakePrometheus()
    add_class_outcomes(fake, "v1", cat=(50, 0, 0))  # as labels joined: all right
    for name, (tp, fp, fn) in {"cat": (6, 2, 1), "dog": (3, 1, 2)}.items():
        for outcome, value in (("tp", tp), ("fp", fp), ("fn", fn)):
            fake.add(
                "modelmonitor_matured_class_outcomes_total",
                value,
                namespace="a",
                model="m",
                version="v1",
                maturity="1d",
                **{"class": name, "outcome": outcome},
            )
    labels = {"namespace": "a", "model": "m", "version": "v1"}
    fake.add("modelmonitor_regression_absolute_error_total", 1.0, **labels)
    fake.add("modelmonitor_regression_labeled_predictions_total", 10, **labels)
    fake.add("modelmonitor_matured_regression_absolute_error_total", 30.0, maturity="1d", **labels)
    fake.add("modelmonitor_matured_regression_squared_error_total", 160.0, maturity="1d", **labels)
    fake.add("modelmonitor_matured_regression_labeled_predictions_total", 10, maturity="1d", **labels)
    accuracy, mae, rmse = (
        request(s, ns="a", model="m", label_delay="1d") for s in ("multiclassAccuracy", "mae", "rmse")
    )
    results = measure([accuracy, mae, rmse], fake, at=AT).results
    assert numbers(results[accuracy]) == (pytest.approx(9 / 12),)
    assert numbers(results[mae]) == (pytest.approx(3.0),)
    assert numbers(results[rmse]) == (pytest.approx(4.0),)
    assert all("predictions 1d old" in said(results[item]) for item in (accuracy, mae, rmse))
    missing = request("macroF1", ns="a", model="m", label_delay="1h")
    assert "--label-maturity 1h" in said(measure([missing], fake, at=AT).results[missing])


def test_mae_and_rmse_from_error_sums_and_counts() -> None:
    fake = FakePrometheus()
    for version, absolute, squared, labeled in (("v1", 30.0, 200.0, 10), ("v2", 10.0, 40.0, 10)):
        labels = {"namespace": "a", "model": "m", "version": version}
        fake.add("modelmonitor_regression_absolute_error_total", absolute, **labels)
        fake.add("modelmonitor_regression_squared_error_total", squared, **labels)
        fake.add("modelmonitor_regression_labeled_predictions_total", labeled, **labels)
    mae, rmse = request("mae", ns="a", model="m"), request("rmse", ns="a", model="m")
    results = measure([mae, rmse], fake, at=AT).results
    assert numbers(results[mae]) == (pytest.approx(40 / 20),)
    assert numbers(results[rmse]) == (pytest.approx(math.sqrt(240 / 20)),)
    assert samples_of(results[rmse]) == 20


def test_estimated_accuracy_is_summed_probabilities_over_scored_predictions() -> None:
    fake = FakePrometheus()
    for version, correct, predictions in (("v1", 80.5, 100), ("v2", 150.0, 200)):
        labels = {"namespace": "a", "model": "m", "version": version}
        fake.add("modelmonitor_estimated_correct_total", correct, **labels)
        fake.add("modelmonitor_estimated_predictions_total", predictions, **labels)
    item = request("estimatedAccuracy", ns="a", model="m")
    result = measure([item], fake, at=AT).results[item]
    assert numbers(result) == (pytest.approx(230.5 / 300),)
    assert samples_of(result) == 300
    assert "covariate shift" in said(result)
    fake.add("modelmonitor_estimated_predictions_total", 0, namespace="a", model="idle", version="v1")
    idle = request("estimatedAccuracy", ns="a", model="idle")
    assert "score calibration" in said(measure([idle], fake, at=AT).results[idle])


def test_estimated_precision_and_recall_share_the_expected_true_positives() -> None:
    fake = FakePrometheus()
    labels = {"namespace": "a", "model": "m", "version": "v1"}
    fake.add("modelmonitor_estimated_true_positives_total", 36.0, **labels)
    fake.add("modelmonitor_estimated_positive_predictions_total", 40, **labels)
    fake.add("modelmonitor_estimated_positives_total", 45.0, **labels)
    precision, recall = request("estimatedPrecision", ns="a", model="m"), request("estimatedRecall", ns="a", model="m")
    cycle = measure([precision, recall], fake, at=AT)
    assert cycle.batched_queries == 3  # the expected true positives are asked once
    assert numbers(cycle.results[precision]) == (pytest.approx(0.9),)
    assert samples_of(cycle.results[precision]) == 40
    assert numbers(cycle.results[recall]) == (pytest.approx(0.8),)
    assert "positive predictions" in said(cycle.results[precision])
