"""Batched queries split by models against a REAL Prometheus scraping the REAL synthetic sidecar fleet
(``bench/synthetic_exporter.py``): with a small series budget, every monitor gets the measurement one whole query
gives it, no answer holds more series than the budget (counted through the querier), and a replica measuring half
of the models asks for its own models only.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusSettings, QueryResult
from modelmonitor.policy.model import MeasurementKind
from modelmonitor.signals import SeriesBook, SignalRequest, measure
from modelmonitor_sandbox.devcluster.processes import free_port
from support import PrometheusProcess, http_get, wait_for

pytestmark = pytest.mark.cluster

EXPORTER = Path(__file__).resolve().parents[2] / "bench" / "synthetic_exporter.py"
NAMESPACE = "split-test"
MODELS = 40
#: The accuracy query's outcomes are 4 series per model: 160 in one answer. Latency (Prometheus' quantile, and the
#: requests) and the error rate are one series per model.
BUDGET = 60
SIGNALS = ("accuracy", "errorRate", "latencyP95")


class CountingQuerier:
    """The real client, noting every query and the series of its answer."""

    def __init__(self, client: PrometheusClient) -> None:
        self.client = client
        self.asked: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def query(self, promql: str, *, at: datetime | None = None) -> QueryResult:
        answer = self.client.query(promql, at=at)
        assert answer.ok, answer.error
        with self.lock:
            self.asked.append((promql, len(answer.samples)))
        return answer

    @property
    def largest(self) -> int:
        return max(size for _, size in self.asked)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusClient]:
    directory = tmp_path_factory.mktemp("split")
    port = free_port()
    exporter = subprocess.Popen([sys.executable, str(EXPORTER), "--port", str(port), "--models", str(MODELS)])
    try:
        wait_for("the synthetic exporter", lambda: http_get(f"http://127.0.0.1:{port}/healthz"), timeout=30)
        server = PrometheusProcess(directory, [f"127.0.0.1:{port}"], {"namespace": NAMESPACE})
        client = PrometheusClient(PrometheusSettings(url=server.url))
        try:

            def scraped_five_times() -> bool:
                answer = client.query("count(count_over_time(modelmonitor_request_errors_total[1m]) >= 5)")
                return answer.ok and bool(answer.samples) and answer.samples[0].value >= MODELS

            wait_for("every model scraped five times", scraped_five_times, timeout=60)
            yield client
        finally:
            client.close()
            server.stop()
    finally:
        exporter.kill()
        exporter.wait()


def fleet_requests(models: range | list[int]) -> list[SignalRequest]:
    return [
        SignalRequest(
            namespace=NAMESPACE, monitor=f"m-{i}", policy=signal, model=f"model-{i:05d}", window="1m", signal=signal
        )
        for i in models
        for signal in SIGNALS
    ]


def models_named(query: str) -> set[str]:
    """The model names of a query's model matchers."""
    found: set[str] = set()
    for operator, text in re.findall(r'model(=~?)"([^"]*)"', query):
        found.update(text.split("|") if operator == "=~" else [text])
    return found


def test_split_queries_measure_what_one_query_measures_within_the_budget(prometheus: PrometheusClient) -> None:
    # Scraped already (at least four scrapes in the window): both ways read the same samples.
    at = datetime.now(UTC) - timedelta(seconds=1)
    requests = fleet_requests(range(MODELS))
    whole_querier = CountingQuerier(prometheus)
    whole = measure(requests, whole_querier, at=at)
    assert whole_querier.largest == MODELS * 4

    book = SeriesBook(budget=BUDGET)
    querier = CountingQuerier(prometheus)
    first = measure(requests, querier, at=at, book=book)
    counted = len(querier.asked)
    second = measure(requests, querier, at=at, book=book)
    assert querier.largest <= BUDGET
    assert not any(query.startswith("count") for query, _ in querier.asked[counted:])
    for cycle in (first, second):
        for item in requests:
            got, expected = cycle.results[item], whole.results[item]
            assert got.kind is expected.kind is MeasurementKind.VALUES, (item, got)
            assert [s.value for s in got.series] == pytest.approx([s.value for s in expected.series])
            assert [s.samples for s in got.series] == [s.samples for s in expected.series]
    # Outcomes: 15 models of 4 a part (3 parts); the latency quantile, the requests and the errors (one series
    # per model, 40) stay whole.
    assert second.split_queries == 1
    assert second.batched_queries == 3 + 2 + 2
    assert second.largest_answer == 15 * 4 == BUDGET  # the outcome parts fill it exactly


def test_a_replica_asks_for_its_own_share_only(prometheus: PrometheusClient) -> None:
    at = datetime.now(UTC) - timedelta(seconds=1)
    share = list(range(0, MODELS, 2))
    mine = {f"model-{i:05d}" for i in share}
    book = SeriesBook(budget=BUDGET)
    querier = CountingQuerier(prometheus)
    measure(fleet_requests(share), querier, at=at, book=book)
    querier.asked.clear()
    cycle = measure(fleet_requests(share), querier, at=at, book=book)
    # Every query names this replica's models and no other: the share's outcomes (20 x 4) pass the budget and
    # go in two parts; its latency quantile, requests and errors (20 series each) fit, and are restricted because
    # they are half of the whole answers (learnt from the first cycle's whole answers).
    assert all(models_named(query) for query, _ in querier.asked), querier.asked
    assert {name for query, _ in querier.asked for name in models_named(query)} == mine
    assert (cycle.split_queries, cycle.batched_queries) == (5, 6)
    assert querier.largest <= BUDGET
    assert all(result.kind is MeasurementKind.VALUES for result in cycle.results.values())
