"""The operator against the real sandbox: a real exporter process, a real Prometheus scraping it, the operator as
a real process (`modelmonitor run`), status and Events read back through kubectl as a user would.

Each test gets its own namespace, exporter and Prometheus (so one test can stop Prometheus without disturbing
the others), and an operator watching only that namespace.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from support import Cluster, ExporterProcess, OperatorProcess, PrometheusProcess, http_get, wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modelmonitor.dev_modelmonitors.yaml"


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/modelmonitors.modelmonitor.dev", "--timeout=60s")


def labeled(model: str, good: float, bad: float) -> list[dict[str, Any]]:
    """Label-joined outcomes at `good` correct and `bad` wrong predictions per second."""
    base = {"model": model, "version": "v1", "group": "all"}
    return [
        {"name": "modelmonitor_labeled_predictions_total", "labels": {**base, "outcome": "tp"}, "rate": good},
        {"name": "modelmonitor_labeled_predictions_total", "labels": {**base, "outcome": "fp"}, "rate": bad},
    ]


@pytest.fixture
def rig(
    cluster: Cluster, crd: None, namespace: str, tmp_path: Path
) -> Iterator[tuple[ExporterProcess, PrometheusProcess, OperatorProcess]]:
    exporter = ExporterProcess(tmp_path)
    prometheus = PrometheusProcess(tmp_path, [exporter.address], {"namespace": namespace})
    operator = OperatorProcess({**cluster.env(), "MODELMONITOR_PROMETHEUS_URL": prometheus.url}, namespace, tmp_path)
    yield exporter, prometheus, operator
    operator.stop()
    prometheus.stop()
    exporter.stop()
    if os.environ.get("MODELMONITOR_SHOW_OPERATOR_LOG"):
        print(operator.log.read_text())


def monitor(name: str, model: str, *, for_: str = "4s", keep: str = "4s", window: str = "6s", **extra: Any) -> str:
    policy = {
        "name": "accuracy-drop",
        "signal": "accuracy",
        "window": window,
        "condition": {"op": "<", "threshold": 0.8, "clearThreshold": 0.85},
        "for": for_,
        "keepFiringFor": keep,
        "minSamples": 5,
        "severity": "critical",
        "actions": ["page"],
    }
    body = {
        "apiVersion": "modelmonitor.dev/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": name},
        "spec": {
            "target": {"name": model},
            "model": {"name": model},
            "prometheus": {"timeout": "2s"},
            "interval": "1s",
            "policies": [policy],
            "actions": {"page": {"type": "alert"}},
            **extra,
        },
    }
    return json.dumps(body)


def policy_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status = cluster.kubectl_json("get", "modelmonitor", name, "-n", namespace).get("status") or {}
    policies = status.get("policies") or [{}]
    return {"phase": status.get("phase"), **policies[0], "_status": status}


def watch_states(
    cluster: Cluster, namespace: str, name: str, until: Callable[[dict[str, Any]], bool], timeout: float
) -> list[str]:
    """The sequence of distinct policy states seen until `until(status)` holds."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = policy_status(cluster, namespace, name)
        state = current.get("state")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if until(current):
            return seen
        time.sleep(0.3)
    raise AssertionError(f"timed out; states seen: {seen}; last status: {current}")


def events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("get", "events", "-n", namespace)["items"])


def test_a_breach_goes_pending_firing_resolving_inactive_with_real_timings(
    cluster: Cluster, namespace: str, rig: tuple[ExporterProcess, PrometheusProcess, OperatorProcess]
) -> None:
    exporter, _prometheus, operator = rig
    exporter.set(labeled("fraud", good=20, bad=1))
    operator.start()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=monitor("fraud", "fraud"))
    wait_for("Healthy", lambda: policy_status(cluster, namespace, "fraud")["phase"] == "Healthy", timeout=60)

    exporter.set(labeled("fraud", good=5, bad=20))  # accuracy 0.2
    seen = watch_states(cluster, namespace, "fraud", lambda s: s.get("state") == "Firing", timeout=60)
    assert seen[-2:] == ["Pending", "Firing"], seen
    firing = policy_status(cluster, namespace, "fraud")
    pending_for = (
        datetime.fromisoformat(firing["since"].replace("Z", "+00:00"))
        - datetime.fromisoformat(firing["activeSince"].replace("Z", "+00:00"))
    ).total_seconds()
    assert pending_for >= 4, f"fired {pending_for} s after the breach began, before `for: 4s`"
    assert firing["value"] < 0.8 and firing["threshold"] == 0.8
    assert firing["phase"] in ("Firing", "Acting")
    listing = cluster.kubectl("get", "mm", "-n", namespace).stdout
    assert "accuracy-drop" in listing and "fraud" in listing

    exporter.set(labeled("fraud", good=20, bad=0))
    seen = watch_states(cluster, namespace, "fraud", lambda s: s.get("state") == "Inactive", timeout=90)
    assert seen == ["Firing", "Resolving", "Inactive"], seen
    assert policy_status(cluster, namespace, "fraud")["phase"] == "Healthy"

    reasons = [e["reason"] for e in events(cluster, namespace) if e["involvedObject"]["name"] == "fraud"]
    for reason in ("PolicyPending", "PolicyFiring", "PolicyResolving", "PolicyInactive"):
        assert reason in reasons, reasons
    firing_event = next(e for e in events(cluster, namespace) if e["reason"] == "PolicyFiring")
    assert firing_event["type"] == "Warning"
    for evidence in ("0.8", "6s", "accuracy"):
        assert evidence in firing_event["message"], firing_event["message"]
    # The alert (an Event: no Alertmanager configured) is recorded once per episode, and so is its resolution.
    actions = policy_status(cluster, namespace, "fraud")["_status"].get("actions") or []
    page = [(a["key"].endswith("#resolved"), a["result"]) for a in actions if a["name"] == "page"]
    assert page == [(False, "Succeeded"), (True, "Succeeded")], actions


def test_missing_series_is_nodata_and_a_stopped_prometheus_is_error_without_decisions(
    cluster: Cluster, namespace: str, rig: tuple[ExporterProcess, PrometheusProcess, OperatorProcess]
) -> None:
    exporter, prometheus, operator = rig
    exporter.set(labeled("churn", good=20, bad=1))
    operator.start()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=monitor("churn", "churn", for_="2s"))
    wait_for("Healthy", lambda: policy_status(cluster, namespace, "churn")["phase"] == "Healthy", timeout=60)

    exporter.set([])  # the model stops reporting: its series go away
    wait_for("NoData", lambda: policy_status(cluster, namespace, "churn").get("state") == "NoData", timeout=60)
    assert policy_status(cluster, namespace, "churn")["phase"] == "NoData"

    exporter.set(labeled("churn", good=20, bad=1))
    wait_for(
        "Inactive again", lambda: policy_status(cluster, namespace, "churn").get("state") == "Inactive", timeout=60
    )

    prometheus.stop()
    errored = wait_for(
        "Error while Prometheus is down",
        lambda: (s := policy_status(cluster, namespace, "churn")).get("state") == "Error" and s,
        timeout=60,
    )
    assert errored["lastOutcome"] == "Error"
    assert "could not measure" in errored["message"] or "connect" in errored["message"].lower()
    wait_for(
        "Degraded after repeated errors",
        lambda: policy_status(cluster, namespace, "churn")["phase"] == "Degraded",
        timeout=60,
    )
    # While Prometheus is down the model also went bad; nothing may be decided on data we cannot see.
    exporter.set(labeled("churn", good=1, bad=20))
    time.sleep(4)
    assert not (policy_status(cluster, namespace, "churn")["_status"].get("actions") or [])

    prometheus.start()
    wait_for(
        "recovery after Prometheus returns",
        lambda: policy_status(cluster, namespace, "churn").get("state") in ("Pending", "Firing"),
        timeout=90,
    )
    assert policy_status(cluster, namespace, "churn")["phase"] != "Degraded"


def test_a_restarted_operator_resumes_the_pending_timer(
    cluster: Cluster, namespace: str, rig: tuple[ExporterProcess, PrometheusProcess, OperatorProcess]
) -> None:
    exporter, _prometheus, operator = rig
    exporter.set(labeled("ranker", good=20, bad=1))
    operator.start()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=monitor("ranker", "ranker", for_="20s"))
    wait_for("Healthy", lambda: policy_status(cluster, namespace, "ranker")["phase"] == "Healthy", timeout=60)

    exporter.set(labeled("ranker", good=1, bad=20))
    pending = wait_for(
        "Pending",
        lambda: (s := policy_status(cluster, namespace, "ranker")).get("state") == "Pending" and s,
        timeout=60,
    )
    active_since = pending["activeSince"]
    operator.kill()
    time.sleep(6)
    operator.start()

    firing = wait_for(
        "Firing after the restart",
        lambda: (s := policy_status(cluster, namespace, "ranker")).get("state") == "Firing" and s,
        timeout=60,
    )
    assert firing["activeSince"] == active_since, "the restarted operator started a new episode"
    started = datetime.fromisoformat(active_since.replace("Z", "+00:00"))
    fired = datetime.fromisoformat(firing["since"].replace("Z", "+00:00"))
    delay = (fired - started).total_seconds()
    # Fired at the original deadline (20 s after the breach began), not 20 s after the restart.
    assert 20 <= delay < 20 + 6, f"fired {delay:.0f} s after the breach began"


def test_specs_only_the_operator_can_judge_are_marked_invalid_and_others_keep_working(
    cluster: Cluster, namespace: str, rig: tuple[ExporterProcess, PrometheusProcess, OperatorProcess]
) -> None:
    exporter, _prometheus, operator = rig
    exporter.set(labeled("fraud", good=20, bad=1))
    operator.start()
    bad = json.loads(monitor("broken", "fraud"))
    bad["spec"]["policies"][0].pop("signal")
    bad["spec"]["policies"][0]["query"] = "sum(rate(x{model={{modle}}}[{{window}}]))"  # a misspelt placeholder
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=monitor("fine", "fraud"))

    broken = wait_for(
        "the broken monitor to be Invalid",
        lambda: (s := policy_status(cluster, namespace, "broken"))["phase"] == "Invalid" and s,
        timeout=60,
    )
    assert "modle" in json.dumps(broken["_status"]), broken["_status"]
    wait_for(
        "the other monitor Healthy", lambda: policy_status(cluster, namespace, "fine")["phase"] == "Healthy", timeout=60
    )
    metrics = http_get(f"http://127.0.0.1:{operator.metrics_port}/metrics") or b""
    assert b"modelmonitor_operator_cycles_total" in metrics


def test_the_api_server_refuses_a_bad_spec_naming_the_field(cluster: Cluster, crd: None, namespace: str) -> None:
    bad = json.loads(monitor("refused", "fraud"))
    bad["spec"]["policies"][0]["condition"]["clearThreshold"] = 0.5  # on the unsafe side of "< 0.8"
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert "clearThreshold" in result.stderr, result.stderr
    bad = json.loads(monitor("refused", "fraud"))
    bad["spec"]["policies"][0]["actions"] = ["nonexistent"]
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    # The server names the fields (naming the action itself would exceed the API server's CEL cost limit).
    assert result.returncode != 0, result.stdout
    assert "spec.policies" in result.stderr and "spec.actions" in result.stderr, result.stderr
