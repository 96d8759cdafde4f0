"""Scale on the real sandbox: a breach adds replicas one bounded step per cooldown and the new pods become
Running; with an HPA in charge, its bounds move instead and the HPA controller does the scaling."""

from __future__ import annotations

import json

import pytest
from actions_rig import Rig, crd_fixture, deployment, monitor, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from support import wait_for

pytestmark = pytest.mark.cluster


def replicas(rig: Rig) -> int:
    return int(rig.get("deployment", "fraud")["spec"]["replicas"])


def test_a_breach_scales_up_step_by_step_to_the_maximum_and_pods_run(rig: Rig) -> None:
    rig.healthy()
    rig.apply(deployment(replicas=1))
    wait_for("1 Running pod", lambda: len(rig.running_pods()) == 1)
    rig.operator.start()
    rig.apply(monitor({"scaleUp": {"type": "scale", "step": 1, "maxReplicas": 3, "cooldown": "3s"}}))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)
    assert replicas(rig) == 1

    rig.broken()
    wait_for("3 replicas", lambda: replicas(rig) == 3, timeout=90)
    wait_for("3 Running pods", lambda: len(rig.running_pods()) == 3, timeout=60)
    records = rig.records("scaleUp")
    succeeded = [r for r in records if r["result"] == "Succeeded"]
    assert [r["reason"] for r in succeeded] == [
        "scale Deployment/fraud from 1 to 2 replicas",
        "scale Deployment/fraud from 2 to 3 replicas",
    ]
    assert succeeded[1]["key"] == succeeded[0]["key"] + "#2"
    at = [r["at"] for r in succeeded]
    assert at[0] < at[1], "one step per cooldown"
    ledger = json.loads(rig.get("deployment", "fraud")["metadata"]["annotations"]["modelmonitor.dev/scale-ledger"])
    assert ledger["fraud/scaleUp"]["step"] == 2

    wait_for(
        "the maximum said once",
        lambda: any(r["result"] == "Skipped" and "maxReplicas" in r["reason"] for r in rig.records("scaleUp")),
        timeout=30,
    )
    assert replicas(rig) == 3
    assert [e for e in rig.events("ActionSucceeded") if "scaleUp" in e["message"]], "an Event per step"


def test_with_an_hpa_the_operator_moves_its_bounds_and_the_hpa_scales(rig: Rig) -> None:
    rig.healthy()
    rig.apply(deployment(replicas=1))
    rig.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "fraud"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fraud"},
                "minReplicas": 1,
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                    }
                ],
            },
        }
    )
    rig.operator.start()
    rig.apply(monitor({"scaleUp": {"type": "scale", "step": 2, "maxReplicas": 4, "cooldown": "1h"}}))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)

    rig.broken()
    record = rig.final_record("scaleUp")
    assert record["result"] == "Succeeded", record
    assert "HorizontalPodAutoscaler fraud" in record["reason"] and "instead of the replicas" in record["reason"]
    hpa = rig.get("horizontalpodautoscaler", "fraud")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 4)
    # The HPA controller raises the Deployment to its new floor; the operator never set replicas itself.
    wait_for("the HPA to scale to 3", lambda: replicas(rig) == 3, timeout=90)
    wait_for("3 Running pods", lambda: len(rig.running_pods()) == 3, timeout=60)
    assert "modelmonitor.dev/scale-ledger" not in (rig.get("deployment", "fraud")["metadata"].get("annotations") or {})
