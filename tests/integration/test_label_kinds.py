"""Label coverage, multiclass and regression quality, and estimated accuracy, measured by the operator's
`modelmonitor.signals.measure` through the sandbox's REAL Prometheus scraping REAL sidecar processes (profiles
built by the real CLI), against values this test computes from the events and labels it sent.

- A binary credit model with scores, two replicas: ``estimatedAccuracy``, ``estimatedPrecision`` and
  ``estimatedRecall`` (from the profile's score calibration, applied here with numpy to the scores sent),
  ``labelCoverage`` (joined labels / predictions with a request id) and ``accuracy`` per replica, and for the
  fleet; ``labelDelay`` renders a valid PromQL ``offset``.
- A multiclass model: ``multiclassAccuracy`` and ``macroF1`` from per-class counts.
- A regression model: ``mae`` and ``rmse``.

Per replica (``spec.model.labels`` selects one by its ``replica`` target label), each value is measured at the
instant of that replica's last scrape, so Prometheus' ``increase()`` extrapolates nothing and the value is exact.
The fleet's value sums two replicas scraped at different instants, so Prometheus extrapolates the other one a
little: it is checked against the same ratio written by hand in PromQL (exact) and against the events (within
0.01, once the replicas' series span 20 s).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_signal_fields import Sidecar  # the real-sidecar helper of the signal-field tests

from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusSettings
from modelmonitor.policy.model import Measurement, MeasurementKind
from modelmonitor.signals import SignalRequest, measure
from support import Cluster

pytestmark = pytest.mark.cluster

WINDOW = "5m"


def sigmoid(v: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-v)))


def build_profile(directory: Path, header: list[str], rows: list[list[Any]], *flags: str) -> dict[str, Any]:
    """Write the training CSV and build profile.json with the real CLI; returns the profile's JSON."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    build = subprocess.run(
        [sys.executable, "-m", "modelmonitor", "profile", "build", "train.csv", "-o", "profile.json",
         "--window-size", "100", "--n-boot", "100", "--false-alarm-rate", "0.1", *flags],
        cwd=directory, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    document: dict[str, Any] = json.loads((directory / "profile.json").read_text())
    return document


@pytest.fixture
def prometheus(cluster: Cluster) -> Iterator[PrometheusClient]:
    with PrometheusClient(PrometheusSettings(url=cluster.prometheus_url, timeout_seconds=10)) as client:
        yield client


@pytest.fixture
def sidecars() -> Iterator[list[Sidecar]]:
    started: list[Sidecar] = []
    yield started
    for sidecar in started:
        sidecar.stop()


def value_of(measurement: Measurement) -> float:
    assert measurement.kind is MeasurementKind.VALUES, measurement
    assert len(measurement.series) == 1, measurement
    return measurement.series[0].value


def test_estimated_accuracy_coverage_and_accuracy_of_two_replicas(
    cluster: Cluster, tmp_path: Path, sidecars: list[Sidecar], prometheus: PrometheusClient
) -> None:
    rng = np.random.default_rng(21)
    x = rng.normal(0.0, 2.0, 4000)
    # The model's score is miscalibrated (the truth is sigmoid(3x - 1)): the profile's calibration corrects it.
    truth_probability = sigmoid(3 * x - 1)
    rows = [
        [f"{v:.5f}", f"{s:.6f}", int(rng.random() < t)]
        for v, s, t in zip(x, sigmoid(1.5 * x), truth_probability, strict=True)
    ]
    profile = build_profile(tmp_path / "credit", ["x", "score", "defaulted"], rows,
                            "--score", "score", "--label", "defaulted")  # fmt: skip
    knots = np.array(profile["calibration"]["scores"])
    probabilities = np.array(profile["calibration"]["probabilities"])
    assert profile["task"] == "binary" and profile["positive_class"] == "1"

    namespace = f"lk-{uuid.uuid4().hex[:8]}"
    replicas = {
        name: Sidecar(cluster, tmp_path / "credit", "credit", {"namespace": namespace, "replica": name})
        for name in ("r1", "r2")
    }
    sidecars.extend(replicas.values())
    first_scraped = time.monotonic()
    # Covariate shift: live inputs crowd the decision boundary; the relation between inputs and labels holds.
    sent = {"r1": (400, 300), "r2": (300, 100)}  # (predictions with a request id, labels posted)
    expected: dict[str, dict[str, float]] = {}
    totals = {"correct": 0.0, "scored": 0.0, "joined": 0.0, "waiting": 0.0, "right": 0.0}
    for name, (predictions, labeled) in sent.items():
        live = rng.normal(0.3, 0.6, predictions)
        scores = sigmoid(1.5 * live)
        truth = (rng.random(predictions) < sigmoid(3 * live - 1)).astype(int)
        ids = [f"{name}-{i}" for i in range(predictions)]
        replicas[name].events([
            {"request_id": i, "features": {"x": round(float(v), 5)}, "score": float(s)}
            for i, v, s in zip(ids, live, scores, strict=True)
        ])  # fmt: skip
        replicas[name].labels_for(
            [{"request_id": i, "label": int(t)} for i, t in zip(ids[:labeled], truth[:labeled], strict=True)]
        )
        p_positive = np.interp(scores, knots, probabilities)
        said_positive = scores >= 0.5
        p_correct = np.where(said_positive, p_positive, 1 - p_positive)
        right = float(np.sum(said_positive[:labeled] == truth[:labeled]))
        expected[name] = {
            "estimatedAccuracy": float(p_correct.mean()),
            "estimatedPrecision": float(p_positive[said_positive].sum() / said_positive.sum()),
            "estimatedRecall": float(p_positive[said_positive].sum() / p_positive.sum()),
            "labelCoverage": labeled / predictions,
            "accuracy": right / labeled,
        }
        for key, amount in (("correct", float(p_correct.sum())), ("scored", predictions), ("joined", labeled),
                            ("waiting", predictions), ("right", right)):  # fmt: skip
            totals[key] += amount
    for name, (predictions, _labeled) in sent.items():
        replicas[name].wait_until_scraped("modelmonitor_label_predictions_total", predictions)
    # The estimate was made without labels and follows the realized accuracy (labels came later).
    realized = totals["right"] / totals["joined"]
    assert abs(totals["correct"] / totals["scored"] - realized) < 0.06

    signals = ("estimatedAccuracy", "labelCoverage", "accuracy")

    def request(signal: str, replica: str | None, **extra: Any) -> SignalRequest:
        labels = (("replica", replica),) if replica else ()
        policy = f"{signal.lower()}-{replica or 'fleet'}{'-delayed' if extra else ''}"
        return SignalRequest(namespace, "credit-mm", policy, "credit", WINDOW, signal=signal, labels=labels, **extra)

    for name in replicas:
        at: datetime = replicas[name].last_scrape()
        asked = [request(s, name) for s in (*signals, "estimatedPrecision", "estimatedRecall")]
        cycle = measure(asked, prometheus, at=at)
        for item in asked:
            assert item.signal is not None
            assert value_of(cycle.results[item]) == pytest.approx(expected[name][item.signal], rel=1e-9), (name, item)
        assert cycle.results[asked[1]].series[0].samples == sent[name][0]

    # Prometheus extrapolates r2's increase over the gap to r1's scrape (under a second) in proportion to the
    # span of r2's samples in the window: a span of 20 s keeps that under 5 %, a few thousandths of the ratios.
    time.sleep(max(0.0, 20 - (time.monotonic() - first_scraped)))
    at = replicas["r1"].next_scrape()
    fleet = [request(s, None) for s in signals]
    delayed = request("labelCoverage", "r1", label_delay="1s")
    cycle = measure([*fleet, delayed], prometheus, at=at)
    assert cycle.failed_queries == 0
    selector = f'namespace="{namespace}", model="credit"'
    by_hand = {
        "estimatedAccuracy": (
            f"sum(increase(modelmonitor_estimated_correct_total{{{selector}}}[{WINDOW}])) / "
            f"sum(increase(modelmonitor_estimated_predictions_total{{{selector}}}[{WINDOW}]))"
        ),
        "labelCoverage": (
            f'sum(increase(modelmonitor_labels_received_total{{{selector}, result="joined"}}[{WINDOW}])) / '
            f"sum(increase(modelmonitor_label_predictions_total{{{selector}}}[{WINDOW}]))"
        ),
    }
    exact = {
        "estimatedAccuracy": totals["correct"] / totals["scored"],
        "labelCoverage": totals["joined"] / totals["waiting"],
        "accuracy": realized,
    }
    for item in fleet:
        assert item.signal is not None
        measured = value_of(cycle.results[item])
        if item.signal in by_hand:
            assert measured == pytest.approx(prometheus.query(by_hand[item.signal], at=at).values[0], rel=1e-9)
        # the other replica's counts are extrapolated by at most a scrape interval over the series' span
        assert measured == pytest.approx(exact[item.signal], abs=0.01), item.signal
    # labelDelay is a valid offset: the predictions of the window that ended a second ago are all of them
    assert "offset 1s" in cycle.results[delayed].queries[1]
    assert value_of(cycle.results[delayed]) == pytest.approx(expected["r1"]["labelCoverage"], rel=0.05)


def test_multiclass_and_regression_quality(
    cluster: Cluster, tmp_path: Path, sidecars: list[Sidecar], prometheus: PrometheusClient
) -> None:
    rng = np.random.default_rng(22)
    classes = ["setosa", "versicolor", "virginica"]
    training = [[f"{rng.normal():.4f}", str(rng.choice(classes))] for _ in range(1500)]
    species_profile = build_profile(tmp_path / "species", ["width", "species"], training, "--label", "species")
    assert species_profile["task"] == "multiclass" and species_profile["positive_class"] is None
    x = rng.normal(size=1500)
    training = [[f"{v:.4f}", f"{3 * v:.4f}", f"{3 * v + rng.normal():.4f}"] for v in x]
    price_profile = build_profile(tmp_path / "price", ["size", "estimate", "price"], training,
                                  "--label", "price", "--prediction", "estimate")  # fmt: skip
    assert price_profile["task"] == "regression"

    namespace = f"lk-{uuid.uuid4().hex[:8]}"
    species = Sidecar(cluster, tmp_path / "species", "species", {"namespace": namespace})
    sidecars.append(species)
    price = Sidecar(cluster, tmp_path / "price", "price", {"namespace": namespace})
    sidecars.append(price)

    predicted = [str(c) for c in rng.choice(classes, size=240)]
    truth = [p if rng.random() < 0.7 else str(rng.choice(classes)) for p in predicted]
    species.events([
        {"request_id": f"s{i}", "features": {"width": round(float(rng.normal()), 4)}, "prediction": p}
        for i, p in enumerate(predicted)
    ])  # fmt: skip
    species.labels_for([{"request_id": f"s{i}", "label": t} for i, t in enumerate(truth)])
    live = rng.normal(size=150)
    estimate = np.round(3 * live, 4)
    actual = np.round(3 * live + rng.normal(scale=1.5, size=150), 4)
    price.events([
        {"request_id": f"p{i}", "features": {"size": round(float(v), 4)}, "prediction": float(e)}
        for i, (v, e) in enumerate(zip(live, estimate, strict=True))
    ])  # fmt: skip
    price.labels_for([{"request_id": f"p{i}", "label": float(a)} for i, a in enumerate(actual)])

    f1s = []
    for name in classes:
        tp = sum(p == t == name for p, t in zip(predicted, truth, strict=True))
        fp = sum(p == name != t for p, t in zip(predicted, truth, strict=True))
        fn = sum(t == name != p for p, t in zip(predicted, truth, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    expected = {
        "multiclassAccuracy": sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth),
        "macroF1": float(np.mean(f1s)),
        "mae": float(np.mean(np.abs(estimate - actual))),
        "rmse": float(np.sqrt(np.mean((estimate - actual) ** 2))),
    }
    species.wait_until_scraped("modelmonitor_labels_received_total", len(truth), result="joined")
    price.wait_until_scraped("modelmonitor_regression_labeled_predictions_total", len(actual))
    for sidecar, model, signals in ((species, "species", ("multiclassAccuracy", "macroF1")),
                                    (price, "price", ("mae", "rmse"))):  # fmt: skip
        asked = [SignalRequest(namespace, f"{model}-mm", s.lower(), model, WINDOW, signal=s) for s in signals]
        cycle = measure(asked, prometheus, at=sidecar.last_scrape())
        for item in asked:
            assert item.signal is not None
            assert value_of(cycle.results[item]) == pytest.approx(expected[item.signal], rel=1e-9), item.signal
    assert not math.isclose(expected["mae"], expected["rmse"])
