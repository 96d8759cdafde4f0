"""Rollback on the real sandbox: the revision that stayed OK becomes the last-known-good; a bad release that
breaches is rolled back to it (the earlier template and ReplicaSet come back, renumbered), with the cause on the
Deployment; and a revision rolled back from is not rolled back from again."""

from __future__ import annotations

import json

import pytest
from actions_rig import Rig, crd_fixture, deployment, monitor, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from support import wait_for

pytestmark = pytest.mark.cluster

ROLLBACK = {"rollback": {"type": "rollback", "settlePeriod": "8s", "cooldown": "0s"}}


def live_hashes(rig: Rig) -> set[str]:
    return {p["metadata"]["labels"]["pod-template-hash"] for p in rig.running_pods()}


def images(rig: Rig) -> set[str]:
    return {c["image"] for p in rig.running_pods() for c in p["spec"]["containers"]}


def release(rig: Rig, image: str) -> None:
    rig.cluster.kubectl("set", "image", "-n", rig.namespace, "deployment/fraud", f"model={image}")
    rig.cluster.kubectl("rollout", "status", "-n", rig.namespace, "deployment/fraud", "--timeout=60s")


def settled_v1(rig: Rig) -> str:
    """v1 running, healthy, and recorded as last-known-good; its template hash."""
    rig.healthy()
    rig.apply(deployment(replicas=2, image="model:v1"))
    wait_for("2 Running pods", lambda: len(rig.running_pods()) == 2 and len(live_hashes(rig)) == 1)
    good_hash = live_hashes(rig).pop()
    rig.operator.start()
    rig.apply(monitor(ROLLBACK))
    lkg = wait_for("the last-known-good", lambda: rig.status().get("lastKnownGood"), timeout=90)
    assert lkg["templateHash"] == good_hash and lkg["revision"] == "1"
    return good_hash


def test_a_bad_release_is_rolled_back_to_the_last_known_good_template(rig: Rig) -> None:
    good_hash = settled_v1(rig)
    rig.broken()  # v2 is the release that breaks the model
    release(rig, "model:v2")
    bad_hash = wait_for("v2 pods", lambda: (h := live_hashes(rig)) != {good_hash} and len(h) == 1 and h.pop())
    assert rig.status()["lastKnownGood"]["templateHash"] == good_hash, "v2 never proved itself"

    record = rig.final_record("rollback")
    assert record["result"] == "Succeeded", record
    assert good_hash in record["reason"] and "rollout finished" in record["reason"]
    wait_for("the v1 pods back", lambda: live_hashes(rig) == {good_hash} and len(rig.running_pods()) == 2, timeout=60)
    assert images(rig) == {"model:v1"}

    restored = next(
        rs
        for rs in rig.cluster.kubectl_json("get", "replicasets", "-n", rig.namespace, "-l", "app=fraud")["items"]
        if rs["metadata"]["labels"]["pod-template-hash"] == good_hash
    )
    assert restored["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3", "renumbered, same RS"
    annotations = rig.get("deployment", "fraud")["metadata"]["annotations"]
    assert "accuracy-drop" in annotations["modelmonitor.dev/rollback-cause"]
    ledger = json.loads(annotations["modelmonitor.dev/rollback"])
    assert (ledger["from"], ledger["to"]) == (bad_hash, good_hash)
    history = rig.cluster.kubectl("rollout", "history", "-n", rig.namespace, "deployment/fraud").stdout
    assert "modelmonitor rollback to revision 1" in history
    assert rig.events("ActionSucceeded"), "an Event says so"

    rig.healthy()
    wait_for(
        "the last-known-good renumbered, kept by its hash",
        lambda: rig.status().get("lastKnownGood", {}).get("revision") == "3",
        timeout=60,
    )
    assert rig.status()["lastKnownGood"]["templateHash"] == good_hash


def test_the_same_bad_revision_is_not_rolled_back_from_twice(rig: Rig) -> None:
    good_hash = settled_v1(rig)
    rig.broken()
    release(rig, "model:v2")
    assert rig.final_record("rollback")["result"] == "Succeeded"
    wait_for("v1 back", lambda: live_hashes(rig) == {good_hash}, timeout=60)
    rig.healthy()
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)

    rig.broken()
    release(rig, "model:v2")  # someone ships the same template again
    skipped = wait_for(
        "the second rollback refused",
        lambda: next(
            (r for r in rig.records("rollback") if r["result"] == "Skipped" and "at most one" in r["reason"]), None
        ),
        timeout=60,
    )
    assert "per bad revision" in skipped["reason"]
    assert images(rig) <= {"model:v2"}, "no flip-flop"
