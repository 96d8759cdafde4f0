"""More than binary, and accuracy before labels: the profile's task and score calibration, and the counters the
sidecar keeps for them (multiclass outcomes, regression errors, label coverage, estimated accuracy), read back
through a fresh CollectorRegistry and checked against values computed here from the same rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from modelmonitor.sidecar import Monitor
from modelmonitor.sidecar import profile as profile_io
from modelmonitor.sidecar.datafiles import Table
from modelmonitor.sidecar.profile import Profile, ProfileError
from modelmonitor.sidecar.profile_build import BuildError, BuildOptions, build_profile
from modelmonitor.stats.probability import calibrated, fit_isotonic

M = {"model": "m", "version": "v1"}


def monitored(profile: Profile) -> tuple[Monitor, CollectorRegistry]:
    monitor = Monitor(profile, model="m", version="v1")
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    return monitor, registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**M, **labels})


def build(columns: dict[str, np.ndarray], **options: object) -> Profile:
    rows = len(next(iter(columns.values())))
    table = Table(columns=columns, rows=rows, path="reference.npz")  # type: ignore[arg-type]
    profile, _notes = build_profile(table, BuildOptions(window_size=100, n_boot=50, false_alarm_rate=0.1, **options))  # type: ignore[arg-type]
    return profile


def objects(values: list[str]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


# --- the task --------------------------------------------------------------------------------------------


def test_the_task_is_inferred_from_the_label_column_and_survives_a_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=600)
    three = objects([str(v) for v in rng.choice(["cat", "dog", "bird"], size=600)])
    two = objects([str(v) for v in rng.choice(["yes", "no"], size=600)])
    assert build({"x": x, "y": three}, label_column="y").task == "multiclass"
    assert build({"x": x, "y": two}, label_column="y").task == "binary"
    assert build({"x": x, "y": x * 3 + rng.normal(size=600)}, label_column="y").task == "regression"
    # a positive class named makes a binary model of many classes (one against the rest)
    assert build({"x": x, "y": three}, label_column="y", positive_class="cat").task == "binary"
    multiclass = build({"x": x, "y": three}, label_column="y")
    assert multiclass.positive_class is None
    profile_io.save(multiclass, tmp_path / "p.json")
    assert profile_io.load(tmp_path / "p.json").task == "multiclass"
    # --task regression on a few distinct numbers: the predictions are values, not classes
    few = np.round(x)
    forced = build({"x": x, "pred": few, "y": few}, label_column="y", prediction_column="pred", task="regression")
    assert forced.prediction is not None and forced.prediction.classes is None and forced.prediction.score is not None
    with pytest.raises(BuildError, match="--task regression: column 'y' must hold numbers"):
        build({"x": x, "y": three}, label_column="y", task="regression")
    with pytest.raises(BuildError, match="--positive-class is for binary models, not multiclass"):
        build({"x": x, "y": three}, label_column="y", task="multiclass", positive_class="cat")


def test_a_profile_with_an_unknown_task_or_a_decreasing_calibration_is_refused() -> None:
    rng = np.random.default_rng(2)
    score = rng.random(500)
    label = (rng.random(500) < score).astype(np.float64)
    document = profile_io.to_json(build({"x": rng.normal(size=500), "score": score, "y": label},
                                        score_column="score", label_column="y"))  # fmt: skip
    assert document["calibration"]["method"] == "isotonic"
    with pytest.raises(ProfileError, match="task: expected one of binary, multiclass, regression, got 'ranking'"):
        profile_io.from_json({**document, "task": "ranking"})
    broken = {**document["calibration"], "probabilities": document["calibration"]["probabilities"][::-1]}
    with pytest.raises(ProfileError, match=r"calibration\.probabilities: must be non-decreasing"):
        profile_io.from_json({**document, "calibration": broken})


# --- multiclass and regression counters --------------------------------------------------------------------


def test_multiclass_outcomes_per_class_from_joined_labels() -> None:
    rng = np.random.default_rng(3)
    classes = ["cat", "dog", "bird"]
    x = rng.normal(size=900)
    profile = build({"x": x, "y": objects([str(c) for c in rng.choice(classes, size=900)])}, label_column="y")
    monitor, registry = monitored(profile)
    predicted = [str(c) for c in rng.choice(classes, size=300)]
    truth = [p if rng.random() < 0.6 else str(rng.choice(classes)) for p in predicted]
    ids = [f"r{i}" for i in range(300)]
    monitor.log_batch({"x": rng.normal(size=300)}, predictions=predicted, request_ids=ids)
    assert monitor.log_labels(list(zip(ids[:250], truth[:250], strict=True))) == {"joined": 250}
    for name in classes:
        tp = sum(p == t == name for p, t in zip(predicted[:250], truth[:250], strict=True))
        fp = sum(p == name != t for p, t in zip(predicted[:250], truth[:250], strict=True))
        fn = sum(t == name != p for p, t in zip(predicted[:250], truth[:250], strict=True))
        for outcome, expected in (("tp", tp), ("fp", fp), ("fn", fn)):
            assert value(registry, "modelmonitor_class_outcomes_total", outcome=outcome, **{"class": name}) == expected
    assert value(registry, "modelmonitor_class_outcomes_total", outcome="tp", **{"class": "__other__"}) is None
    # the binary counters stay empty for a multiclass model
    assert value(registry, "modelmonitor_regression_labeled_predictions_total") is None
    assert value(registry, "modelmonitor_label_predictions_total") == 300


def test_regression_error_sums_from_joined_labels() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=800)
    profile = build({"x": x, "pred": 2 * x, "y": 2 * x + rng.normal(size=800)},
                    label_column="y", prediction_column="pred")  # fmt: skip
    assert profile.task == "regression"
    monitor, registry = monitored(profile)
    live = rng.normal(size=200)
    predicted, truth = 2 * live, 2 * live + rng.normal(scale=2.0, size=200)
    ids = [f"q{i}" for i in range(200)]
    monitor.log_events([
        {"request_id": i, "features": {"x": float(v)}, "prediction": float(p)}
        for i, v, p in zip(ids, live, predicted, strict=True)
    ])  # fmt: skip
    monitor.log_labels([(i, float(t)) for i, t in zip(ids, truth, strict=True)] + [("q0", "n/a")])
    errors = predicted - truth
    assert value(registry, "modelmonitor_regression_absolute_error_total") == pytest.approx(np.abs(errors).sum())
    assert value(registry, "modelmonitor_regression_squared_error_total") == pytest.approx((errors**2).sum())
    assert value(registry, "modelmonitor_regression_labeled_predictions_total") == 200
    assert value(registry, "modelmonitor_class_outcomes_total", outcome="tp", **{"class": "__other__"}) is None


def test_label_predictions_count_only_predictions_that_can_get_a_label() -> None:
    rng = np.random.default_rng(5)
    profile = build({"x": rng.normal(size=300), "y": objects(["a", "b"] * 150)}, label_column="y")
    monitor, registry = monitored(profile)
    assert value(registry, "modelmonitor_label_predictions_total") == 0  # exported from the start
    monitor.log_batch({"x": rng.normal(size=10)}, predictions=["a"] * 10, request_ids=[None] * 4 + ["i"] * 6)
    assert value(registry, "modelmonitor_label_predictions_total") == 6


# --- estimated accuracy ------------------------------------------------------------------------------------


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


def test_isotonic_calibration_recovers_the_probability_behind_a_miscalibrated_score() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=40_000)
    score = sigmoid(x)  # what the model says
    truth = sigmoid(3 * x - 1)  # what is true
    knots, probabilities = fit_isotonic(score, (rng.random(x.size) < truth).astype(float))
    grid = np.linspace(-1.5, 1.5, 7)
    assert np.abs(calibrated(knots, probabilities, sigmoid(grid)) - sigmoid(3 * grid - 1)).max() < 0.05
    assert knots.size < 2000  # flat runs are not kept
    with pytest.raises(ValueError, match="labels: expected 0"):
        fit_isotonic([0.1, 0.2], [0, 2])


def test_estimated_accuracy_tracks_realized_accuracy_under_covariate_shift() -> None:
    """The inputs move towards the decision boundary (the relation between inputs and labels is unchanged):
    realized accuracy falls, and the estimate, from scores alone, follows it within 0.02."""
    rng = np.random.default_rng(7)
    n = 20_000
    x = rng.normal(0.0, 2.0, n)
    score = sigmoid(1.5 * x)  # miscalibrated: the truth is sigmoid(3x - 1)
    label = (rng.random(n) < sigmoid(3 * x - 1)).astype(np.float64)
    profile = build({"x": x, "score": score, "y": label}, score_column="score", label_column="y")
    assert profile.calibration is not None and profile.positive_class == "1"

    for mean, spread in ((0.0, 2.0), (0.3, 0.5), (-0.5, 1.0)):
        monitor, registry = monitored(profile)
        live = rng.normal(mean, spread, n)
        live_score = sigmoid(1.5 * live)
        live_label = (rng.random(n) < sigmoid(3 * live - 1)).astype(int)
        ids = [f"r{i}" for i in range(n)]
        monitor.log_batch({"x": live}, scores=live_score, request_ids=ids)
        estimated = value(registry, "modelmonitor_estimated_correct_total") / value(  # type: ignore[operator]
            registry, "modelmonitor_estimated_predictions_total"
        )
        true_positives = value(registry, "modelmonitor_estimated_true_positives_total")
        estimated_precision = true_positives / value(registry, "modelmonitor_estimated_positive_predictions_total")  # type: ignore[operator]
        estimated_recall = true_positives / value(registry, "modelmonitor_estimated_positives_total")  # type: ignore[operator]
        monitor.log_labels(list(zip(ids, live_label.tolist(), strict=True)))
        outcomes: dict[str, float] = {
            o: value(registry, "modelmonitor_labeled_predictions_total", group="__none__", outcome=o) or 0.0
            for o in ("tp", "fp", "tn", "fn")
        }
        realized = (outcomes["tp"] + outcomes["tn"]) / n
        assert realized == pytest.approx(np.mean((live_score >= 0.5) == live_label))
        assert abs(estimated - realized) < 0.02, (mean, spread, estimated, realized)
        precision = outcomes["tp"] / (outcomes["tp"] + outcomes["fp"])
        recall = outcomes["tp"] / (outcomes["tp"] + outcomes["fn"])
        assert abs(estimated_precision - precision) < 0.02, (mean, spread, estimated_precision, precision)
        assert abs(estimated_recall - recall) < 0.02, (mean, spread, estimated_recall, recall)
        if (mean, spread) == (0.3, 0.5):
            assert realized < 0.75  # near the boundary accuracy really fell (about 0.87 on the reference)
    # without a calibration nothing is estimated (no made-up number)
    plain = build({"x": x, "score": score}, score_column="score")
    monitor, registry = monitored(plain)
    monitor.log_batch({"x": x[:10]}, scores=score[:10])
    assert value(registry, "modelmonitor_estimated_predictions_total") is None
    assert math.isfinite(profile.calibration.probabilities[-1])
