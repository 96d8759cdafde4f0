"""Killing the operator between deciding and finishing yields exactly one scale step, one Job, one rollback.

The operator runs with the test hook MODELMONITOR_TEST_CRASH_AT=<point>:<type>, which makes the process exit at
once (no cleanup) either just after the Pending record is written (``before-act``) or just after the cluster
was changed (``after-act``). A new operator process, without the hook, must finish the action exactly once."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from actions_rig import Rig, crd_fixture, deployment, monitor, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from support import wait_for

pytestmark = pytest.mark.cluster

POINTS = ["before-act", "after-act"]


@pytest.mark.parametrize("point", POINTS)
def test_one_scale_step(rig: Rig, point: str) -> None:
    rig.healthy()
    rig.apply(deployment(replicas=1))
    rig.operator.start(crash_at=f"{point}:scale")
    rig.apply(monitor({"scaleUp": {"type": "scale", "step": 1, "maxReplicas": 5, "cooldown": "1h"}}))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)

    rig.broken()
    rig.operator.wait_for_crash()
    replicas = int(rig.get("deployment", "fraud")["spec"]["replicas"])
    assert replicas == (1 if point == "before-act" else 2), "the crash came where the hook says"
    assert [r["result"] for r in rig.records("scaleUp")] == ["Pending"]
    rig.operator.start()

    record = rig.final_record("scaleUp")
    assert record["result"] == "Succeeded", record
    time.sleep(4)  # a few more cycles of the still-firing policy
    assert int(rig.get("deployment", "fraud")["spec"]["replicas"]) == 2, "exactly one step"
    wait_for("2 Running pods", lambda: len(rig.running_pods()) == 2, timeout=60)
    records = rig.records("scaleUp")
    assert [r["result"] for r in records if r["result"] != "Skipped"] == ["Succeeded"]
    assert all("cooldown 1h" in r["reason"] for r in records if r["result"] == "Skipped"), "the next step waits"
    if point == "after-act":
        assert "confirmed after the operator restarted" in record["reason"]


@pytest.mark.parametrize("point", POINTS)
def test_one_retraining_job(rig: Rig, point: str) -> None:
    rig.cluster.kubectl("create", "serviceaccount", "trainer", "-n", rig.namespace)
    rig.healthy()
    rig.apply(deployment(replicas=1))
    rig.operator.start(crash_at=f"{point}:retrain")
    template = {
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "train", "image": "trainer:v1"}]}},
        }
    }
    action = {"type": "retrain", "serviceAccountName": "trainer", "jobTemplate": template}
    rig.apply(monitor({"retrain": action}))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)

    def jobs() -> list[dict[str, Any]]:
        return list(rig.cluster.kubectl_json("get", "jobs", "-n", rig.namespace)["items"])

    rig.broken()
    rig.operator.wait_for_crash()
    assert len(jobs()) == (0 if point == "before-act" else 1)
    rig.operator.start()

    record = rig.final_record("retrain")
    assert record["result"] == "Succeeded", record
    time.sleep(4)
    assert len(jobs()) == 1, "exactly one Job"
    assert [r["result"] for r in rig.records("retrain")] == ["Succeeded"]


@pytest.mark.parametrize("point", POINTS)
def test_one_rollback(rig: Rig, point: str) -> None:
    rig.healthy()
    rig.apply(deployment(replicas=1, image="model:v1"))
    rig.operator.start(crash_at=f"{point}:rollback")
    rig.apply(monitor({"rollback": {"type": "rollback", "settlePeriod": "5s", "cooldown": "0s"}}))
    good = wait_for("the last-known-good", lambda: rig.status().get("lastKnownGood"), timeout=90)["templateHash"]
    # The bad revision rolls out first, then its metrics go bad (the other order can fire while v1 still runs).
    rig.cluster.kubectl("set", "image", "-n", rig.namespace, "deployment/fraud", "model=model:v2")
    rig.broken()

    rig.operator.wait_for_crash()
    image = rig.get("deployment", "fraud")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == ("model:v2" if point == "before-act" else "model:v1")
    assert [r["result"] for r in rig.records("rollback")] == ["Pending"]
    rig.operator.start()

    record = rig.final_record("rollback")
    assert record["result"] == "Succeeded", record
    time.sleep(4)
    history = rig.cluster.kubectl("rollout", "history", "-n", rig.namespace, "deployment/fraud").stdout
    revisions = [line.split()[0] for line in history.splitlines() if line[:1].isdigit()]
    assert revisions == ["2", "3"], history  # v2, then v1 restored as revision 3: no fourth
    ledger = json.loads(rig.get("deployment", "fraud")["metadata"]["annotations"]["modelmonitor.dev/rollback"])
    assert ledger["to"] == good and len(ledger["rolledBackFrom"]) == 1
    assert [r["result"] for r in rig.records("rollback")] == ["Succeeded"]
