"""Two monitors scaling one Deployment on the real sandbox: the older one steps it, the later one shows the
Conflict condition and a Warning Event naming the older one and leaves the Deployment alone (its decisions are
Skipped with the reason); once the older monitor is deleted the later one acts."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from actions_rig import Rig, crd_fixture, deployment, monitor, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from support import wait_for

pytestmark = pytest.mark.cluster


def replicas(rig: Rig) -> int:
    return int(rig.get("deployment", "fraud")["spec"]["replicas"])


def ledger(rig: Rig) -> dict[str, Any]:
    """The scale ledger on the Deployment: which monitor's action took which step."""
    annotations = rig.get("deployment", "fraud")["metadata"].get("annotations") or {}
    return dict(json.loads(annotations.get("modelmonitor.dev/scale-ledger", "{}")))


def conflict(rig: Rig, name: str) -> dict[str, Any]:
    """The Conflict condition of monitor ``name`` ({} before its first status)."""
    found = [c for c in rig.status(name).get("conditions") or [] if c["type"] == "Conflict"]
    return dict(found[0]) if found else {}


def test_the_later_monitor_yields_to_the_older_one_until_it_is_deleted(rig: Rig) -> None:
    rig.healthy()
    rig.apply(deployment(replicas=1))
    wait_for("1 Running pod", lambda: len(rig.running_pods()) == 1)
    rig.operator.start()
    # The older monitor takes one step per hour; the later one would step every second if it could.
    rig.apply(monitor({"scaleUp": {"type": "scale", "step": 1, "maxReplicas": 3, "cooldown": "1h"}}))
    wait_for("the older monitor Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)
    time.sleep(1.1)  # creationTimestamps have whole seconds: make the later one later, not only by name
    rig.apply(monitor({"scaleUp": {"type": "scale", "step": 1, "maxReplicas": 3, "cooldown": "0s"}}, name="canary"))
    later = wait_for(
        "the Conflict condition on the later monitor",
        lambda: (c := conflict(rig, "canary")).get("status") == "True" and c,
        timeout=60,
    )
    assert later["reason"] == "WorkloadConflict" and "ModelMonitor fraud is older" in later["message"]
    assert conflict(rig, "fraud")["status"] == "False"
    [warning] = wait_for(
        "the WorkloadConflict Event",
        lambda: [e for e in rig.events("WorkloadConflict") if e["involvedObject"]["name"] == "canary"],
        timeout=20,
    )
    assert warning["type"] == "Warning" and "ModelMonitor fraud" in warning["message"]

    rig.broken()
    wait_for("the older monitor's step", lambda: replicas(rig) == 2, timeout=90)
    skipped = wait_for(
        "the later monitor's Skipped decision",
        lambda: [r for r in rig.records("scaleUp", "canary") if r["result"] == "Skipped"],
        timeout=30,
    )
    assert "conflict: ModelMonitor fraud is older and also changes Deployment/fraud" in skipped[0]["reason"]
    time.sleep(5)  # five cycles of the later monitor firing with a 0 s cooldown
    assert replicas(rig) == 2, "stepped by the older monitor only"
    steps = ledger(rig)
    assert "fraud/scaleUp" in steps and "canary/scaleUp" not in steps and steps["last"]["by"] == "fraud/scaleUp"
    assert not [r for r in rig.records("scaleUp", "canary") if r["result"] in ("Succeeded", "Pending")]
    assert [e for e in rig.events("ActionSkipped") if e["involvedObject"]["name"] == "canary"]

    rig.cluster.kubectl("delete", "modelmonitor", "fraud", "-n", rig.namespace)
    wait_for("the later monitor's step", lambda: replicas(rig) == 3, timeout=60)
    assert ledger(rig)["last"]["by"] == "canary/scaleUp"
    assert conflict(rig, "canary")["status"] == "False"
    resolved = [e for e in rig.events("WorkloadConflictResolved") if e["involvedObject"]["name"] == "canary"]
    assert resolved and resolved[0]["type"] == "Normal"
