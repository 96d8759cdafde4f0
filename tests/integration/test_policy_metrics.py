"""Several series and the operator's per-policy /metrics, on the real sandbox.

Two real exporter processes (two replicas of a model) scraped by a real Prometheus; a `query:` policy with
`op: "<"` and no `reduce` over both; the operator as a real process (`modelmonitor run`). The status is read back
through kubectl, and the operator's /metrics both directly and through the sandbox's Prometheus scraping it, as
Grafana and Alertmanager would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import Cluster, ExporterProcess, OperatorProcess, PrometheusProcess, http_get, wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modelmonitor.dev_modelmonitors.yaml"
POLICY = "replica-accuracy"


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/modelmonitors.modelmonitor.dev", "--timeout=60s")


def accuracy(value: float) -> list[dict[str, Any]]:
    """One replica's accuracy gauge."""
    return [{"name": "replica_accuracy", "labels": {"model": "fraud"}, "value": value}]


def monitor(name: str, **policy: Any) -> str:
    body = {
        "apiVersion": "modelmonitor.dev/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": name},
        "spec": {
            "target": {"name": "fraud"},
            "model": {"name": "fraud"},
            "prometheus": {"timeout": "2s"},
            "interval": "1s",
            "policies": [
                {
                    "name": POLICY,
                    "query": "replica_accuracy{namespace={{namespace}}, model={{model}}}",
                    "window": "10s",
                    "condition": {"op": "<", "threshold": 0.8},
                    **policy,
                }
            ],
        },
    }
    return json.dumps(body)


@pytest.fixture
def replicas(
    cluster: Cluster, crd: None, namespace: str, tmp_path: Path
) -> Iterator[tuple[ExporterProcess, ExporterProcess, OperatorProcess]]:
    """A healthy and a failing replica, a Prometheus scraping both, and an operator whose /metrics the sandbox's
    Prometheus scrapes."""
    healthy, failing = ExporterProcess(tmp_path), ExporterProcess(tmp_path)
    healthy.set(accuracy(0.95))
    failing.set(accuracy(0.60))
    prometheus = PrometheusProcess(tmp_path, [healthy.address, failing.address], {"namespace": namespace})
    # Every evaluation written: Prometheus may have scraped one replica only at the first evaluation, and with
    # the default heartbeat a later "2 of 2 series" that changes no state would reach the status minutes later.
    env = {**cluster.env(), "MODELMONITOR_PROMETHEUS_URL": prometheus.url, "MODELMONITOR_STATUS_HEARTBEAT_SECONDS": "0"}
    operator = OperatorProcess(env, namespace, tmp_path)
    operator.start()
    target = f"operator-{namespace}"
    cluster.add_scrape_target(target, f"127.0.0.1:{operator.metrics_port}")
    yield healthy, failing, operator
    cluster.remove_scrape_target(target)
    operator.stop()
    prometheus.stop()
    healthy.stop()
    failing.stop()


def policy_entry(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status = cluster.kubectl_json("get", "modelmonitor", name, "-n", namespace).get("status") or {}
    return next((p for p in status.get("policies") or [] if p.get("name") == POLICY), {})


def scraped(operator: OperatorProcess, namespace: str, name: str) -> dict[tuple[str, str], float]:
    """The operator's per-policy samples of one monitor, from its own /metrics: (metric, state) -> value."""
    body = http_get(f"http://127.0.0.1:{operator.metrics_port}/metrics")
    assert body is not None, "the operator's /metrics did not answer"
    samples: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("namespace") == namespace and labels.get("monitor") == name:
                assert labels.get("policy", POLICY) == POLICY
                samples[(sample.name, labels.get("state", labels.get("phase", "")))] = sample.value
    return samples


def test_without_reduce_the_failing_replica_decides_and_the_metrics_show_it(
    cluster: Cluster, namespace: str, replicas: tuple[ExporterProcess, ExporterProcess, OperatorProcess]
) -> None:
    healthy, failing, operator = replicas
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=monitor("fraud"))

    # Prometheus may have scraped one replica only at the first evaluations: wait for both.
    firing = wait_for(
        "the policy to fire, judged over both replicas",
        lambda: (
            (entry := policy_entry(cluster, namespace, "fraud")).get("state") == "Firing"
            and "2 of 2 series" in entry["message"]
            and entry
        ),
        timeout=60,
    )
    assert firing["value"] == pytest.approx(0.60)
    assert firing["threshold"] == 0.8
    message = firing["message"]
    assert "value 0.6 < 0.8" in message
    assert "lowest of 2 of 2 series" in message
    assert f'instance="{failing.address}"' in message, message  # the series that decided, by its labels
    assert healthy.address not in message

    # The operator's /metrics carries the same verdict, straight from the status it wrote.
    samples = wait_for(
        "the policy's series on the operator's /metrics",
        lambda: (
            (s := scraped(operator, namespace, "fraud")).get(("modelmonitor_policy_value", "")) == firing["value"] and s
        ),
        timeout=20,
    )
    assert samples[("modelmonitor_policy_state", "Firing")] == 1.0
    assert samples[("modelmonitor_policy_state", "Inactive")] == 0.0
    assert samples[("modelmonitor_policy_threshold", "")] == 0.8
    assert samples[("modelmonitor_monitor_phase", "Firing")] == 1.0

    # Through a real Prometheus scraping the operator: what a Grafana panel or an alert rule would read.
    selector = f'namespace="{namespace}", monitor="fraud", policy="{POLICY}"'
    wait_for(
        "Prometheus to scrape the firing policy from the operator",
        lambda: cluster.prometheus_query(f'modelmonitor_policy_state{{{selector}, state="Firing"}} == 1'),
        timeout=60,
    )
    value = cluster.prometheus_query(f"modelmonitor_policy_value{{{selector}}}")
    assert [float(v["value"][1]) for v in value] == [pytest.approx(0.60)]

    # The failing replica recovers: the worst series is now above the threshold and the policy clears.
    failing.set(accuracy(0.90))
    cleared = wait_for(
        "the policy to clear once the worst replica is healthy",
        lambda: (entry := policy_entry(cluster, namespace, "fraud")).get("state") == "Inactive" and entry,
        timeout=60,
    )
    assert cleared["value"] == pytest.approx(0.90)
    assert f'instance="{failing.address}"' in cleared["message"]  # still the lowest of the two
    wait_for(
        "the recovered value on the operator's /metrics",
        lambda: scraped(operator, namespace, "fraud").get(("modelmonitor_policy_state", "Inactive")) == 1.0,
        timeout=20,
    )

    # Deleted: the monitor's series are gone from the next scrape.
    cluster.kubectl("delete", "modelmonitor", "fraud", "-n", namespace)
    wait_for("the deleted monitor's series to disappear", lambda: not scraped(operator, namespace, "fraud"), timeout=30)


def test_an_explicit_reduce_max_still_judges_the_healthiest_replica(
    cluster: Cluster, namespace: str, replicas: tuple[ExporterProcess, ExporterProcess, OperatorProcess]
) -> None:
    healthy, _failing, operator = replicas
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=monitor("fraud-max", reduce="max"))
    entry = wait_for(
        "the reduce: max policy to be evaluated over both replicas",
        lambda: "2 of 2 series" in (e := policy_entry(cluster, namespace, "fraud-max")).get("message", "") and e,
        timeout=60,
    )
    assert entry["state"] == "Inactive"
    assert entry["value"] == pytest.approx(0.95)
    assert "reduce max over 2 of 2 series" in entry["message"]
    assert f'instance="{healthy.address}"' in entry["message"]
    samples = wait_for(
        "the policy's value on the operator's /metrics",
        lambda: (s := scraped(operator, namespace, "fraud-max")).get(("modelmonitor_policy_value", "")) and s,
        timeout=20,
    )
    assert samples[("modelmonitor_policy_value", "")] == pytest.approx(0.95)
    assert samples[("modelmonitor_policy_state", "Inactive")] == 1.0
