"""Scale on the real sandbox: a breach adds replicas one bounded step per cooldown and the new pods become
Running; with an HPA in charge, its bounds move instead and the HPA controller does the scaling. With
``scaleDown``, once the policy has stayed clear for the stabilization window, the replicas (or the HPA's bounds)
come back to where the action started."""

from __future__ import annotations

import json

import pytest
from actions_rig import Rig, crd_fixture, deployment, monitor, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from modelmonitor.policy import parse_time
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


def inactive_since(rig: Rig) -> str:
    """When the policy last became Inactive (the start of the clear period), once it is Inactive and measured OK."""
    policy = wait_for(
        "the policy to be Inactive and measured OK",
        lambda: next(
            (
                p
                for p in rig.status().get("policies") or []
                if p["state"] == "Inactive" and p.get("lastOutcome") == "OK"
            ),
            None,
        ),
        timeout=60,
    )
    return str(policy["since"])


def seconds_between(earlier: str, later: str) -> float:
    return (parse_time(later) - parse_time(earlier)).total_seconds()


def down_records(rig: Rig) -> list[dict[str, object]]:
    return [r for r in rig.records("scaleUp") if "/down" in str(r["key"]) and r["result"] == "Succeeded"]


def test_after_the_policy_clears_for_the_window_the_replicas_come_back_to_where_they_started(rig: Rig) -> None:
    rig.healthy()
    rig.apply(deployment(replicas=1))
    wait_for("1 Running pod", lambda: len(rig.running_pods()) == 1)
    rig.operator.start()
    action = {
        "type": "scale",
        "step": 1,
        "maxReplicas": 3,
        "cooldown": "3s",
        "scaleDown": {"stabilizationWindow": "15s"},
    }
    rig.apply(monitor({"scaleUp": action}))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)

    rig.broken()
    wait_for("3 replicas", lambda: replicas(rig) == 3, timeout=90)
    rig.healthy()
    cleared = inactive_since(rig)
    assert replicas(rig) == 3, "nothing comes back before the window"

    wait_for("back to 1 replica", lambda: replicas(rig) == 1, timeout=120)
    wait_for("1 Running pod", lambda: len(rig.running_pods()) == 1, timeout=60)
    steps = down_records(rig)
    assert [str(r["reason"]).split(":")[0] for r in steps] == [
        "scale Deployment/fraud from 3 to 2 replicas",
        "scale Deployment/fraud from 2 to 1 replicas",
    ]
    assert "giving back what action scaleUp added (it started from 1)" in str(steps[0]["reason"])
    assert seconds_between(cleared, str(steps[0]["at"])) >= 15, "the first step waits for the whole window"
    assert seconds_between(str(steps[0]["at"]), str(steps[1]["at"])) >= 3, "one step per cooldown"
    assert str(steps[1]["key"]) == str(steps[0]["key"]) + "#2"
    events = [e for e in rig.events("ActionSucceeded") if "giving back" in e["message"]]
    assert events, "an Event per step down"
    ledger = json.loads(rig.get("deployment", "fraud")["metadata"]["annotations"]["modelmonitor.dev/scale-ledger"])
    assert "origin" not in ledger["fraud/scaleUp"], "nothing owed any more"
    assert rig.status()["phase"] == "Healthy"

    rig.broken()
    wait_for("a new episode scales up again", lambda: replicas(rig) == 2, timeout=90)


def test_with_an_hpa_the_raised_bounds_are_given_back(rig: Rig) -> None:
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
    action = {
        "type": "scale",
        "step": 2,
        "maxReplicas": 3,
        "cooldown": "2s",
        "scaleDown": {"stabilizationWindow": "10s", "step": 2},
    }
    rig.apply(monitor({"scaleUp": action}))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)

    def bounds() -> tuple[int, int]:
        spec = rig.get("horizontalpodautoscaler", "fraud")["spec"]
        return int(spec["minReplicas"]), int(spec["maxReplicas"])

    rig.broken()
    wait_for("the HPA floor raised to 3", lambda: bounds() == (3, 4), timeout=90)
    rig.healthy()
    cleared = inactive_since(rig)
    assert bounds() == (3, 4)

    wait_for("the HPA bounds given back", lambda: bounds() == (1, 4), timeout=120)
    [step] = down_records(rig)
    assert str(step["reason"]).startswith(
        "set HorizontalPodAutoscaler fraud minReplicas 3 -> 1, maxReplicas 4 -> 4: giving back the bounds"
    )
    assert seconds_between(cleared, str(step["at"])) >= 10
    hpa = rig.get("horizontalpodautoscaler", "fraud")
    ledger = json.loads(hpa["metadata"]["annotations"]["modelmonitor.dev/scale-ledger"])
    assert "origin" not in ledger["fraud/scaleUp"]
    assert "modelmonitor.dev/scale-ledger" not in (rig.get("deployment", "fraud")["metadata"].get("annotations") or {})
