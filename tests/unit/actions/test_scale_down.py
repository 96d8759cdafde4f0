"""Scale actions coming back down (``scaleDown``): after the policies naming the action have stayed clear for the
stabilization window, one step per cooldown back toward where the action started, never below minReplicas; the
HPA bounds it raised given back; missing data never counts as clear; the rails and the restart protocol of the
steps up apply to the steps down."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes import FakeCluster, Scenario, deployment, monitor_spec

from modelmonitor.actions import APPROVE_ANNOTATION
from modelmonitor.actions.scale import LEDGER_ANNOTATION
from modelmonitor.adapters.kubernetes import DEPLOYMENT, HPA
from modelmonitor.api import SpecError, parse_spec

BAD, GOOD = 0.5, 0.95


def scaling(replicas: int = 2, scale_down: dict[str, Any] | None = None, **fields: Any) -> Scenario:
    cluster = FakeCluster()
    cluster.put(DEPLOYMENT, deployment(replicas=replicas))
    action = {
        "type": "scale",
        "step": 1,
        "maxReplicas": 4,
        "cooldown": "30s",
        "scaleDown": {"stabilizationWindow": "60s"} if scale_down is None else scale_down,
        **fields,
    }
    return Scenario(monitor_spec({"scaleUp": action}), cluster)


def replicas(s: Scenario) -> int:
    return int(s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["replicas"])


def scale_up_twice(s: Scenario) -> None:
    """2 -> 3 -> 4 replicas, then the policy clears (10 s after the last step)."""
    s.cycle(BAD)
    s.cycle(BAD, after=30)
    assert replicas(s) == 4
    s.cycle(GOOD)


def test_after_the_window_it_steps_back_one_per_cooldown_to_where_it_started() -> None:
    s = scaling()
    scale_up_twice(s)
    timeline = []
    for _ in range(12):
        s.cycle(GOOD)
        timeline.append(replicas(s))
    # Clear since t=50; the window of 60 s ends at t=110 (the 6th cycle); the next step waits for the 30 s
    # cooldown (t=140, the 9th); then it is back at 2, where it started, and stays.
    assert timeline == [4, 4, 4, 4, 4, 3, 3, 3, 2, 2, 2, 2], timeline
    assert s.results("scaleUp")[-3:] == [("down", "Succeeded"), ("down#2", "Skipped"), ("down#2", "Succeeded")]
    first_down = next(r for r in s.records("scaleUp") if r["key"].endswith("/down"))
    assert first_down["reason"].startswith("scale Deployment/fraud from 4 to 3 replicas: giving back what action")
    assert "it started from 2" in first_down["reason"]
    assert first_down["policy"] == "accuracy-drop" and first_down["type"] == "scale"
    assert s.status["phase"] == "Healthy"
    ledger = json.loads(s.cluster.obj(DEPLOYMENT, "fraud")["metadata"]["annotations"][LEDGER_ANNOTATION])
    assert "origin" not in ledger["fraud/scaleUp"], "nothing is owed any more"


def test_without_scale_down_nothing_comes_back() -> None:
    cluster = FakeCluster()
    cluster.put(DEPLOYMENT, deployment(replicas=2))
    s = Scenario(monitor_spec({"scaleUp": {"type": "scale", "step": 1, "maxReplicas": 4, "cooldown": "30s"}}), cluster)
    scale_up_twice(s)
    for _ in range(30):
        s.cycle(GOOD, after=60)
    assert replicas(s) == 4


def test_enabled_false_gives_nothing_back() -> None:
    s = scaling(scale_down={"enabled": False, "stabilizationWindow": "0s"})
    scale_up_twice(s)
    for _ in range(10):
        s.cycle(GOOD, after=60)
    assert replicas(s) == 4


def test_never_below_the_actions_min_replicas() -> None:
    s = scaling(replicas=1, minReplicas=2, scale_down={"stabilizationWindow": "0s", "step": 5})
    s.cycle(BAD)
    assert replicas(s) == 2  # 1 -> 2
    s.cycle(BAD, after=30)
    assert replicas(s) == 3
    for _ in range(6):
        s.cycle(GOOD, after=30)
    assert replicas(s) == 2, "the action started from 1, but its minReplicas is 2"


def test_missing_data_is_not_clear_and_restarts_the_window() -> None:
    s = scaling()
    scale_up_twice(s)  # clear since t=50
    s.cycle(GOOD, after=40)  # t=90
    s.cycle(None)  # t=100: NoData
    s.cycle(GOOD)  # t=110: the window (60 s) starts again here
    s.cycle(GOOD, after=50)  # t=160: only 50 s clear since the data came back
    assert replicas(s) == 4
    s.cycle(GOOD, after=10)  # t=170
    assert replicas(s) == 3


def test_no_step_down_while_the_policy_cannot_be_measured() -> None:
    s = scaling()
    scale_up_twice(s)
    for _ in range(20):
        s.cycle(None, after=30)
    assert replicas(s) == 4, "NoData never counts as clear"


def test_missing_data_turned_into_ok_by_no_data_ok_is_not_clear_either() -> None:
    s = scaling()
    s.raw["policies"][0]["noData"] = "ok"
    scale_up_twice(s)
    for _ in range(20):
        s.cycle(None, after=30)
    assert s.status["policies"][0]["state"] == "Inactive"
    assert replicas(s) == 4


def test_a_restarted_operator_keeps_the_restarted_window() -> None:
    s = scaling()
    scale_up_twice(s)
    s.cycle(None, after=100)  # t=150, long after the window would have ended
    s.remediator = type(s.remediator)(s.cluster, s.sender)  # a new process: nothing in memory
    s.cycle(GOOD)  # t=160: clear again from here
    s.cycle(GOOD, after=50)
    assert replicas(s) == 4
    s.cycle(GOOD, after=10)
    assert replicas(s) == 3


def test_a_new_breach_during_the_give_back_scales_up_again_and_the_origin_is_kept() -> None:
    s = scaling(scale_down={"stabilizationWindow": "30s"})
    scale_up_twice(s)  # t=50 clear
    s.cycle(GOOD, after=30)  # t=80: 4 -> 3
    assert replicas(s) == 3
    s.cycle(BAD, after=30)  # t=110: a new episode, 3 -> 4
    assert replicas(s) == 4
    for _ in range(8):
        s.cycle(GOOD, after=30)
    assert replicas(s) == 2, "back to where the first episode started"


def test_someone_elses_change_is_not_undone() -> None:
    s = scaling()
    scale_up_twice(s)
    s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["replicas"] = 7  # a person scales by hand
    for _ in range(10):
        s.cycle(GOOD, after=30)
    assert replicas(s) == 7
    [skipped] = [r for r in s.records("scaleUp") if r["key"].endswith("/down")]
    assert skipped["result"] == "Skipped"
    assert "has 7 replicas now, but action scaleUp last set 4 replicas" in skipped["reason"]


def test_with_an_hpa_the_raised_bounds_are_given_back() -> None:
    s = scaling(scale_down={"stabilizationWindow": "60s", "step": 1})
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

    def bounds() -> tuple[int, int]:
        spec = s.cluster.obj(HPA, "fraud-hpa")["spec"]
        return spec["minReplicas"], spec["maxReplicas"]

    s.cycle(BAD)
    s.cycle(BAD, after=30)
    assert bounds() == (4, 4), "up: (2, 3) -> (3, 3) -> (4, 4)"
    s.cycle(GOOD)
    seen = []
    for _ in range(8):
        s.cycle(GOOD, after=30)
        seen.append(bounds())
    assert seen[-1] == (2, 3), seen
    assert (3, 3) in seen, "one replica of the floor per step, the ceiling as far as it was raised"
    assert replicas(s) == 2, "the replicas stay the HPA's to set"
    reasons = [r["reason"] for r in s.records("scaleUp") if "/down" in r["key"] and r["result"] == "Succeeded"]
    assert reasons[0].startswith("set HorizontalPodAutoscaler fraud-hpa minReplicas 4 -> 3, maxReplicas 4 -> 3")


def test_dry_run_says_what_would_come_back_and_changes_nothing() -> None:
    s = scaling(scale_down={"stabilizationWindow": "0s"})
    scale_up_twice(s)
    s.raw["dryRun"] = True
    s.cycle(GOOD, after=30)
    s.cycle(GOOD, after=30)
    assert replicas(s) == 4
    dry = [r for r in s.records("scaleUp") if r["result"] == "DryRun"]
    assert len(dry) == 1 and dry[0]["reason"].startswith("dry run: would scale Deployment/fraud from 4 to 3")


def test_steps_down_need_their_own_approval() -> None:
    s = scaling(requireApproval=True, scale_down={"stabilizationWindow": "0s"})
    s.cycle(BAD)
    [up] = s.records("scaleUp")
    s.annotations[APPROVE_ANNOTATION] = up["key"]
    s.cycle(BAD)
    assert replicas(s) == 3
    s.cycle(GOOD, after=30)
    s.cycle(GOOD, after=30)
    assert replicas(s) == 3, "approving the steps up does not approve the steps down"
    pending = next(r for r in s.records("scaleUp") if r["key"].endswith("/down"))
    assert pending["result"] == "Pending" and pending["reason"].startswith("awaiting approval: would scale")
    s.cycle(GOOD, after=30)
    assert s.results("scaleUp")[-1] == ("down", "Pending"), "still waiting, not skipped, while the policy is clear"
    s.annotations[APPROVE_ANNOTATION] = pending["key"]
    s.cycle(GOOD, after=30)
    assert replicas(s) == 2
    assert s.results("scaleUp")[-1] == ("down", "Succeeded")


def test_the_budget_counts_steps_down_with_steps_up() -> None:
    s = scaling(cooldown="0s", budget={"max": 2, "per": "1h"}, scale_down={"stabilizationWindow": "0s"})
    scale_up_twice(s)
    s.cycle(GOOD, after=30)
    assert replicas(s) == 4
    assert s.results("scaleUp")[-1][1] == "Skipped" and "budget" in s.records("scaleUp")[-1]["reason"]


def test_an_operator_stopped_after_a_step_down_confirms_it_instead_of_taking_another() -> None:
    s = scaling(scale_down={"stabilizationWindow": "0s"})
    scale_up_twice(s)
    original_act = s.remediator.scale.act

    def act_then_die(*args: Any) -> Any:
        original_act(*args)
        raise SystemExit("operator killed")

    s.remediator.scale.act = act_then_die  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        s.cycle(GOOD, after=30)
    assert replicas(s) == 3 and s.results("scaleUp")[-1] == ("down", "Pending")
    s.remediator = type(s.remediator)(s.cluster, s.sender)
    s.cycle(GOOD, after=5)
    assert replicas(s) == 3
    assert s.results("scaleUp")[-1] == ("down", "Succeeded")
    assert "confirmed after the operator restarted" in s.records("scaleUp")[-1]["reason"]


def test_a_step_down_interrupted_before_acting_is_settled_when_the_policy_fires_again() -> None:
    s = scaling(scale_down={"stabilizationWindow": "0s"})
    scale_up_twice(s)
    s.remediator.scale.act = lambda *args: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        s.cycle(GOOD, after=30)
    s.remediator = type(s.remediator)(s.cluster, s.sender)
    s.cycle(BAD, after=30)
    down = [r for r in s.records("scaleUp") if r["key"].endswith("/down")]
    assert [r["result"] for r in down] == ["Skipped"]
    assert "fired again before the step was taken" in down[0]["reason"]
    assert s.status["phase"] != "Acting"


@pytest.mark.parametrize(("step", "percent"), [(-1, None), (None, -50)])
def test_scale_down_is_refused_on_an_action_that_scales_down(step: int | None, percent: int | None) -> None:
    action: dict[str, Any] = {"type": "scale", "maxReplicas": 4, "scaleDown": {}}
    action.update({"step": step} if step is not None else {"percent": percent})
    with pytest.raises(SpecError, match="scaleDown"):
        parse_spec(monitor_spec({"shrink": action}))
