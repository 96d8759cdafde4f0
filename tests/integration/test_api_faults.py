"""API-server faults: the real operator process reaches the real API server only through the fault proxy
(tests/faultproxy.py), which answers 5xx, 409 and 429, resets connections (before the request reaches the API
server, and after it has done the write), slows answers down, cuts watch streams, and goes silent.

While the faults last, a firing policy scales a Deployment step by step, creates one retraining Job and pages the
real Alertmanager. What a user would count afterwards: the Deployment changed exactly once per step, one Job,
one alert, every step recorded as Succeeded in status (no status lost), the monitor evaluated on. An API server
gone silent makes /healthz unhealthy while cycles cannot complete, and healthy again after.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from actions_rig import Rig, crd_fixture, deployment, monitor, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from faultproxy import Fault, FaultProxy
from support import http_get, wait_for

pytestmark = pytest.mark.cluster

MAX_REPLICAS = 3
STATUS = r"/modelmonitors/[^/?]+/status"
DEPLOYMENT_PATH = r"/deployments/fraud(\?|$)"


def faults() -> list[Fault]:
    """The first writes of each kind fail in a set way (a reset after the API server did the write, an error
    status, a slow answer); after that, a share of status writes, reads and Events fail at random (seeded).

    Each kind strikes a set number of times before any strikes at random, so every kind is sure to be there
    however few status writes a run makes."""
    return [
        Fault("status reset after the write", method="PATCH", path=STATUS, reset=True, after=True, times=3),
        Fault("status slow", method="PATCH", path=STATUS, delay=1.5, times=3),
        Fault("status 409", method="PATCH", path=STATUS, status=409, times=2),
        Fault("status 500", method="PATCH", path=STATUS, status=500, times=2),
        Fault("status 500 at random", method="PATCH", path=STATUS, status=500, probability=0.15),
        Fault("status 409 at random", method="PATCH", path=STATUS, status=409, probability=0.1),
        Fault("scale reset after the write", method="PATCH", path=DEPLOYMENT_PATH, reset=True, after=True, times=1),
        Fault("scale 503", method="PATCH", path=DEPLOYMENT_PATH, status=503, times=1),
        Fault("job reset after the write", method="POST", path=r"/jobs(\?|$)", reset=True, after=True, times=1),
        Fault("job 429", method="POST", path=r"/jobs(\?|$)", status=429, times=1),
        Fault("event 500", method="POST", path=r"/events(\?|$)", status=500, probability=0.3),
        Fault("read reset", method="GET", path=r"/apis/(apps|batch)/v1/namespaces/", reset=True, probability=0.1),
        Fault("read slow", method="GET", path=r"/apis/(apps|batch)/v1/namespaces/", delay=1.0, probability=0.1),
        Fault("watch cut", method="GET", path=r"watch=", reset=True, after=True, times=2),
    ]


@pytest.fixture
def proxy(rig: Rig, tmp_path: Path) -> Iterator[FaultProxy]:
    """The operator's kubeconfig now points at the proxy."""
    with FaultProxy(rig.cluster.state.server, Path(rig.cluster.state.root) / "pki", seed=7) as running:
        original = Path(rig.operator.env["KUBECONFIG"])
        rig.operator.env["KUBECONFIG"] = str(running.kubeconfig(original, tmp_path / "proxied.kubeconfig"))
        yield running


def active_alerts(rig: Rig) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{rig.cluster.alertmanager_url}/api/v2/alerts", timeout=5) as response:
        alerts = json.loads(response.read())
    return [a for a in alerts if a["labels"].get("namespace") == rig.namespace]


def test_the_operator_converges_through_api_faults_and_repeats_nothing(rig: Rig, proxy: FaultProxy) -> None:
    rig.cluster.kubectl("create", "serviceaccount", "trainer", "-n", rig.namespace)
    rig.healthy()
    rig.apply(deployment(replicas=1))
    before = int(rig.get("deployment", "fraud")["metadata"]["generation"])
    retrain = {
        "type": "retrain",
        "serviceAccountName": "trainer",
        "cooldown": "1h",
        "jobTemplate": {
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "trainer:v1"}]}},
            }
        },
    }
    actions = {
        "scaleUp": {"type": "scale", "step": 1, "maxReplicas": MAX_REPLICAS, "cooldown": "0s"},
        "retrain": retrain,
        "page": {"type": "alert", "alertmanager": {"url": rig.cluster.alertmanager_url}, "resendInterval": "2s"},
    }
    # Every cycle writes status, so status writes keep meeting the random faults while the policy fires.
    rig.operator.env["MODELMONITOR_STATUS_HEARTBEAT_SECONDS"] = "0"
    proxy.add(*faults())
    rig.operator.start()
    rig.apply(monitor(actions))
    wait_for("Healthy through the faults", lambda: rig.status().get("phase") == "Healthy", timeout=90)

    rig.broken()

    def done() -> bool:
        scaled = rig.get("deployment", "fraud")["spec"]["replicas"] == MAX_REPLICAS
        retrained = bool(rig.records("retrain"))
        return scaled and retrained and len(active_alerts(rig)) == 1

    wait_for(f"every action through the faults; injected: {dict(proxy.injected)}", done, timeout=120)
    time.sleep(6)  # more faulty cycles of the still-firing policy
    proxy.clear()

    def succeeded(action: str) -> set[str]:
        return {r["key"] for r in rig.records(action) if r["result"] == "Succeeded"}

    wait_for(
        "every step and the Job recorded as Succeeded",
        lambda: len(succeeded("scaleUp")) == MAX_REPLICAS - 1 and succeeded("retrain"),
        timeout=60,
    )
    steps = succeeded("scaleUp")
    time.sleep(3)
    injected = dict(proxy.injected)
    print(f"\ninjected: {injected}")

    # Nothing repeated: the Deployment changed once per step, one Job, one alert.
    assert int(rig.get("deployment", "fraud")["metadata"]["generation"]) - before == MAX_REPLICAS - 1, injected
    assert rig.get("deployment", "fraud")["spec"]["replicas"] == MAX_REPLICAS
    jobs = rig.cluster.kubectl_json("get", "jobs", "-n", rig.namespace)["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    assert len(active_alerts(rig)) == 1
    # No status lost: every step and the Job are in the records, each succeeded once.
    records = rig.records("scaleUp")
    for key in steps:
        assert [r["result"] for r in records if r["key"] == key].count("Succeeded") == 1, records
    # A write the API server may have done while the operator saw no answer is not recorded as Failed (an
    # error status is: the API server said it did nothing, and the next cycle tries again).
    both = rig.records("scaleUp") + rig.records("retrain")
    assert not [r for r in both if r["result"] == "Failed" and "unreachable" in r["reason"]], both
    assert [r["result"] for r in rig.records("retrain")].count("Succeeded") == 1, rig.records("retrain")
    # The faults were there: each kind struck at least once, and status writes met the random ones too.
    for fault in faults():
        if fault.probability == 1.0 or not fault.name.startswith("status"):
            assert injected.get(fault.name, 0) >= 1, (fault.name, injected)
    assert injected.get("status 500 at random", 0) + injected.get("status 409 at random", 0) >= 1, injected


def test_an_api_server_gone_silent_makes_the_operator_unhealthy_until_it_answers(rig: Rig, proxy: FaultProxy) -> None:
    rig.operator.env["MODELMONITOR_STALL_SECONDS"] = "5"
    # Every cycle writes status, so lastEvaluationTime shows evaluations resuming (not only the 300 s heartbeat).
    rig.operator.env["MODELMONITOR_STATUS_HEARTBEAT_SECONDS"] = "0"
    rig.healthy()
    rig.apply(deployment(replicas=1))
    rig.operator.start()
    rig.apply(monitor({"scaleUp": {"type": "scale", "step": 1, "maxReplicas": 2, "cooldown": "1h"}}))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)
    healthz = f"http://127.0.0.1:{rig.operator.metrics_port}/healthz"
    assert http_get(healthz) == b"ok\n"

    proxy.blackhole()  # status writes hang until their read timeout: no cycle completes
    wait_for("/healthz to report the stall", lambda: http_get(healthz) is None, timeout=60)
    evaluated = rig.status()["lastEvaluationTime"]
    proxy.restore()
    wait_for("/healthz healthy again", lambda: http_get(healthz) == b"ok\n", timeout=90)
    wait_for("evaluations to resume", lambda: rig.status()["lastEvaluationTime"] > evaluated, timeout=60)
    assert rig.operator.process is not None and rig.operator.process.poll() is None, "the operator kept running"
