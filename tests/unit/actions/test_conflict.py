"""A monitor in conflict (an older ModelMonitor changes the same workload) changes nothing: its scale, rollback
and promotion decisions are recorded as Skipped naming the other monitor, a Warning Event says so once, its
alerts still go out, and once the conflict is gone it acts again."""

from __future__ import annotations

from typing import Any

from fakes import FakeCluster, Scenario, deployment, finish_job, monitor_spec

from modelmonitor.adapters.kubernetes import DEPLOYMENT, JOB

BAD, GOOD = 0.5, 0.95
SCALE = {"type": "scale", "step": 1, "maxReplicas": 4, "cooldown": "0s"}
PAGE = {"type": "alert", "alertmanager": {"url": "http://am:9093"}}
VERSION_KEY = "modelmonitor.dev/model-version"


def scenario(actions: dict[str, Any]) -> Scenario:
    cluster = FakeCluster()
    cluster.put(DEPLOYMENT, deployment(replicas=2, env={"MODEL_VERSION": "v1"}))
    return Scenario(monitor_spec(actions), cluster)


def replicas(s: Scenario) -> int:
    return int(s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["replicas"])


def events(s: Scenario, reason: str) -> list[str]:
    return [e.message for o in s.outcomes for e in o.events if e.reason == reason]


def test_the_later_monitor_skips_its_scale_steps_but_still_alerts() -> None:
    s = scenario({"scaleUp": SCALE, "page": PAGE})
    s.conflict_with = "fraud-first"
    s.cycle(GOOD)
    s.cycle(BAD)
    s.cycle(BAD)
    assert replicas(s) == 2 and s.cluster.writes(DEPLOYMENT.kind) == []
    assert s.results("scaleUp") == [("scaleUp", "Skipped")], "said once, not every cycle"
    reason = s.records("scaleUp")[0]["reason"]
    assert "ModelMonitor fraud-first is older and also changes Deployment/fraud" in reason
    assert "would scale Deployment/fraud from 2 to 3 replicas" in reason
    assert s.results("page") == [("page", "Succeeded")] and len(s.sender.alerts) == 1
    [warning] = events(s, "WorkloadConflict")
    assert "fraud-first" in warning and "alerts still go out" in warning
    conflict = next(c for c in s.status["conditions"] if c["type"] == "Conflict")
    assert conflict["status"] == "True" and "fraud-first" in conflict["message"]


def test_when_the_older_monitor_is_gone_the_later_one_acts() -> None:
    s = scenario({"scaleUp": SCALE})
    s.conflict_with = "fraud-first"
    s.cycle(BAD)
    assert replicas(s) == 2
    s.conflict_with = None
    s.cycle(BAD)
    assert replicas(s) == 3
    assert s.results("scaleUp") == [("scaleUp", "Skipped"), ("scaleUp", "Succeeded")]
    assert len(events(s, "WorkloadConflict")) == 1 and len(events(s, "WorkloadConflictResolved")) == 1
    assert next(c for c in s.status["conditions"] if c["type"] == "Conflict")["status"] == "False"


def test_yielding_to_another_monitor_is_a_new_event() -> None:
    s = scenario({"scaleUp": SCALE})
    s.conflict_with = "fraud-first"
    s.cycle(GOOD)
    s.cycle(GOOD)
    s.conflict_with = "fraud-second"
    s.cycle(GOOD)
    assert [("fraud-first" in m, "fraud-second" in m) for m in events(s, "WorkloadConflict")] == [
        (True, False),
        (False, True),
    ]


def test_a_dry_run_action_still_says_what_it_would_have_done() -> None:
    s = scenario({"scaleUp": {**SCALE, "dryRun": True}})
    s.conflict_with = "fraud-first"
    s.cycle(BAD)
    assert s.results("scaleUp") == [("scaleUp", "DryRun")]


def retrain(promote: bool) -> dict[str, Any]:
    action: dict[str, Any] = {
        "type": "retrain",
        "serviceAccountName": "trainer",
        "jobTemplate": {
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "t"}]}}}
        },
    }
    if promote:
        action["promote"] = {
            "from": "annotation",
            "key": VERSION_KEY,
            "to": {"env": {"container": "model", "name": "MODEL_VERSION"}},
        }
    return action


def jobs(s: Scenario) -> list[dict[str, Any]]:
    return [o for (kind, _ns, _n), o in s.cluster.objects.items() if kind == JOB]


def test_retraining_that_would_promote_is_skipped_retraining_alone_runs() -> None:
    promoting = scenario({"retrain": retrain(promote=True)})
    promoting.conflict_with = "fraud-first"
    promoting.cycle(BAD)
    assert jobs(promoting) == [] and promoting.results("retrain") == [("retrain", "Skipped")]
    training = scenario({"retrain": retrain(promote=False)})
    training.conflict_with = "fraud-first"
    training.cycle(BAD)
    assert len(jobs(training)) == 1, "a Job alone changes nothing that serves"


def test_a_job_finishing_during_a_conflict_is_not_promoted() -> None:
    s = scenario({"retrain": retrain(promote=True)})
    s.cycle(BAD)
    [job] = jobs(s)
    s.conflict_with = "fraud-first"
    finish_job(s.cluster, job["metadata"]["name"], annotations={VERSION_KEY: "v2"})
    s.cycle(BAD)
    env = s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "MODEL_VERSION", "value": "v1"}]
    [final] = [r for r in s.records("retrain") if r["result"] != "Pending"]
    assert final["result"] == "Skipped" and "v2 not promoted: ModelMonitor fraud-first" in final["reason"]
