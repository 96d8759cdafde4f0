"""Ingest and the exported metric values, read back through a fresh CollectorRegistry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from conftest import WINDOW, reference_rows
from modelmonitor.sidecar import BatchError, Monitor, MonitorSettings
from modelmonitor.sidecar.profile import NumericalReference, Profile

M = {"model": "churn", "version": "v3"}


def scrape(profile: Profile, **settings: object) -> tuple[Monitor, CollectorRegistry]:
    monitor = Monitor(profile, model="churn", version="v3", settings=MonitorSettings(**settings))  # type: ignore[arg-type]
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    return monitor, registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**M, **labels})


def events(rows: list[dict[str, object]], **extra: object) -> list[dict[str, object]]:
    return [{"request_id": f"r{i}", "features": row, **extra} for i, row in enumerate(rows)]


def test_feature_histogram_buckets_are_the_reference_bounds(profile: Profile) -> None:
    monitor, registry = scrape(profile)
    rows = reference_rows(500, seed=1)
    monitor.log_events(events(rows, prediction=1))
    age: NumericalReference = profile.feature("age").reference  # type: ignore[assignment]
    ages = np.array([r["age"] for r in rows])
    cumulative = np.cumsum(np.bincount(np.searchsorted(age.bounds, ages, "left"), minlength=age.bounds.size + 1))
    for bound, expected in zip(age.bounds, cumulative[:-1], strict=True):
        le = repr(float(bound)) if "e" not in repr(float(bound)) else str(bound)
        assert value(registry, "modelmonitor_feature_value_bucket", feature="age", le=le) == expected
    assert value(registry, "modelmonitor_feature_value_bucket", feature="age", le="+Inf") == 500
    assert value(registry, "modelmonitor_feature_value_count", feature="age") == 500
    assert value(registry, "modelmonitor_feature_value_sum", feature="age") == pytest.approx(ages.sum())
    # the reference ratio beside each bound is what _bucket/_count reads without drift: about 0.1, 0.2, ...
    first = value(registry, "modelmonitor_feature_reference_ratio", feature="age", le=repr(float(age.bounds[0])))
    assert first == pytest.approx(0.1, abs=0.01)
    assert value(registry, "modelmonitor_requests_total", code="2xx") == 500
    assert value(registry, "modelmonitor_feature_observations_total", feature="age") == 500
    assert value(registry, "modelmonitor_feature_category_total", feature="country", category="us") == sum(
        r["country"] == "us" for r in rows
    )
    assert value(registry, "modelmonitor_feature_category_reference_ratio", feature="country", category="us") == (
        pytest.approx(0.5, abs=0.03)
    )


def test_data_quality_counters(profile: Profile) -> None:
    monitor, registry = scrape(profile)
    rows = reference_rows(10, seed=2)
    rows[0]["age"] = None  # missing
    del rows[1]["income"]  # missing (absent)
    rows[2]["income"] = "a lot"  # wrong type
    rows[3]["age"] = 1000.0  # outside the reference range
    rows[4]["country"] = "atlantis"  # unseen category
    rows[5]["country"] = None
    monitor.log_events(events(rows))
    assert value(registry, "modelmonitor_feature_missing_total", feature="age") == 1
    assert value(registry, "modelmonitor_feature_missing_total", feature="income") == 1
    assert value(registry, "modelmonitor_feature_missing_total", feature="country") == 1
    assert value(registry, "modelmonitor_schema_violations_total", feature="income", kind="type") == 1
    assert value(registry, "modelmonitor_schema_violations_total", feature="age", kind="range") == 1
    assert value(registry, "modelmonitor_schema_violations_total", feature="country", kind="unseen_category") == 1
    # the unseen category is still counted, under __other__, so category shares add up
    assert value(registry, "modelmonitor_feature_category_total", feature="country", category="__other__") == 1
    assert value(registry, "modelmonitor_feature_value_count", feature="age") == 9  # missing is not binned


def test_drift_gauges_wait_for_a_full_window_then_show_drift_beside_the_threshold(profile: Profile) -> None:
    monitor, registry = scrape(profile)
    monitor.log_events(events(reference_rows(WINDOW - 1, seed=3)))
    assert value(registry, "modelmonitor_window_rows") == WINDOW - 1
    assert value(registry, "modelmonitor_drift_score", feature="age", method="psi") is None
    threshold = value(registry, "modelmonitor_drift_threshold", feature="age", method="psi")
    assert threshold == pytest.approx(profile.feature("age").thresholds["psi"])
    monitor.log_events(events(reference_rows(1, seed=4)))
    same = value(registry, "modelmonitor_drift_score", feature="age", method="psi")
    assert same is not None and same < threshold  # a window from the reference: below the calibrated threshold
    # a one-standard-deviation shift of age pushes every age score past its threshold, other features stay put
    monitor.log_events(events(reference_rows(WINDOW, seed=5, age_shift=10.0)))
    for method, limit in profile.feature("age").thresholds.items():
        score = value(registry, "modelmonitor_drift_score", feature="age", method=method)
        assert score is not None
        assert score < limit if method in ("ks", "chi_square") else score > limit, method
    assert (
        value(registry, "modelmonitor_drift_score", feature="gender", method="psi")
        < (  # type: ignore[operator]
            profile.feature("gender").thresholds["psi"]
        )
    )


def test_min_window_rows_exports_earlier(profile: Profile) -> None:
    monitor, registry = scrape(profile, min_window_rows=50)
    monitor.log_events(events(reference_rows(60, seed=6)))
    assert value(registry, "modelmonitor_drift_score", feature="age", method="ks_statistic") is not None


def test_predictions_scores_and_classes(profile: Profile) -> None:
    monitor, registry = scrape(profile)
    rows = reference_rows(4, seed=7)
    monitor.log_events(
        [
            {"features": rows[0], "prediction": 1, "score": 0.9},
            {"features": rows[1], "prediction": 0, "score": 0.2},
            {"features": rows[2], "prediction": "1", "score": 0.7},
            {"features": rows[3], "prediction": 7, "error": True, "latency_seconds": 0.2},
        ]
    )
    assert value(registry, "modelmonitor_prediction_class_total", **{"class": "1"}) == 2
    assert value(registry, "modelmonitor_prediction_class_total", **{"class": "0"}) == 1
    assert value(registry, "modelmonitor_prediction_class_total", **{"class": "__other__"}) == 1
    assert value(registry, "modelmonitor_prediction_score_count") == 3
    assert value(registry, "modelmonitor_prediction_score_sum") == pytest.approx(1.8)
    assert value(registry, "modelmonitor_requests_total", code="5xx") == 1
    assert value(registry, "modelmonitor_request_errors_total") == 1
    assert value(registry, "modelmonitor_request_duration_seconds_count") == 1
    assert value(registry, "modelmonitor_request_duration_seconds_bucket", le="0.25") == 1
    assert value(registry, "modelmonitor_request_duration_seconds_bucket", le="0.1") == 0
    by_group = {
        (g, p): value(registry, "modelmonitor_group_predictions_total", group=g, predicted=p)
        for g in ("f", "m")
        for p in ("positive", "negative")
    }
    assert sum(v or 0 for v in by_group.values()) == 4


def test_columnar_batch_api_matches_event_api(profile: Profile) -> None:
    rows = reference_rows(300, seed=8)
    by_events, reg_events = scrape(profile)
    by_events.log_events(events(rows, prediction=1))
    by_columns, reg_columns = scrape(profile)
    columns = {name: [r[name] for r in rows] for name in profile.feature_names}
    by_columns.log_batch(columns, predictions=[1] * 300, request_ids=[f"r{i}" for i in range(300)])
    assert generate_latest(reg_events) == generate_latest(reg_columns)


def test_numeric_matrix_with_nan_as_missing(profile: Profile) -> None:
    from modelmonitor.sidecar.datafiles import Table
    from modelmonitor.sidecar.profile_build import BuildOptions, build_profile

    rng = np.random.default_rng(0)
    table = Table(columns={f"f{j}": rng.normal(size=1000) for j in range(3)}, rows=1000, path="t.npz")
    numeric, _ = build_profile(table, BuildOptions(window_size=100, n_boot=100))
    monitor, registry = scrape(numeric)
    matrix = rng.normal(size=(50, 3))
    matrix[0, 1] = np.nan
    assert monitor.log_batch(matrix) == 50
    assert value(registry, "modelmonitor_feature_missing_total", feature="f1") == 1
    with pytest.raises(BatchError, match=r"expected shape \(rows, 3\)"):
        monitor.log_batch(rng.normal(size=(5, 4)))
    with pytest.raises(BatchError, match="infinite"):
        monitor.log_batch(np.full((2, 3), np.inf))


@pytest.mark.parametrize(
    ("event", "reason", "message"),
    [
        ({"features": {"age": 1, "height": 2}}, "unknown_feature", "'height' is not a feature"),
        ({"features": {"age": math.nan}}, "non_finite", r"events\[0\].features.age: NaN or infinite"),
        ({"features": {"age": math.inf}}, "non_finite", "NaN or infinite"),
        ({"features": [1, 2]}, "wrong_shape", r"events\[0\].features: 2 values, the profile has 4"),
        ({"features": "age=3"}, "wrong_shape", "expected an object of feature values or a list"),
        ({"feature": {}}, "unknown_field", "unknown field 'feature'"),
        ({"features": {}, "score": "high"}, "bad_value", r"events\[0\].score: expected a number"),
        ({"features": {}, "error": "yes"}, "bad_value", r"events\[0\].error: expected true or false"),
        ({"features": {}, "request_id": ["a"]}, "bad_value", "request_id: expected a string"),
    ],
)
def test_bad_events_are_refused_whole(profile: Profile, event: dict[str, object], reason: str, message: str) -> None:
    monitor, registry = scrape(profile)
    good = {"features": reference_rows(1, seed=0)[0]}
    with pytest.raises(BatchError, match=message) as caught:
        monitor.log_events([event, good])
    assert caught.value.reason == reason
    assert value(registry, "modelmonitor_requests_total", code="2xx") == 0  # nothing of the batch was counted


def test_memory_is_bounded_by_the_window_and_label_store(profile: Profile) -> None:
    monitor, registry = scrape(profile, label_capacity=1000)
    for batch in range(20):
        rows = reference_rows(500, seed=batch)
        monitor.log_events(
            [{"request_id": f"b{batch}-{i}", "features": r, "prediction": 1} for i, r in enumerate(rows)]
        )
    assert monitor.numerical_window.data.shape[0] == WINDOW
    assert len(monitor.labels) == 1000
    assert value(registry, "modelmonitor_predictions_expired_total") == 9000
    assert value(registry, "modelmonitor_labels_pending") == 1000


def test_prediction_thresholds_sit_beside_the_feature_thresholds(profile: Profile) -> None:
    monitor, registry = scrape(profile)
    assert profile.prediction is not None
    for method, threshold in profile.prediction.score_thresholds.items():
        assert value(registry, "modelmonitor_drift_threshold", feature="__prediction__", method=method) == (
            pytest.approx(threshold)
        )
    monitor.log_events([{"features": r, "score": 0.99} for r in reference_rows(WINDOW, seed=9)])
    # every score at 0.99: far from the reference scores
    psi = value(registry, "modelmonitor_prediction_drift_score", method="psi")
    assert psi is not None and psi > profile.prediction.score_thresholds["psi"]
