"""Rails on the real sandbox: a dry run says what it would have done (status and an Event) and changes nothing;
an action that requires approval waits, Pending, until a person annotates the ModelMonitor with its key."""

from __future__ import annotations

import time

import pytest
from actions_rig import Rig, crd_fixture, deployment, monitor, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from support import wait_for

pytestmark = pytest.mark.cluster

SCALE = {"type": "scale", "step": 1, "maxReplicas": 3, "cooldown": "1h"}


def replicas(rig: Rig) -> int:
    return int(rig.get("deployment", "fraud")["spec"]["replicas"])


def test_dry_run_records_and_announces_what_it_would_do(rig: Rig) -> None:
    rig.healthy()
    rig.apply(deployment(replicas=1))
    rig.operator.start()
    rig.apply(monitor({"scaleUp": {**SCALE, "dryRun": True}}))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)

    rig.broken()
    record = wait_for("the dry-run record", lambda: next(iter(rig.records("scaleUp")), None), timeout=60)
    assert record["result"] == "DryRun"
    assert record["reason"] == "dry run: would scale Deployment/fraud from 1 to 2 replicas"
    event = wait_for("the Event", lambda: rig.events("ActionDryRun"), timeout=20)[0]
    assert "would scale Deployment/fraud from 1 to 2" in event["message"]
    time.sleep(3)
    assert replicas(rig) == 1
    # One Event counted once: a repeated Event would be the same object with a higher count.
    said = [e.get("count", 1) for e in rig.events("ActionDryRun")]
    assert len(rig.records("scaleUp")) == 1 and said == [1], "said once, not every cycle"


def test_an_action_waits_for_approval_by_annotation(rig: Rig) -> None:
    rig.healthy()
    rig.apply(deployment(replicas=1))
    rig.operator.start()
    rig.apply(monitor({"scaleUp": {**SCALE, "requireApproval": True}}))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)

    rig.broken()
    pending = wait_for("the pending approval", lambda: next(iter(rig.records("scaleUp")), None), timeout=60)
    assert pending["result"] == "Pending" and pending["reason"].startswith("awaiting approval")
    assert rig.status()["phase"] == "Acting"
    time.sleep(3)
    assert replicas(rig) == 1, "nothing happens without approval"

    # The status says how to approve; a person does exactly that.
    rig.cluster.kubectl(
        "annotate",
        "modelmonitor",
        "fraud",
        "-n",
        rig.namespace,
        "--overwrite",
        f"modelmonitor.dev/approve={pending['key']}",
    )
    wait_for("the approved step", lambda: replicas(rig) == 2, timeout=30)
    record = rig.final_record("scaleUp")
    assert record["result"] == "Succeeded" and record["key"] == pending["key"]
