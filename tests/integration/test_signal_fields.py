"""The built-in signals' fields, measured through `modelmonitor.signals.measure` against the sandbox's REAL
Prometheus scraping REAL sidecar processes (``python -m modelmonitor sidecar``, profile from the real CLI).

- ``spec.model.labels``: two sidecars of one model carry different ``cluster`` target labels; a monitor naming
  a cluster sees only that cluster's numbers, one naming none sees both, and each signal kind is still one query.
- ``method:``: the value of dataDrift is the chosen method's score of the worst feature, computed by
  `modelmonitor.stats` on the counts the test sent; ``threshold: auto`` judges it at the rows the window holds
  (`modelmonitor.stats.window_null`); the detail (and the policy's message) names the method, the feature and
  the drifting features.
- fairness: fairnessGap and disparateImpact from per-group prediction counts with no label posted,
  equalOpportunityGap once labels arrive; each names the groups compared and leaves out small ones.

Every measurement is taken at the instant of the target's last scrape, so Prometheus' ``increase()`` has
nothing to extrapolate and the counts are the ones sent (each sidecar is scraped once at 0 before traffic).
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusSettings
from modelmonitor.policy.model import Measurement, MeasurementKind, Op, Rule
from modelmonitor.policy.outcome import classify
from modelmonitor.sidecar.profile import Profile, load
from modelmonitor.signals import SignalRequest, measure
from modelmonitor.stats.drift import METHODS
from modelmonitor.stats.window_null import window_test
from modelmonitor_sandbox.devcluster.processes import free_port
from support import Cluster, http_get, wait_for

pytestmark = pytest.mark.cluster

WINDOW = "5m"


def post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Sidecar:
    """A real sidecar process of one model, scraped by the sandbox's Prometheus with the given target labels."""

    def __init__(self, cluster: Cluster, workdir: Path, model: str, labels: dict[str, str]) -> None:
        self.cluster = cluster
        self.labels = {**labels, "model": model}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.target = f"signal-fields-{model}-{self.port}"
        self.log = workdir / f"sidecar-{self.port}.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "modelmonitor", "sidecar", "--profile", str(workdir / "profile.json"),
                    "--listen", f"127.0.0.1:{self.port}", "--model", model, "--version", "v1",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(f"sidecar {self.target} /healthz", lambda: http_get(f"{self.url}/healthz") or self._exited(), 60)
        cluster.add_scrape_target(self.target, f"127.0.0.1:{self.port}", labels)
        # Scraped once before any traffic, so every counter's first sample is 0 and increase() sees it all.
        wait_for(f"Prometheus to scrape {self.target}", lambda: self.scraped("modelmonitor_requests_total") == 0, 90)

    def _exited(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the sidecar exited: {self.log.read_text()[-3000:]}")

    def selector(self, **more: str) -> str:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in {**self.labels, **more}.items()) + "}"

    def scraped(self, metric: str, **more: str) -> float | None:
        """The sum of ``metric`` over this sidecar's series as Prometheus has it now (None before any)."""
        result = self.cluster.prometheus_query(f"sum({metric}{self.selector(**more)})")
        return float(result[0]["value"][1]) if result else None

    def events(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), 500):
            assert post(f"{self.url}/v1/events", {"events": events[start : start + 500]}) == {
                "accepted": len(events[start : start + 500])
            }

    def labels_for(self, labels: list[dict[str, Any]]) -> None:
        answer = post(f"{self.url}/v1/labels", {"labels": labels})
        assert answer["joined"] == len(labels), answer

    def wait_until_scraped(self, metric: str, expected: float, **more: str) -> datetime:
        """Wait until Prometheus holds ``expected`` for ``metric``; returns the instant of the last scrape."""
        wait_for(f"{metric}{self.selector(**more)} == {expected}", lambda: self.scraped(metric, **more) == expected, 60)
        return self.last_scrape()

    def last_scrape(self) -> datetime:
        """The instant of the latest scrape of this sidecar: measured then, increase() extrapolates nothing."""
        stamp = self.cluster.prometheus_query(f"max(timestamp(modelmonitor_requests_total{self.selector()}))")
        return datetime.fromtimestamp(float(stamp[0]["value"][1]), UTC)

    def next_scrape(self) -> datetime:
        """The instant of this sidecar's first scrape after now (after everything Prometheus holds now)."""
        now = datetime.now(UTC)

        def after_now() -> datetime | None:
            stamp = self.last_scrape()
            return stamp if stamp > now else None

        scraped: datetime = wait_for(f"the next scrape of {self.target}", after_now, 30)
        return scraped

    def stop(self) -> None:
        self.cluster.remove_scrape_target(self.target)
        self.process.kill()
        self.process.wait()


def write_training_csv(path: Path, rows: int = 3000) -> None:
    rng = np.random.default_rng(5)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["age", "income", "gender", "churned"])
        for _ in range(rows):
            age = rng.normal(40, 10)
            writer.writerow(
                [f"{age:.2f}", f"{rng.lognormal(10, 0.5):.1f}", rng.choice(["f", "m"]), int(rng.random() < 0.3)]
            )


def rows(n: int, seed: int, age_shift: float = 0.0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "age": round(float(rng.normal(40 + age_shift, 10)), 2),
            "income": round(float(rng.lognormal(10, 0.5)), 1),
            "gender": str(rng.choice(["f", "m"])),
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reference profile built by the real CLI: features age, income, gender; groups by gender."""
    directory = tmp_path_factory.mktemp("signal-fields")
    write_training_csv(directory / "train.csv")
    build = subprocess.run(
        [
            sys.executable, "-m", "modelmonitor", "profile", "build", "train.csv", "-o", "profile.json",
            "--label", "churned", "--group", "gender", "--window-size", "300", "--n-boot", "200",
        ],
        cwd=directory, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    return directory


@pytest.fixture(scope="module")
def profile(workdir: Path) -> Profile:
    return load(workdir / "profile.json")


@pytest.fixture
def sidecars(cluster: Cluster, workdir: Path) -> Iterator[list[Sidecar]]:
    started: list[Sidecar] = []
    yield started
    for sidecar in started:
        sidecar.stop()


@pytest.fixture
def prometheus(cluster: Cluster) -> Iterator[PrometheusClient]:
    with PrometheusClient(PrometheusSettings(url=cluster.prometheus_url, timeout_seconds=10)) as client:
        yield client


def numbers(measurement: Measurement) -> tuple[float, ...]:
    return tuple(series.value for series in measurement.series)


# --- spec.model.labels -------------------------------------------------------------------------------------


def test_model_labels_narrow_a_builtin_signal_to_one_cluster_with_one_query_per_kind(
    cluster: Cluster, workdir: Path, sidecars: list[Sidecar], prometheus: PrometheusClient
) -> None:
    namespace = f"sig-{uuid.uuid4().hex[:8]}"
    eu = Sidecar(cluster, workdir, "churn", {"namespace": namespace, "cluster": "eu-1"})
    sidecars.append(eu)
    us = Sidecar(cluster, workdir, "churn", {"namespace": namespace, "cluster": "us-1"})
    sidecars.append(us)
    # eu-1: 200 requests, 10 errors, fast; us-1: 100 requests, 50 errors, slow.
    eu.events([
        {"features": row, "prediction": 0, "latency_seconds": 0.004, "error": i < 10}
        for i, row in enumerate(rows(200, seed=1))
    ])  # fmt: skip
    us.events([
        {"features": row, "prediction": 0, "latency_seconds": 0.3, "error": i < 50}
        for i, row in enumerate(rows(100, seed=2))
    ])  # fmt: skip
    eu.wait_until_scraped("modelmonitor_requests_total", 200)
    us.wait_until_scraped("modelmonitor_requests_total", 100)
    # Each measured at its own next scrape: the other cluster's traffic is in Prometheus by then.
    at_eu, at_us = eu.next_scrape(), us.next_scrape()

    def requests(signal: str) -> dict[str, SignalRequest]:
        def one(policy: str, labels: tuple[tuple[str, str], ...]) -> SignalRequest:
            return SignalRequest(namespace, f"{policy}-mm", policy, "churn", WINDOW, signal=signal, labels=labels)

        return {
            "eu": one("eu", (("cluster", "eu-1"),)),
            "us": one("us", (("cluster", "us-1"),)),
            "both": one("both", ()),
        }

    errors, latency = requests("errorRate"), requests("latencyP50")
    for at, cluster_name in ((at_eu, "eu"), (at_us, "us")):
        cycle = measure([*errors.values(), *latency.values()], prometheus, at=at)
        # errorRate 2 queries, latency 1: however many monitors and clusters
        assert cycle.batched_queries == 3
        assert all("cluster" in r.query for r in cycle.results.values())
        mine = cycle.results[errors[cluster_name]]
        assert mine.kind is MeasurementKind.VALUES, mine
        # Measured at this target's last scrape: its counts are exact.
        if cluster_name == "eu":
            assert numbers(mine) == (pytest.approx(10 / 200),)
            assert mine.series[0].samples == 200
            assert 0.0025 < numbers(cycle.results[latency["eu"]])[0] <= 0.005
        else:
            assert numbers(mine) == (pytest.approx(50 / 100),)
            assert mine.series[0].samples == 100
            assert 0.25 < numbers(cycle.results[latency["us"]])[0] <= 0.5
        # Without labels, both clusters count: what Prometheus says for the model's series unsplit (the other
        # cluster's counts are extrapolated to this instant by increase(), so not exactly 60 / 300).
        unsplit = [
            prometheus.query(f'sum(increase({metric}{{namespace="{namespace}", model="churn"}}[{WINDOW}]))', at=at)
            for metric in ("modelmonitor_request_errors_total", "modelmonitor_requests_total")
        ]
        both = numbers(cycle.results[errors["both"]])
        assert both == (pytest.approx(unsplit[0].values[0] / unsplit[1].values[0], rel=1e-9),)
        assert 10 / 200 < both[0] < 50 / 100
        # Each quantile is Prometheus' own histogram_quantile over the series the monitor selects.
        for who, matcher in (("eu", ', cluster="eu-1"'), ("us", ', cluster="us-1"'), ("both", "")):
            selected = f'namespace="{namespace}", model="churn"{matcher}'
            quantile = prometheus.query(
                "histogram_quantile(0.5, sum by (le) "
                f"(increase(modelmonitor_request_duration_seconds_bucket{{{selected}}}[{WINDOW}])))",
                at=at,
            )
            assert numbers(cycle.results[latency[who]]) == (pytest.approx(quantile.values[0], rel=1e-9),), who
        # A batch without labels asks Prometheus for the quantile itself: the same value, the same requests.
        alone = measure([latency["both"]], prometheus, at=at)
        assert alone.batched_queries == 2  # the quantile and the requests
        assert alone.results[latency["both"]].query.startswith("histogram_quantile(0.5, ")
        assert numbers(alone.results[latency["both"]]) == pytest.approx(numbers(cycle.results[latency["both"]]))
        assert alone.results[latency["both"]].series[0].samples == cycle.results[latency["both"]].series[0].samples

    elsewhere = SignalRequest(
        namespace, "ap-mm", "ap", "churn", WINDOW, signal="errorRate", labels=(("cluster", "ap-9"),)
    )
    result = measure([elsewhere], prometheus, at=at_eu).results[elsewhere]
    assert result.kind is MeasurementKind.NO_DATA
    assert 'cluster="ap-9"' in result.reason


# --- method ------------------------------------------------------------------------------------------------


def bins(values: list[float], bounds: np.ndarray) -> np.ndarray:
    """Counts per bucket as the sidecar's histogram bins them (``le``: value <= bound), +Inf last."""
    return np.bincount(np.searchsorted(bounds, np.array(values), side="left"), minlength=bounds.size + 1)


def test_drift_method_decides_the_value_the_threshold_and_the_message(
    cluster: Cluster, workdir: Path, profile: Profile, sidecars: list[Sidecar], prometheus: PrometheusClient
) -> None:
    namespace = f"sig-{uuid.uuid4().hex[:8]}"
    sidecar = Sidecar(cluster, workdir, "drifty", {"namespace": namespace})
    sidecars.append(sidecar)
    sent = rows(400, seed=3, age_shift=25.0)  # age drifts far; income and gender follow the reference
    sidecar.events([{"features": row, "prediction": 0} for row in sent])
    at = sidecar.wait_until_scraped("modelmonitor_feature_value_count", 400, feature="age")

    age = profile.feature("age")
    reference = np.diff([0.0, *age.reference.cumulative_ratios.tolist(), 1.0])  # type: ignore[union-attr]
    current = bins([row["age"] for row in sent], age.reference.bounds)  # type: ignore[union-attr]
    methods = ("psi", "jensen_shannon", "hellinger", "linf")
    plain = {
        m: SignalRequest(namespace, "d-mm", m, "drifty", WINDOW, signal="dataDrift", drift_method=m) for m in methods
    }
    auto = {
        m: SignalRequest(
            namespace,
            "d-mm",
            f"{m}-auto",
            "drifty",
            WINDOW,
            signal="dataDrift",
            drift_method=m,
            auto_threshold=True,
            false_alarm_rate=0.01,
        )
        for m in methods
    }
    cycle = measure([*plain.values(), *auto.values()], prometheus, at=at)
    # 4 queries shared by every method, threshold auto or not: auto needs only the reference ratios
    assert cycle.batched_queries == 4
    for method in methods:
        result = cycle.results[plain[method]]
        assert result.kind is MeasurementKind.VALUES, result
        expected = METHODS[method].function(reference, current.astype(np.float64))
        assert numbers(result) == (pytest.approx(expected, rel=1e-6),), method
        assert result.series[0].samples == 400
        assert result.detail.startswith(f"method {method}: ") and "feature 'age'" in result.detail
        judged = cycle.results[auto[method]]
        # The threshold for age's 400 rows at the policy's 1% split over the features compared.
        compared = int(re.search(r"(\d+) compared over", judged.detail).group(1))  # type: ignore[union-attr]
        assert compared == len(profile.features)
        at_its_size = window_test(method, reference, current, false_alarm_rate=0.01 / compared)
        assert judged.threshold == pytest.approx(at_its_size.threshold, rel=1e-6)
        assert "for its 400 rows" in judged.detail
        assert "drifting (Benjamini-Hochberg at 1%): 'age'" in judged.detail
        # The policy's status message names the method and the feature.
        outcome = classify(Rule(method, Op.GT, judged.threshold, window=WINDOW), judged)
        assert outcome.kind.value == "Breach"
        assert f"method {method}" in outcome.reason and "feature 'age'" in outcome.reason
    assert len({numbers(cycle.results[plain[m]]) for m in methods}) == len(methods)


# --- fairness ----------------------------------------------------------------------------------------------


def test_fairness_signals_from_group_counts_and_joined_labels(
    cluster: Cluster, workdir: Path, sidecars: list[Sidecar], prometheus: PrometheusClient
) -> None:
    namespace = f"sig-{uuid.uuid4().hex[:8]}"
    sidecar = Sidecar(cluster, workdir, "fair", {"namespace": namespace})
    sidecars.append(sidecar)
    # f: 60 of 100 predicted positive; m: 30 of 100; 5 predictions without a group (__none__): too few to compare.
    events: list[dict[str, Any]] = []
    for group, positives, total in (("f", 60, 100), ("m", 30, 100)):
        for i in range(total):
            row = rows(1, seed=len(events))[0] | {"gender": group}
            events.append({"request_id": f"{group}-{i}", "features": row, "prediction": int(i < positives)})
    for i in range(5):
        row = {k: v for k, v in rows(1, seed=1000 + i)[0].items() if k != "gender"}
        events.append({"request_id": f"none-{i}", "features": row, "prediction": 1})
    sidecar.events(events)
    at = sidecar.wait_until_scraped("modelmonitor_group_predictions_total", 205)

    def ask(signal: str) -> SignalRequest:
        return SignalRequest(namespace, "f-mm", signal, "fair", WINDOW, signal=signal, min_samples=20)

    gap, impact, opportunity = ask("fairnessGap"), ask("disparateImpact"), ask("equalOpportunityGap")
    cycle = measure([gap, impact, opportunity], prometheus, at=at)
    # No label was posted: demographic parity and disparate impact need none.
    assert numbers(cycle.results[gap]) == (pytest.approx(0.6 - 0.3),)
    assert numbers(cycle.results[impact]) == (pytest.approx(0.3 / 0.6),)
    for result in (cycle.results[gap], cycle.results[impact]):
        assert result.series[0].samples == 100
        assert "'f' 0.6 of 100, 'm' 0.3 of 100" in result.detail
        assert "left out for fewer than minSamples 20: '__none__' (5)" in result.detail
    assert cycle.results[opportunity].kind is MeasurementKind.NO_DATA  # no labels yet
    assert cycle.batched_queries == 2  # the two parity signals share their query

    # Labels: f has 40 actual positives of which 30 were predicted positive (tpr 0.75); m 40, 10 (0.25).
    labels = [{"request_id": f"f-{i}", "label": 1} for i in range(30)]  # predicted positive
    labels += [{"request_id": f"f-{i}", "label": 1} for i in range(60, 70)]  # predicted negative
    labels += [{"request_id": f"m-{i}", "label": 1} for i in range(10)]
    labels += [{"request_id": f"m-{i}", "label": 1} for i in range(30, 60)]
    sidecar.labels_for(labels)
    at = sidecar.wait_until_scraped("modelmonitor_labeled_predictions_total", 80)
    result = measure([opportunity], prometheus, at=at).results[opportunity]
    assert numbers(result) == (pytest.approx(0.75 - 0.25),)
    assert result.series[0].samples == 40
    assert "true-positive rate" in result.detail
    assert "'f' 0.75 of 40, 'm' 0.25 of 40" in result.detail
    assert not math.isnan(numbers(result)[0])
