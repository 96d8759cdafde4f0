"""The scale action: step arithmetic, one bounded step per cooldown, the HPA's bounds instead of its replicas,
stabilization, and exactly one step across an operator that stops mid-action."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes import FakeCluster, Scenario, deployment, monitor_spec

from modelmonitor.actions.scale import LEDGER_ANNOTATION, hpa_bounds, next_replicas, step_key
from modelmonitor.adapters.kubernetes import DEPLOYMENT, HPA, Kind
from modelmonitor.api import ScaleAction

BAD, GOOD = 0.5, 0.95


def scale_action(**fields: Any) -> ScaleAction:
    return ScaleAction.model_validate({"type": "scale", "maxReplicas": 10, **fields})


@pytest.mark.parametrize(
    ("current", "fields", "expected"),
    [
        (2, {"step": 1}, 3),
        (2, {"step": 5, "maxReplicas": 4}, 4),  # bounded above
        (10, {"step": 1}, 10),  # at the bound: no change
        (3, {"step": -2, "minReplicas": 2}, 2),  # bounded below
        (4, {"percent": 50}, 6),
        (3, {"percent": 10}, 4),  # 0.3 rounds away from zero to one replica
        (0, {"percent": 100}, 1),  # a percentage of nothing still moves by one
        (5, {"percent": -50}, 2),  # 2.5 rounds away from zero: three fewer
    ],
)
def test_one_step_is_bounded_and_rounded_away_from_zero(current: int, fields: dict[str, Any], expected: int) -> None:
    assert next_replicas(current, scale_action(**fields)) == expected


@pytest.mark.parametrize(
    ("bounds", "fields", "expected"),
    [
        ((2, 5), {"step": 1}, (3, 5)),  # up raises the floor only
        ((5, 5), {"step": 2}, (7, 7)),  # the ceiling follows the floor
        ((2, 5), {"step": -1}, (2, 4)),  # down lowers the ceiling only
        ((4, 4), {"step": -2, "minReplicas": 1}, (2, 2)),  # the floor follows the ceiling
        ((8, 12), {"step": 1, "maxReplicas": 6}, (8, 12)),  # never lowers a floor above the action's max
    ],
)
def test_hpa_bounds_move_one_side_and_stay_consistent(
    bounds: tuple[int, int], fields: dict[str, Any], expected: tuple[int, int]
) -> None:
    assert hpa_bounds(*bounds, scale_action(**fields)) == expected


def test_step_keys_extend_the_episode_key() -> None:
    assert step_key("ns/m/p/t/scaleUp", 1) == "ns/m/p/t/scaleUp"
    assert step_key("ns/m/p/t/scaleUp", 3) == "ns/m/p/t/scaleUp#3"


def scale_up(**fields: Any) -> Scenario:
    cluster = FakeCluster()
    cluster.put(DEPLOYMENT, deployment(replicas=2))
    action = {"type": "scale", "step": 1, "maxReplicas": 4, "cooldown": "30s", **fields}
    return Scenario(monitor_spec({"scaleUp": action}), cluster)


def replicas(s: Scenario) -> int:
    return int(s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["replicas"])


def test_a_firing_policy_scales_one_step_per_cooldown_up_to_the_maximum() -> None:
    s = scale_up()
    s.cycle(GOOD)
    s.cycle(BAD)
    assert replicas(s) == 3
    s.cycle(BAD, after=10)  # within the 30 s cooldown
    assert replicas(s) == 3
    s.cycle(BAD, after=25)
    assert replicas(s) == 4
    s.cycle(BAD, after=40)  # at maxReplicas 4
    assert replicas(s) == 4
    assert s.results("scaleUp") == [
        ("scaleUp", "Succeeded"),
        ("scaleUp#2", "Skipped"),  # the second step waits for the cooldown, said once
        ("scaleUp#2", "Succeeded"),
        ("scaleUp#3", "Skipped"),
    ]
    assert "already has 4 replicas" in s.records("scaleUp")[-1]["reason"]
    assert "next allowed at" in s.records("scaleUp")[1]["reason"]
    assert s.records("scaleUp")[0]["reason"] == "scale Deployment/fraud from 2 to 3 replicas"


def test_the_step_and_its_ledger_are_one_conditional_write_recorded_pending_first() -> None:
    s = scale_up()
    s.cycle(BAD)
    writes = [c for c in s.cluster.calls if c[0] != "create"]
    assert [c[0] for c in writes] == ["checkpoint", "patch"], writes
    ledger = json.loads(s.cluster.obj(DEPLOYMENT, "fraud")["metadata"]["annotations"][LEDGER_ANNOTATION])
    entry = ledger["fraud/scaleUp"]
    assert entry["step"] == 1 and entry["from"] == 2 and entry["to"] == 3
    assert entry["runs"][0]["key"] == s.records("scaleUp")[0]["key"]


def test_the_ledger_keeps_the_cooldown_when_the_status_history_has_forgotten_the_step() -> None:
    s = scale_up(cooldown="5m")
    s.cycle(BAD)
    assert replicas(s) == 3
    s.status["actions"] = []  # e.g. pushed out of the 20-record history by other actions
    s.cycle(BAD, after=60)
    assert replicas(s) == 3, "a forgotten record must not allow a second step within the cooldown"


def test_a_new_episode_still_respects_the_cooldown_of_the_previous_one() -> None:
    s = scale_up(cooldown="2m")
    s.cycle(BAD)
    s.cycle(GOOD)
    s.cycle(BAD, after=20)
    assert replicas(s) == 3
    s.cycle(BAD, after=120)
    assert replicas(s) == 4


def test_stabilization_waits_for_the_recommendation_to_stand() -> None:
    s = scale_up(stabilizationWindow="30s")
    s.cycle(BAD)
    s.cycle(BAD, after=20)
    assert replicas(s) == 2, "fired 20 s ago, the window is 30 s"
    s.cycle(BAD, after=15)
    assert replicas(s) == 3


def test_stabilization_does_not_reverse_a_step_taken_within_the_window() -> None:
    cluster = FakeCluster()
    cluster.put(DEPLOYMENT, deployment(replicas=2))
    spec = monitor_spec(
        {
            "scaleUp": {"type": "scale", "step": 1, "maxReplicas": 3, "cooldown": "0s"},
            "scaleDown": {
                "type": "scale",
                "step": -1,
                "maxReplicas": 3,
                "cooldown": "0s",
                "stabilizationWindow": "60s",
            },
        },
        policy_actions=["scaleUp"],
    )
    # A second policy that fires on the same values and wants the opposite (contradictory on purpose).
    spec["policies"].append({**spec["policies"][0], "name": "cost", "actions": ["scaleDown"]})
    spec["policies"][1]["condition"] = {"op": ">", "threshold": 0.3}
    s = Scenario(spec, cluster)
    timeline = []
    for _ in range(14):
        s.cycle(BAD)
        timeline.append(replicas(s))
    # t=10 up; down only at t=70 (cost fired for 60 s and the up step is 60 s old); up again at t=80 (no
    # window on scaleUp); the next down waits 60 s after that up step, to t=140.
    assert timeline == [3, 3, 3, 3, 3, 3, 2, 3, 3, 3, 3, 3, 3, 2], timeline


def test_with_an_hpa_the_bounds_change_and_status_says_so() -> None:
    s = scale_up()
    s.cluster.put(
        HPA,
        {
            "metadata": {"name": "fraud-hpa"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fraud"},
                "minReplicas": 2,
                "maxReplicas": 3,
            },
        },
    )
    s.cycle(BAD)
    hpa = s.cluster.obj(HPA, "fraud-hpa")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 3)
    assert replicas(s) == 2, "the replicas are the HPA's to set"
    reason = s.records("scaleUp")[0]["reason"]
    assert "HorizontalPodAutoscaler fraud-hpa" in reason and "instead of the replicas" in reason
    assert LEDGER_ANNOTATION in hpa["metadata"]["annotations"]


def test_an_hpa_for_another_workload_is_ignored() -> None:
    s = scale_up()
    s.cluster.put(
        HPA,
        {
            "metadata": {"name": "other"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "other"}, "minReplicas": 1, "maxReplicas": 2},
        },
    )
    s.cycle(BAD)
    assert replicas(s) == 3


def test_any_kind_with_a_scale_subresource() -> None:
    cluster = FakeCluster()
    kind = Kind("serving.example.com/v1", "InferenceService")
    cluster.put(kind, {"metadata": {"name": "fraud"}, "spec": {"replicas": 1}})
    spec = monitor_spec({"scaleUp": {"type": "scale", "percent": 100, "maxReplicas": 8}})
    spec["target"] = {"apiVersion": "serving.example.com/v1", "kind": "InferenceService", "name": "fraud"}
    s = Scenario(spec, cluster)
    s.cycle(BAD)
    assert cluster.obj(kind, "fraud")["spec"]["replicas"] == 2
    assert [c[0] for c in cluster.calls] == ["checkpoint", "patch", "patch/scale"]


def test_a_conflicting_write_is_retried_next_cycle_without_a_second_step() -> None:
    from modelmonitor.adapters.kubernetes import KubernetesError

    s = scale_up()
    s.cluster.fail_next[("patch", "Deployment")] = KubernetesError("patching", 409, "modified")
    s.cycle(BAD)
    assert replicas(s) == 2
    assert s.results("scaleUp") == [("scaleUp", "Pending")]
    s.cycle(BAD, after=10)
    assert replicas(s) == 3
    assert s.results("scaleUp") == [("scaleUp", "Succeeded")]


def test_an_operator_stopped_after_scaling_confirms_the_step_instead_of_taking_another() -> None:
    s = scale_up(cooldown="0s")
    s.cycle(GOOD)
    # Stop right after the write: the step is in the cluster, status still says Pending.
    original_act = s.remediator.scale.act

    def act_then_die(*args: Any) -> Any:
        original_act(*args)
        raise SystemExit("operator killed")

    s.remediator.scale.act = act_then_die  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        s.cycle(BAD)
    s.status = {**s.status}  # what the checkpoint wrote is what a restarted operator reads
    assert [r["result"] for r in s.status["actions"]] == ["Pending"]
    s.remediator = type(s.remediator)(s.cluster, s.sender)  # a new process
    s.cycle(BAD, after=10)
    assert replicas(s) == 3
    assert s.results("scaleUp") == [("scaleUp", "Succeeded")]
    assert "confirmed after the operator restarted" in s.records("scaleUp")[0]["reason"]


def test_an_operator_stopped_before_scaling_takes_the_step_once_on_restart() -> None:
    s = scale_up(cooldown="1h")
    s.cycle(GOOD)
    s.remediator.scale.act = lambda *args: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        s.cycle(BAD)
    assert replicas(s) == 2 and s.results("scaleUp") == [("scaleUp", "Pending")]
    s.remediator = type(s.remediator)(s.cluster, s.sender)
    s.cycle(BAD, after=10)
    assert replicas(s) == 3, "the Pending record of this same step must not count as a run for the 1h cooldown"
    s.cycle(BAD, after=10)
    assert replicas(s) == 3
    assert s.results("scaleUp") == [("scaleUp", "Succeeded"), ("scaleUp#2", "Skipped")]  # the 1h cooldown


def test_a_pending_step_whose_episode_ended_is_settled_from_the_ledger() -> None:
    s = scale_up()
    s.remediator.scale.act = lambda *args: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        s.cycle(BAD)
    s.remediator = type(s.remediator)(s.cluster, s.sender)
    s.cycle(GOOD)
    assert replicas(s) == 2
    assert s.results("scaleUp") == [("scaleUp", "Skipped")]
    assert "stopped firing" in s.records("scaleUp")[0]["reason"]
