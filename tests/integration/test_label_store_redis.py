"""The shared label store: real sidecar processes in proxy mode, a real redis-server, a real Prometheus.

Two sidecars (replicas A and B of one model, in front of one small model server) share a password-protected
redis-server (A reads the password from the environment, B from a file). Predictions go through A; labels go to
whichever replica a test says, and the confusion counts are checked through Prometheus, summed across replicas,
against outcomes computed here from the model's rule and the labels sent. Both run with ``--label-maturity``, and
the maturity cohort's accuracy is measured by the operator's signal code (``labelDelay``) through Prometheus.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusSettings
from modelmonitor.policy.model import MeasurementKind
from modelmonitor.sidecar.labelstore import PASSWORD_ENV
from modelmonitor.signals import SignalRequest, measure
from modelmonitor_sandbox.devcluster.processes import free_port
from modelmonitor_sandbox.devcluster.redis_server import RedisServer
from support import PrometheusProcess, build_churn_profile, http_get, wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus"),
]

PASSWORD = "label-store-secret"
OUTCOME = {(1, 1): "tp", (1, 0): "fp", (0, 0): "tn", (0, 1): "fn"}
NAMESPACE = "label-store"
MATURITY = "10s"
MATURITY_SECONDS = 10.0


class ModelServer:
    """A model behind KServe v1 in a thread of the test: predicts churn (1) when age > 40."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer = json.dumps({"predictions": [int(row["age"] > 40) for row in body["instances"]]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


class Sidecar:
    """``modelmonitor sidecar`` as a process on a fixed port, restartable; ``version`` changes per test so each
    test reads fresh series and a fresh key space."""

    def __init__(self, name: str, workdir: Path, upstream: str, redis_url: str, env: dict[str, str], args: list[str]):
        self.name = name
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstream = upstream
        self.redis_url = redis_url
        self.env = env
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.version = ""

    def start(self, version: str) -> None:
        self.version = version
        log = (self.workdir / f"sidecar-{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "modelmonitor", "sidecar", "--profile", str(self.workdir / "profile.json"),
                "--listen", f"127.0.0.1:{self.port}", "--model", "churn", "--version", version,
                "--upstream", self.upstream, "--label-store", self.redis_url, "--label-ttl", "30d", *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )  # fmt: skip
        log.close()
        wait_for(f"sidecar {self.name}'s /healthz", self._healthy, timeout=60)

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"sidecar {self.name} exited: {self.log()}")
        return http_get(f"{self.url}/healthz") is not None

    def stop(self) -> None:
        """SIGTERM, as Kubernetes stops a pod."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def log(self) -> str:
        return (self.workdir / f"sidecar-{self.name}.log").read_text(errors="replace")[-3000:]

    def predict(self, request_id: str, row: dict[str, Any]) -> int:
        """One proxied prediction; returns the model's answer (the call must succeed)."""
        request = urllib.request.Request(
            f"{self.url}/v1/models/churn:predict",
            data=json.dumps({"instances": [row]}).encode(),
            headers={"Content-Type": "application/json", "X-Request-Id": request_id},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            return int(json.loads(response.read())["predictions"][0])

    def post_labels(self, labels: list[tuple[str, int]]) -> dict[str, int]:
        body = json.dumps({"labels": [{"request_id": r, "label": label} for r, label in labels]}).encode()
        request = urllib.request.Request(
            f"{self.url}/v1/labels", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            return dict(json.loads(response.read()))


class Rig:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis = RedisServer(workdir / "redis", password=PASSWORD).start()
        self.model = ModelServer()
        password_file = workdir / "password"
        password_file.write_text(PASSWORD + "\n")
        env_a = {**_environ(), PASSWORD_ENV: PASSWORD}
        maturity = ["--label-maturity", MATURITY]
        self.a = Sidecar("a", workdir, self.model.url, self.redis.url, env_a, maturity)
        self.b = Sidecar("b", workdir, self.model.url, self.redis.url, _environ(), [
            "--label-store-password-file", str(password_file), *maturity,
        ])  # fmt: skip
        (workdir / "prometheus").mkdir()
        # The namespace target label is what the operator's signals select on (Kubernetes service discovery's).
        self.prometheus = PrometheusProcess(
            workdir / "prometheus", [f"127.0.0.1:{s.port}" for s in (self.a, self.b)], {"namespace": NAMESPACE}
        )

    def start(self, version: str) -> None:
        self.a.start(version)
        self.b.start(version)

    def stop_sidecars(self) -> None:
        self.a.stop()
        self.b.stop()

    def close(self) -> None:
        self.stop_sidecars()
        self.prometheus.stop()
        self.redis.stop()
        self.model.stop()

    def query(self, promql: str) -> list[dict[str, Any]]:
        raw = http_get(f"{self.prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert raw is not None, f"Prometheus did not answer {promql}"
        return list(json.loads(raw)["data"]["result"])

    def by_label(self, promql: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(promql)}

    def wait_for_outcomes(self, version: str, expected: Counter[str]) -> None:
        """The confusion counts summed over both replicas, as Prometheus has them, equal ``expected``."""
        wanted = {outcome: float(expected.get(outcome, 0)) for outcome in ("tp", "fp", "tn", "fn")}
        promql = f'sum by (outcome) (modelmonitor_labeled_predictions_total{{model="churn",version="{version}"}})'
        wait_for(f"outcomes {wanted}", lambda: self.by_label(promql, "outcome") == wanted or None, timeout=60)

    def pending_keys(self, version: str) -> int:
        return sum(1 for _ in self.redis.client().scan_iter(match=f"modelmonitor:churn:{version}:p:*", count=1000))


def _environ() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(PASSWORD_ENV, None)
    return env


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("label-store")
    build_churn_profile(workdir, rows=1000)
    rig = Rig(workdir)
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture
def version(rig: Rig, request: pytest.FixtureRequest) -> Iterator[str]:
    """Both replicas started for this test under a version of its own."""
    name = request.node.name.removeprefix("test_")[:40]
    rig.start(name)
    yield name
    rig.stop_sidecars()


def rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "age": round(float(rng.normal(40, 10)), 2),
            "income": round(float(rng.lognormal(10, 0.5)), 1),
            "country": str(rng.choice(["us", "de", "fr"])),
            "gender": str(rng.choice(["f", "m"])),
        }
        for _ in range(n)
    ]


def serve(sidecar: Sidecar, prefix: str, n: int, seed: int) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """``n`` predictions through ``sidecar``; returns (request id to predicted class, the true labels to send)."""
    rng = np.random.default_rng(seed + 1)
    predicted: dict[str, int] = {}
    labels: list[tuple[str, int]] = []
    for i, row in enumerate(rows(n, seed)):
        request_id = f"{prefix}-{i}"
        predicted[request_id] = sidecar.predict(request_id, row)
        labels.append((request_id, int(rng.random() < 0.5)))
    return predicted, labels


def outcomes(predicted: dict[str, int], labels: list[tuple[str, int]]) -> Counter[str]:
    return Counter(OUTCOME[(predicted[request_id], label)] for request_id, label in labels)


def test_labels_posted_to_another_replica_join(rig: Rig, version: str) -> None:
    predicted, labels = serve(rig.a, "other", 200, seed=1)
    wait_for("A's 200 predictions in Redis", lambda: rig.pending_keys(version) == 200, timeout=30)

    assert rig.b.post_labels(labels) == {"joined": 200, "unmatched": 0, "duplicate": 0, "deferred": 0}

    rig.wait_for_outcomes(version, outcomes(predicted, labels))
    assert rig.pending_keys(version) == 0
    assert rig.a.post_labels(labels[:10])["duplicate"] == 10  # a retried label is recognised on any replica


def test_a_sidecar_restart_in_between_loses_nothing(rig: Rig, version: str) -> None:
    predicted, labels = serve(rig.a, "restart", 150, seed=2)
    rig.a.stop()  # at once: what is still queued is written on the way out
    assert rig.pending_keys(version) == 150
    rig.a.start(version)

    joined = rig.a.post_labels(labels[:75])["joined"] + rig.b.post_labels(labels[75:])["joined"]

    assert joined == 150
    rig.wait_for_outcomes(version, outcomes(predicted, labels))


def test_the_store_going_away_loses_no_answered_prediction_and_no_counted_label(rig: Rig, version: str) -> None:
    before, labels_before = serve(rig.a, "before", 100, seed=3)
    wait_for("the first predictions in Redis", lambda: rig.pending_keys(version) == 100, timeout=30)
    rig.redis.stop()
    try:
        # The model keeps answering through A (serve() asserts every 200); A queues the records.
        during, labels_during = serve(rig.a, "during", 100, seed=4)
        answer = rig.b.post_labels(labels_before + labels_during)
        assert answer == {"joined": 0, "unmatched": 0, "duplicate": 0, "deferred": 200}
        base = f'model="churn",version="{version}"'

        def store_seen_down() -> bool:
            up = rig.by_label(f"modelmonitor_label_store_up{{{base}}}", "instance")
            queued = rig.by_label(f"sum by (kind) (modelmonitor_label_store_queued{{{base}}})", "kind")
            return list(up.values()) == [0.0, 0.0] and queued == {"prediction": 100.0, "label": 200.0}

        wait_for("both replicas to report the store down, A's records and B's labels queued", store_seen_down)
        errors = rig.by_label(f"sum by (operation) (modelmonitor_label_store_errors_total{{{base}}})", "operation")
        assert errors["write"] >= 1 and errors["join"] >= 1
    finally:
        rig.redis.start()

    rig.wait_for_outcomes(version, outcomes({**before, **during}, labels_before + labels_during))
    received = rig.by_label(
        f'sum by (result) (modelmonitor_labels_received_total{{model="churn",version="{version}"}})', "result"
    )
    assert received == {"joined": 200.0, "unmatched": 0.0, "duplicate": 0.0}
    dropped = rig.query(f'sum(modelmonitor_label_store_dropped_total{{version="{version}"}})')
    assert float(dropped[0]["value"][1]) == 0


def test_two_replicas_receiving_one_label_count_it_once(rig: Rig, version: str) -> None:
    predicted, labels = serve(rig.a, "twice", 300, seed=5)
    wait_for("the predictions in Redis", lambda: rig.pending_keys(version) == 300, timeout=30)
    answers: dict[str, list[dict[str, int]]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def deliver(sidecar: Sidecar) -> None:
        start.wait()
        for first in range(0, 300, 20):  # small batches, so the two replicas' joins interleave
            answers[sidecar.name].append(sidecar.post_labels(labels[first : first + 20]))

    threads = [threading.Thread(target=deliver, args=(s,)) for s in (rig.a, rig.b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    joined = {name: sum(a["joined"] for a in replies) for name, replies in answers.items()}
    duplicate = {name: sum(a["duplicate"] for a in replies) for name, replies in answers.items()}
    assert joined["a"] + joined["b"] == 300 and duplicate["a"] + duplicate["b"] == 300
    rig.wait_for_outcomes(version, outcomes(predicted, labels))


def test_accuracy_with_a_label_delay_judges_the_maturity_cohort(rig: Rig, version: str) -> None:
    """Labels within the maturity count at maturity, once across replicas; later ones count late only; the
    operator's accuracy with ``labelDelay`` is the cohort's, computed here from the predictions and labels."""
    rng = np.random.default_rng(7)
    base = f'namespace="{NAMESPACE}",model="churn",version="{version}"'
    # Both replicas scraped once before any traffic: every counter's first sample is 0, so increase() sees it all.
    scraped = f"count(modelmonitor_labeled_predictions_total{{{base}}}) by (instance)"
    wait_for("a first scrape of both replicas", lambda: len(rig.by_label(scraped, "instance")) == 2 or None)
    # Prometheus extrapolates increase() by up to a scrape interval over a series' span in the window: 15 s of
    # series before the traffic keep that to about 5 % for the offset window of the coverage query below.
    time.sleep(15)

    def timed_serve(prefix: str, n: int, seed: int) -> tuple[dict[str, int], dict[str, tuple[float, float]]]:
        predicted: dict[str, int] = {}
        when: dict[str, tuple[float, float]] = {}  # request id -> (before, after) the proxied call
        for i, row in enumerate(rows(n, seed)):
            request_id = f"{prefix}-{i}"
            before = time.time()
            predicted[request_id] = rig.a.predict(request_id, row)
            when[request_id] = (before, time.time())
        return predicted, when

    def timed_post(sidecar: Sidecar, labels: list[tuple[str, int]]) -> tuple[float, float]:
        before = time.time()
        assert sidecar.post_labels(labels)["joined"] == len(labels)
        return before, time.time()

    # In time: labels mostly right (80 %), posted to both replicas at once after the predictions.
    early, early_when = timed_serve("early", 60, seed=11)
    early_labels = [(r, p if rng.random() < 0.8 else 1 - p) for r, p in early.items()]
    wait_for("the early predictions in Redis", lambda: rig.pending_keys(version) == 60, timeout=30)
    posted = [timed_post(rig.a, early_labels[:30]), timed_post(rig.b, early_labels[30:])]
    # Too late: every label says the model was wrong, and comes after the maturity.
    late, late_when = timed_serve("late", 40, seed=12)
    late_labels = [(r, 1 - p) for r, p in late.items()]
    time.sleep(max(0.0, max(after for _, after in late_when.values()) + MATURITY_SECONDS + 1 - time.time()))
    late_posted = timed_post(rig.b, late_labels)
    # The test's own account: which labels came within the maturity (the sidecar's clock sits inside these spans).
    for request_id, _ in early_labels:
        assert max(after for _, after in posted) - early_when[request_id][0] <= MATURITY_SECONDS, "serve was slow"
    assert all(late_posted[0] - after > MATURITY_SECONDS for _, after in late_when.values())
    cohort = outcomes(early, early_labels)

    matured = f'sum by (outcome) (modelmonitor_matured_labeled_predictions_total{{{base},maturity="{MATURITY}"}})'
    wanted = {outcome: float(cohort.get(outcome, 0)) for outcome in ("tp", "fp", "tn", "fn")}
    wait_for(f"the matured cohort {wanted}", lambda: rig.by_label(matured, "outcome") == wanted or None, timeout=60)
    late_total = f'sum(modelmonitor_labels_late_total{{{base},maturity="{MATURITY}"}})'
    wait_for("40 late labels", lambda: rig.by_label(late_total, "") == {"": 40.0} or None, timeout=30)
    rig.wait_for_outcomes(version, outcomes({**early, **late}, early_labels + late_labels))  # as joined: all
    # The coverage query below reads the predictions one maturity back: wait until Prometheus had scraped all 100
    # by then (on a loaded host the last scrape before that instant could still predate the late ones).
    predictions_then = f"sum(modelmonitor_label_predictions_total{{{base}}} offset {MATURITY})"
    wait_for(
        f"all 100 predictions scraped {MATURITY} ago",
        lambda: rig.by_label(predictions_then, "") == {"": 100.0} or None,
        timeout=60,
    )
    assert rig.pending_keys(version) == 0
    held = sum(1 for _ in rig.redis.client().scan_iter(match=f"modelmonitor:churn:{version}:m:*"))
    assert held == 0  # every held outcome swept (an empty sorted set is no key)

    # The operator's signal code, through this Prometheus: the cohort's accuracy, not the joined labels'.
    def request(policy: str, **extra: Any) -> SignalRequest:
        return SignalRequest(NAMESPACE, "churn-mm", policy, "churn", "5m", signal="accuracy", version=version, **extra)

    delayed, as_joined, unknown = (
        request("cohort", label_delay=MATURITY),
        request("joined"),
        request("unknown", label_delay="1h"),
    )
    # docs/signals.md's query for the share of a cohort labeled in time: 60 of the 100 predictions
    selection = "namespace={{namespace}}, model={{model}}, version={{version}}"
    covered = SignalRequest(
        NAMESPACE,
        "churn-mm",
        "labeled-in-time",
        "churn",
        "5m",
        version=version,
        query=f'sum(increase(modelmonitor_matured_labeled_predictions_total{{{selection}, maturity="{MATURITY}"}}'
        f"[{{{{window}}}}])) / sum(increase(modelmonitor_label_predictions_total{{{selection}}}[{{{{window}}}}] "
        f"offset {MATURITY}))",
    )
    at = datetime.now(UTC)
    with PrometheusClient(PrometheusSettings(url=rig.prometheus.url, timeout_seconds=10)) as prometheus:
        cycle = measure([delayed, as_joined, unknown, covered], prometheus, at=at)
        cohort_series = f'modelmonitor_matured_labeled_predictions_total{{{base},maturity="{MATURITY}"'
        by_hand = prometheus.query(
            f'sum(increase({cohort_series},outcome=~"tp|tn"}}[5m])) / sum(increase({cohort_series}}}[5m]))', at=at
        )
    expected = (cohort["tp"] + cohort["tn"]) / 60
    all_joined = outcomes({**early, **late}, early_labels + late_labels)
    as_joined_accuracy = (all_joined["tp"] + all_joined["tn"]) / 100
    assert abs(expected - as_joined_accuracy) > 0.2  # the late labels would drag it down: the cohort leaves them out
    measured = cycle.results[delayed]
    assert measured.kind is MeasurementKind.VALUES, measured
    # Two replicas scraped at different instants: Prometheus extrapolates each one's increase by under a scrape
    # interval over its series' span, scaling numerator and denominator of that replica alike.
    assert measured.series[0].value == pytest.approx(expected, abs=0.01)
    assert measured.series[0].value == pytest.approx(by_hand.values[0], rel=1e-9)
    assert cycle.results[as_joined].series[0].value == pytest.approx(as_joined_accuracy, abs=0.01)
    # within the extrapolation (all labels joined: the coverage as they join would be 1)
    assert cycle.results[covered].series[0].value == pytest.approx(60 / 100, rel=0.06), cycle.results[covered]
    assert rig.by_label(matured, "outcome") == wanted  # still: no late label reached the cohort meanwhile
    assert cycle.results[unknown].kind is MeasurementKind.NO_DATA
    assert "start the sidecars with --label-maturity 1h" in cycle.results[unknown].reason
