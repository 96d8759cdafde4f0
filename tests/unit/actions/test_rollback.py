"""Last-known-good tracking and the rollback action: preconditions, the restored template, the cause on the
workload, one rollback per bad revision, the rollout watched to its end, and exactly one rollback across an
operator that stops mid-action."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes import FakeCluster, Scenario, deployment, monitor_spec, roll_out

from modelmonitor.actions.rollback import CAUSE_ANNOTATION, LEDGER_ANNOTATION, all_ok, rollout_done
from modelmonitor.adapters.kubernetes import DEPLOYMENT, KubernetesError

BAD, GOOD = 0.5, 0.95


def rollback_scenario(**fields: Any) -> Scenario:
    cluster = FakeCluster()
    cluster.put(DEPLOYMENT, deployment(image="model:v1"))
    roll_out(cluster)
    action = {"type": "rollback", "settlePeriod": "60s", "cooldown": "0s", **fields}
    return Scenario(monitor_spec({"rollback": action}), cluster)


def deploy_image(s: Scenario, image: str, *, complete: bool = True) -> str:
    """A person ships a new image; the Deployment controller rolls it out."""
    d = s.cluster.obj(DEPLOYMENT, "fraud")
    d["spec"]["template"]["spec"]["containers"][0]["image"] = image
    d["metadata"]["generation"] += 1
    return roll_out(s.cluster, complete=complete)


def image(s: Scenario) -> str:
    return str(s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["template"]["spec"]["containers"][0]["image"])


def settle(s: Scenario, seconds: float = 70) -> None:
    for _ in range(int(seconds // 10)):
        s.cycle(GOOD)


def test_a_revision_becomes_last_known_good_after_the_settle_period_of_ok_policies() -> None:
    s = rollback_scenario()
    s.cycle(GOOD)
    assert "lastKnownGood" not in s.status
    settle(s, 50)
    assert "lastKnownGood" not in s.status, "50 s of OK is less than the 60 s settle period"
    settle(s, 20)
    lkg = s.status["lastKnownGood"]
    assert lkg["revision"] == "1" and lkg["templateHash"]
    assert any(e.reason == "LastKnownGood" for o in s.outcomes for e in o.events)


def test_a_new_revision_must_prove_itself_for_the_settle_period() -> None:
    s = rollback_scenario()
    settle(s, 80)
    first = s.status["lastKnownGood"]["templateHash"]
    new = deploy_image(s, "model:v2")
    settle(s, 40)
    assert s.status["lastKnownGood"]["templateHash"] == first, "v2 is live for 40 s only"
    settle(s, 30)
    assert s.status["lastKnownGood"] == {
        "revision": "2",
        "templateHash": new,
        "since": s.status["lastKnownGood"]["since"],
    }


def test_a_settled_monitor_reads_its_deployment_every_quarter_settle_period_not_every_cycle() -> None:
    s = rollback_scenario()
    settle(s, 80)
    before = s.cluster.reads.get("Deployment", 0)
    settle(s, 120)  # 12 cycles
    reads = s.cluster.reads["Deployment"] - before
    assert 6 <= reads <= 9, reads  # every 15 s (60 s / 4), not every 10 s cycle


def test_an_unfinished_rollout_or_a_breach_is_never_last_known_good() -> None:
    s = rollback_scenario()
    deploy_image(s, "model:v2", complete=False)
    settle(s, 100)
    assert "lastKnownGood" not in s.status
    assert rollout_done(s.cluster.obj(DEPLOYMENT, "fraud"))[0] is False


def test_breach_rolls_back_to_the_last_known_good_template_with_the_cause() -> None:
    s = rollback_scenario()
    settle(s, 80)
    good = s.status["lastKnownGood"]["templateHash"]
    bad = deploy_image(s, "model:v2")
    s.cycle(BAD)
    assert image(s) == "model:v1"
    deploy = s.cluster.obj(DEPLOYMENT, "fraud")
    assert "pod-template-hash" not in deploy["spec"]["template"]["metadata"]["labels"]
    annotations = deploy["metadata"]["annotations"]
    assert "accuracy-drop" in annotations[CAUSE_ANNOTATION] and "value 0.5" in annotations[CAUSE_ANNOTATION]
    assert "modelmonitor rollback" in annotations["kubernetes.io/change-cause"]
    ledger = json.loads(annotations[LEDGER_ANNOTATION])
    assert (ledger["from"], ledger["to"], ledger["rolledBackFrom"]) == (bad, good, [bad])
    assert s.results("rollback") == [("rollback", "Pending")]
    assert (
        "waiting for the rollout" in s.records("rollback")[0]["reason"]
        or "in progress" in s.records("rollback")[0]["reason"]
    )

    roll_out(s.cluster)  # the controller restores the old ReplicaSet, renumbered as revision 3
    s.cycle(BAD)
    assert s.results("rollback") == [("rollback", "Succeeded")]
    assert "now revision 3" in s.records("rollback")[0]["reason"]
    assert [c[0] for c in s.cluster.writes("Deployment")] == ["replace"], "one rollback"


def test_the_renumbered_last_known_good_keeps_its_hash_and_since() -> None:
    s = rollback_scenario()
    settle(s, 80)
    before = dict(s.status["lastKnownGood"])
    deploy_image(s, "model:v2")
    s.cycle(BAD)
    roll_out(s.cluster)
    settle(s, 80)
    after = s.status["lastKnownGood"]
    assert after["templateHash"] == before["templateHash"] and after["since"] == before["since"]
    assert after["revision"] == "3"


def test_preconditions_skip_with_a_reason() -> None:
    s = rollback_scenario()
    s.cycle(BAD)
    assert s.results("rollback") == [("rollback", "Skipped")]
    assert "no last-known-good" in s.records("rollback")[0]["reason"]

    s = rollback_scenario()
    settle(s, 80)
    s.cycle(BAD)  # the live revision is the last-known-good: nothing to return to
    assert "already runs the last-known-good" in s.records("rollback")[0]["reason"]
    assert s.cluster.writes("Deployment") == []

    s = rollback_scenario()
    settle(s, 80)
    deploy_image(s, "model:v2")
    s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["paused"] = True
    s.cycle(BAD)
    assert "paused" in s.records("rollback")[0]["reason"] and image(s) == "model:v2"


def test_a_missing_replicaset_fails_with_the_reason() -> None:
    s = rollback_scenario()
    settle(s, 80)
    deploy_image(s, "model:v2")
    good = s.status["lastKnownGood"]["templateHash"]
    del s.cluster.objects[next(k for k in s.cluster.objects if k[2] == f"fraud-{good}")]
    s.cycle(BAD)
    assert s.results("rollback") == [("rollback", "Failed")]
    assert "no longer exists" in s.records("rollback")[0]["reason"]


def test_at_most_one_automatic_rollback_per_bad_revision() -> None:
    s = rollback_scenario()
    settle(s, 80)
    deploy_image(s, "model:v2")
    s.cycle(BAD)
    roll_out(s.cluster)
    settle(s, 30)
    deploy_image(s, "model:v2")  # someone ships the same bad template again
    s.cycle(BAD)
    assert image(s) == "model:v2", "no flip-flop"
    assert s.results("rollback")[-1] == ("rollback", "Skipped")
    assert "at most one automatic rollback per bad revision" in s.records("rollback")[-1]["reason"]


def test_a_rollout_that_does_not_finish_is_reported_failed() -> None:
    s = rollback_scenario()
    settle(s, 80)
    deploy_image(s, "model:v2")
    s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["progressDeadlineSeconds"] = 30
    s.cycle(BAD)
    roll_out(s.cluster, complete=False)
    s.cycle(BAD)
    assert s.results("rollback") == [("rollback", "Pending")]
    s.cycle(BAD, after=30)
    assert s.results("rollback") == [("rollback", "Failed")]
    assert "did not finish within 30 s" in s.records("rollback")[0]["reason"]


def test_a_concurrent_change_is_not_overwritten() -> None:
    s = rollback_scenario()
    settle(s, 80)
    deploy_image(s, "model:v2")
    s.cluster.fail_next[("replace", "Deployment")] = KubernetesError("replacing", 409, "modified")
    s.cycle(BAD)
    assert image(s) == "model:v2"
    s.cycle(BAD)
    assert image(s) == "model:v1"


def test_a_target_that_is_not_a_deployment_fails_clearly() -> None:
    cluster = FakeCluster()
    spec = monitor_spec({"rollback": {"type": "rollback"}})
    spec["target"] = {"kind": "StatefulSet", "name": "fraud"}
    s = Scenario(spec, cluster)
    s.cycle(BAD)
    assert "rollback needs a Deployment" in s.records("rollback")[0]["reason"]


@pytest.mark.parametrize("stop", ["before", "after"])
def test_an_operator_stopped_mid_rollback_rolls_back_exactly_once(stop: str) -> None:
    s = rollback_scenario()
    settle(s, 80)
    deploy_image(s, "model:v2")
    original = s.remediator.rollback.act

    def die(*args: Any) -> Any:
        if stop == "after":
            original(*args)
        raise SystemExit("killed")

    s.remediator.rollback.act = die  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        s.cycle(BAD)
    s.remediator = type(s.remediator)(s.cluster, s.sender)
    s.cycle(BAD)
    roll_out(s.cluster)
    s.cycle(BAD)
    s.cycle(BAD)
    assert image(s) == "model:v1"
    assert [c[0] for c in s.cluster.writes("Deployment")] == ["replace"]
    assert s.results("rollback") == [("rollback", "Succeeded")]


def test_all_ok_needs_every_policy_inactive_with_an_ok_measurement() -> None:
    s = rollback_scenario()
    s.cycle(GOOD)
    assert all_ok(s._reconciled.evaluation) is not None
    s.cycle(None)  # no data: not known to be OK
    assert all_ok(s._reconciled.evaluation) is None
