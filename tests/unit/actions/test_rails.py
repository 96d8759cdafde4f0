"""The rails every action carries: cooldown and budget (pure), dry run, approval by annotation, paused, and the
Pending record written before any change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fakes import T0, FakeCluster, Scenario, at, deployment, monitor_spec

from modelmonitor.actions import APPROVE_ANNOTATION
from modelmonitor.actions.rails import check, merge_runs, runs_in_history
from modelmonitor.adapters.kubernetes import DEPLOYMENT
from modelmonitor.api import ScaleAction
from modelmonitor.policy import ActionRecord, ActionResult, format_time

BAD, GOOD = 0.5, 0.95


def rails(**fields: Any) -> ScaleAction:
    return ScaleAction.model_validate({"type": "scale", "step": 1, "maxReplicas": 9, **fields})


@pytest.mark.parametrize(
    ("fields", "runs", "now", "blocked_by"),
    [
        ({"cooldown": "5m"}, [0], 299, "cooldown"),
        ({"cooldown": "5m"}, [0], 300, None),
        ({"cooldown": "0s"}, [0, 1, 2], 3, None),
        ({"cooldown": "0s", "budget": {"max": 2, "per": "1h"}}, [0, 600], 1200, "budget"),
        ({"cooldown": "0s", "budget": {"max": 2, "per": "1h"}}, [0, 600], 3601, None),  # the first left the window
        ({"cooldown": "10m", "budget": {"max": 1, "per": "1h"}}, [0], 700, "budget"),
    ],
)
def test_cooldown_and_budget(fields: dict[str, Any], runs: list[int], now: int, blocked_by: str | None) -> None:
    verdict = check(rails(**fields), {f"k{i}": at(t) for i, t in enumerate(runs)}, at(now))
    assert (verdict.reason.split(":")[0].split(" ")[0] if verdict else None) == blocked_by


def test_the_budget_says_when_the_next_run_is_allowed() -> None:
    verdict = check(rails(cooldown="0s", budget={"max": 2, "per": "1h"}), {"a": at(0), "b": at(600)}, at(1200))
    assert verdict is not None and verdict.until == at(3600)
    assert format_time(at(3600)) in verdict.reason


def test_the_run_being_resumed_is_not_its_own_cooldown() -> None:
    assert check(rails(cooldown="1h"), {"this": at(0)}, at(10), exclude="this") is None


def test_runs_come_from_history_and_the_cluster_counted_once() -> None:
    def entry(name: str, key: str, result: ActionResult, reason: str, seconds: int) -> ActionRecord:
        return ActionRecord(name, "scale", "p", at(seconds), result, reason, key)

    history = [
        entry("up", "k1", ActionResult.PENDING, "scale (in progress)", 0),
        entry("up", "k1", ActionResult.SUCCEEDED, "", 5),
        entry("up", "k2", ActionResult.SKIPPED, "cooldown", 6),
        entry("up", "k3", ActionResult.PENDING, "awaiting approval: x", 7),
        entry("page", "k4", ActionResult.SUCCEEDED, "", 8),
        entry("up", "k5#resolved", ActionResult.SUCCEEDED, "", 9),
        entry("up", "k6", ActionResult.DRY_RUN, "dry run: would scale", 10),
    ]
    assert runs_in_history(history, "up") == {"k1": at(0)}
    assert merge_runs({"k1": at(0)}, {"k1": at(1), "k9": at(2)}) == {"k1": at(0), "k9": at(2)}


def scaling(**fields: Any) -> Scenario:
    cluster = FakeCluster()
    cluster.put(DEPLOYMENT, deployment(replicas=2))
    return Scenario(monitor_spec({"scaleUp": {"type": "scale", "step": 1, "maxReplicas": 5, **fields}}), cluster)


def replicas(s: Scenario) -> int:
    return int(s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["replicas"])


def test_dry_run_says_what_would_have_been_done_and_changes_nothing() -> None:
    s = scaling(dryRun=True)
    s.cycle(BAD)
    s.cycle(BAD)
    assert replicas(s) == 2 and s.cluster.writes() == []
    assert s.results("scaleUp") == [("scaleUp", "DryRun")]
    assert s.records("scaleUp")[0]["reason"] == "dry run: would scale Deployment/fraud from 2 to 3 replicas"
    assert len(s.outcomes[0].records) == 1 and s.outcomes[1].records == []


def test_monitor_level_dry_run_applies_to_every_action() -> None:
    cluster = FakeCluster()
    cluster.put(DEPLOYMENT, deployment(replicas=2))
    s = Scenario(monitor_spec({"scaleUp": {"type": "scale", "step": 1, "maxReplicas": 5}}, dryRun=True), cluster)
    s.cycle(BAD)
    assert replicas(s) == 2 and s.results("scaleUp") == [("scaleUp", "DryRun")]


def test_approval_holds_the_action_until_the_annotation_names_its_key() -> None:
    s = scaling(requireApproval=True)
    s.cycle(BAD)
    s.cycle(BAD)
    assert replicas(s) == 2
    [pending] = s.records("scaleUp")
    assert pending["result"] == "Pending" and pending["reason"].startswith("awaiting approval")
    assert f"{APPROVE_ANNOTATION}='{pending['key']}'" in pending["reason"], "the exact command to run"
    assert s.status["phase"] == "Acting"
    s.annotations[APPROVE_ANNOTATION] = "someone/else/key"
    s.cycle(BAD)
    assert replicas(s) == 2, "another key approves nothing"
    s.annotations[APPROVE_ANNOTATION] = f"other, {pending['key']}"
    s.cycle(BAD)
    assert replicas(s) == 3
    assert s.results("scaleUp") == [("scaleUp", "Succeeded")]


def test_an_unapproved_action_is_skipped_when_its_episode_ends() -> None:
    s = scaling(requireApproval=True)
    s.cycle(BAD)
    s.cycle(GOOD)
    assert s.results("scaleUp") == [("scaleUp", "Skipped")]
    assert "not approved" in s.records("scaleUp")[0]["reason"]
    assert s.status["phase"] == "Healthy"


def test_an_approval_survives_a_prometheus_outage_in_the_episode() -> None:
    s = scaling(requireApproval=True)
    s.cycle(BAD)
    s.cycle(None)  # NoData holds the episode
    assert s.results("scaleUp") == [("scaleUp", "Pending")]


def test_paused_stops_everything() -> None:
    cluster = FakeCluster()
    cluster.put(DEPLOYMENT, deployment(replicas=2))
    spec = monitor_spec({"scaleUp": {"type": "scale", "step": 1, "maxReplicas": 5}})
    s = Scenario(spec, cluster)
    s.cycle(GOOD)
    spec["paused"] = True
    s.cycle(BAD)
    s.cycle(BAD)
    assert replicas(s) == 2 and s.records() == [] and s.status["phase"] == "Paused"


def test_the_pending_record_is_written_before_the_change() -> None:
    s = scaling()
    s.cycle(BAD)
    assert [c[0] for c in s.cluster.calls] == ["checkpoint", "patch"]


def test_no_change_without_the_pending_record() -> None:
    s = scaling()
    s.checkpoint_fails = True
    s.cycle(BAD)
    assert replicas(s) == 2 and s.cluster.writes() == []
    s.checkpoint_fails = False
    s.cycle(BAD)
    assert replicas(s) == 3


def test_a_forbidden_call_is_a_failed_record_naming_the_error() -> None:
    from modelmonitor.adapters.kubernetes import KubernetesError

    s = scaling()
    s.cluster.fail_next[("get", "Deployment")] = KubernetesError(
        "reading Deployment ml/fraud", 403, 'deployments.apps "fraud" is forbidden'
    )
    s.cycle(BAD)
    assert s.results("scaleUp") == [("scaleUp", "Failed")]
    assert "403" in s.records("scaleUp")[0]["reason"] and "forbidden" in s.records("scaleUp")[0]["reason"]


def test_budget_across_episodes() -> None:
    s = scaling(cooldown="0s", budget={"max": 2, "per": "1h"})
    for _ in range(2):
        s.cycle(BAD)
        s.cycle(GOOD)
    s.cycle(BAD)
    assert replicas(s) == 4
    assert s.results("scaleUp")[-1][1] == "Skipped" and "budget" in s.records("scaleUp")[-1]["reason"]
    assert T0 + timedelta(hours=1) > s.now
