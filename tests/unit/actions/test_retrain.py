"""The retrain action: the Job built from the template, one at a time, followed to its end, promoted once, and a
failed Job alerting and promoting nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes import FakeCluster, Scenario, deployment, finish_job, monitor_spec

from modelmonitor.actions.retrain import (
    OUTCOME_ANNOTATION,
    PROMOTED_ANNOTATION,
    VERSION_GRACE_SECONDS,
    job_name,
    read_version,
)
from modelmonitor.adapters.kubernetes import DEPLOYMENT, JOB, POD, KubernetesError
from modelmonitor.api import Promotion

BAD, GOOD = 0.5, 0.95
VERSION_KEY = "modelmonitor.dev/model-version"


def retrain_action(**fields: Any) -> dict[str, Any]:
    return {
        "type": "retrain",
        "serviceAccountName": "trainer",
        "cooldown": "0s",
        "jobTemplate": {
            "metadata": {"labels": {"team": "fraud"}},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "train", "image": "trainer:v1", "env": [{"name": "EPOCHS", "value": "3"}]}
                        ],
                    }
                },
            },
        },
        **fields,
    }


def retrain_scenario(promote: dict[str, Any] | None = None, *, alert: bool = True, **fields: Any) -> Scenario:
    cluster = FakeCluster()
    cluster.put(DEPLOYMENT, deployment(env={"MODEL_VERSION": "v1"}))
    action = retrain_action(**fields)
    if promote is not None:
        action["promote"] = promote
    actions: dict[str, Any] = {"retrain": action}
    if alert:
        actions["page"] = {"type": "alert", "alertmanager": {"url": "http://am:9093"}}
    return Scenario(monitor_spec(actions), cluster)


ENV_PROMOTION = {
    "from": "annotation",
    "key": VERSION_KEY,
    "to": {"env": {"container": "model", "name": "MODEL_VERSION"}},
}


def jobs(s: Scenario) -> list[dict[str, Any]]:
    return [o for (k, _ns, _n), o in s.cluster.objects.items() if k == JOB]


def test_job_names_are_deterministic_valid_and_short() -> None:
    key = "ml/fraud/accuracy-drop/2026-11-24T10:00:10Z/retrain"
    assert job_name("fraud", "retrain", key) == job_name("fraud", "retrain", key)
    assert job_name("fraud", "retrain", key) != job_name("fraud", "retrain", key.replace("10Z", "20Z"))
    long = job_name("a" * 200 + ".b", "Retrain_Nightly", key)
    assert len(long) <= 63 and long.islower() and "_" not in long and "." not in long


def test_the_job_runs_as_the_named_account_owned_by_the_monitor_with_the_evidence() -> None:
    s = retrain_scenario()
    s.cycle(BAD)
    [job] = jobs(s)
    meta, pod = job["metadata"], job["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "trainer"
    assert meta["ownerReferences"][0]["kind"] == "ModelMonitor" and meta["ownerReferences"][0]["uid"] == "uid-monitor"
    assert meta["labels"]["team"] == "fraud" and meta["labels"]["modelmonitor.dev/monitor-uid"] == "uid-monitor"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["EPOCHS"] == "3"
    assert (env["MODELMONITOR_POLICY"], env["MODELMONITOR_SIGNAL"], env["MODELMONITOR_VALUE"]) == (
        "accuracy-drop",
        "accuracy",
        "0.5",
    )
    assert env["MODELMONITOR_WINDOW"] == "5m" and env["MODELMONITOR_THRESHOLD"] == "0.8"
    assert meta["annotations"]["modelmonitor.dev/value"] == "0.5"
    assert pod["metadata"]["annotations"]["modelmonitor.dev/signal"] == "accuracy"
    assert s.results("retrain") == [("retrain", "Pending")]


def test_one_job_per_episode_and_one_at_a_time_per_monitor() -> None:
    s = retrain_scenario()
    for _ in range(5):
        s.cycle(BAD)
    assert len(jobs(s)) == 1
    s.cycle(GOOD)
    s.cycle(BAD)  # a new episode while the first Job still runs
    assert len(jobs(s)) == 1
    assert s.results("retrain")[-1] == ("retrain", "Skipped")
    assert "still running" in s.records("retrain")[-1]["reason"]
    finish_job(s.cluster, jobs(s)[0]["metadata"]["name"])
    s.cycle(BAD)
    assert len(jobs(s)) == 2, "the second episode's Job, once the first finished"


def test_the_operators_own_service_account_is_refused() -> None:
    s = retrain_scenario(serviceAccountName="modelmonitor")
    s.cluster.me = "system:serviceaccount:ml:modelmonitor"
    s.cycle(BAD)
    assert jobs(s) == []
    assert s.results("retrain") == [("retrain", "Failed")]
    assert "operator's own ServiceAccount" in s.records("retrain")[0]["reason"]


def test_a_completed_job_is_promoted_into_the_workload_once() -> None:
    s = retrain_scenario(ENV_PROMOTION)
    s.cycle(BAD)
    name = jobs(s)[0]["metadata"]["name"]
    finish_job(s.cluster, name, annotations={VERSION_KEY: "v2"})
    s.cycle(BAD)
    s.cycle(BAD)
    container = s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "MODEL_VERSION", "value": "v2"}]
    assert s.results("retrain") == [("retrain", "Succeeded")]
    assert "promoted model version v2" in s.records("retrain")[0]["reason"]
    assert s.cluster.obj(JOB, name)["metadata"]["annotations"][OUTCOME_ANNOTATION].startswith("Succeeded")
    assert [c[0] for c in s.cluster.writes("Deployment")] == ["replace"], "promoted once"
    assert json.loads(s.cluster.obj(DEPLOYMENT, "fraud")["metadata"]["annotations"][PROMOTED_ANNOTATION])["job"] == name


def test_promotion_is_not_repeated_when_the_operator_stopped_before_marking_the_job() -> None:
    s = retrain_scenario(ENV_PROMOTION)
    s.cycle(BAD)
    name = jobs(s)[0]["metadata"]["name"]
    finish_job(s.cluster, name, annotations={VERSION_KEY: "v2"})
    original = s.cluster.patch

    def refuse_job_patch(kind: Any, ns: str, n: str, patch: Any, **kw: Any) -> Any:
        if kind == JOB:
            raise SystemExit("killed after promoting, before marking the Job")
        return original(kind, ns, n, patch, **kw)

    s.cluster.patch = refuse_job_patch  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        s.cycle(BAD)
    s.cluster.patch = original  # type: ignore[method-assign]
    s.remediator = type(s.remediator)(s.cluster, s.sender)
    s.cycle(BAD)
    assert [c[0] for c in s.cluster.writes("Deployment")] == ["replace"]
    assert s.results("retrain") == [("retrain", "Succeeded")]


@pytest.mark.parametrize("first_attempt", ["created", "refused"])
def test_the_outcome_is_recorded_when_the_operator_stopped_after_marking_the_job(first_attempt: str) -> None:
    s = retrain_scenario(ENV_PROMOTION)
    if first_attempt == "refused":  # a Failed record of the same key comes before the Job
        s.cluster.fail_next[("create", "Job")] = KubernetesError("creating Job", 429, "Too Many Requests")
        s.cycle(BAD)
        assert s.results("retrain") == [("retrain", "Failed")]
    s.cycle(BAD)
    name = jobs(s)[0]["metadata"]["name"]
    finish_job(s.cluster, name, annotations={VERSION_KEY: "v2"})
    pending_only = dict(s.status)
    s.cycle(BAD)  # promotes and marks the Job...
    assert OUTCOME_ANNOTATION in s.cluster.obj(JOB, name)["metadata"]["annotations"]
    s.status = pending_only  # ...but the status write never happened: the operator was killed
    s.remediator = type(s.remediator)(s.cluster, s.sender)
    s.cycle(BAD)
    final = [r for r in s.records("retrain") if r["result"] != "Failed"]
    assert [r["result"] for r in final] == ["Succeeded"], s.records("retrain")
    assert "promoted model version v2" in final[0]["reason"]
    assert [c[0] for c in s.cluster.writes("Deployment")] == ["replace"], "promoted once"
    s.cycle(BAD)
    assert [r["result"] for r in s.records("retrain")].count("Succeeded") == 1, "recorded once"


@pytest.mark.parametrize(
    ("to", "check"),
    [
        ({"image": {"container": "model"}}, lambda c, t: c["image"] == "model:v2"),
        ({"annotation": {"key": VERSION_KEY}}, lambda c, t: t["metadata"]["annotations"][VERSION_KEY] == "v2"),
    ],
)
def test_promotion_targets(to: dict[str, Any], check: Any) -> None:
    s = retrain_scenario({"from": "annotation", "key": VERSION_KEY, "to": to})
    s.cycle(BAD)
    finish_job(s.cluster, jobs(s)[0]["metadata"]["name"], annotations={VERSION_KEY: "v2"})
    s.cycle(BAD)
    template = s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["template"]
    assert check(template["spec"]["containers"][0], template), template


def test_a_failed_job_alerts_and_promotes_nothing() -> None:
    s = retrain_scenario(ENV_PROMOTION)
    s.cycle(BAD)
    finish_job(s.cluster, jobs(s)[0]["metadata"]["name"], "Failed", annotations={VERSION_KEY: "v2"})
    s.cycle(BAD)
    assert s.cluster.writes("Deployment") == []
    assert s.results("retrain") == [("retrain", "Failed")]
    assert "nothing promoted" in s.records("retrain")[0]["reason"]
    failed = [a for _url, a in s.sender.alerts if a["labels"]["alertname"] == "ModelMonitorRetrainFailed"]
    assert len(failed) == 1 and failed[0]["labels"]["monitor"] == "fraud"
    assert any(e.reason == "RetrainFailed" for e in s.outcomes[-1].events)
    s.cycle(BAD)
    assert len([a for _u, a in s.sender.alerts if a["labels"]["alertname"] == "ModelMonitorRetrainFailed"]) == 1


def test_a_job_that_reports_no_version_is_waited_for_then_failed() -> None:
    s = retrain_scenario(ENV_PROMOTION)
    s.cycle(BAD)
    name = jobs(s)[0]["metadata"]["name"]
    finish_job(s.cluster, name)
    s.cycle(BAD)
    assert s.results("retrain") == [("retrain", "Pending")], "a trainer may annotate its Job just as it exits"
    s.cycle(BAD, after=VERSION_GRACE_SECONDS)
    assert s.results("retrain") == [("retrain", "Failed")]
    assert "reported no model version" in s.records("retrain")[0]["reason"]
    assert s.cluster.writes("Deployment") == []


def test_a_version_from_the_termination_message() -> None:
    promote = Promotion.model_validate(
        {"from": "terminationMessage", "key": "version", "to": {"env": {"container": "model", "name": "V"}}}
    )
    job = {"spec": {"template": {"spec": {"containers": [{"name": "train"}]}}}}
    pod = {
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "train", "state": {"terminated": {"message": '{"version": "2026.11.24", "auc": 0.91}'}}}
            ],
        }
    }
    assert read_version(job, [pod], promote) == ("2026.11.24", "key version of the termination message")
    plain = Promotion.model_validate({"from": "terminationMessage", "to": {"env": {"container": "m", "name": "V"}}})
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = "v7\n"
    assert read_version(job, [pod], plain)[0] == "v7"
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = "not json"
    assert read_version(job, [pod], promote)[0] is None


def test_the_termination_message_is_read_from_the_jobs_pod() -> None:
    s = retrain_scenario({"from": "terminationMessage", "to": {"image": {"container": "model"}}})
    s.cycle(BAD)
    name = jobs(s)[0]["metadata"]["name"]
    s.cluster.put(
        POD,
        {
            "metadata": {"name": f"{name}-abcde", "labels": {"batch.kubernetes.io/job-name": name}},
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [{"name": "train", "state": {"terminated": {"message": "v3"}}}],
            },
        },
    )
    finish_job(s.cluster, name)
    s.cycle(BAD)
    assert s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["template"]["spec"]["containers"][0]["image"] == "model:v3"


def test_a_bad_image_tag_is_not_promoted() -> None:
    s = retrain_scenario({"from": "annotation", "key": VERSION_KEY, "to": {"image": {"container": "model"}}})
    s.cycle(BAD)
    finish_job(s.cluster, jobs(s)[0]["metadata"]["name"], annotations={VERSION_KEY: "v2:latest"})
    s.cycle(BAD)
    assert s.results("retrain") == [("retrain", "Failed")]
    assert (
        "not a usable version" in s.records("retrain")[0]["reason"]
        or "valid image tag" in s.records("retrain")[0]["reason"]
    )


@pytest.mark.parametrize("stop", ["before", "after"])
def test_an_operator_stopped_mid_creation_leaves_exactly_one_job(stop: str) -> None:
    s = retrain_scenario()
    original = s.remediator.retrain.act

    def die(*args: Any) -> Any:
        if stop == "after":
            original(*args)
        raise SystemExit("killed")

    s.remediator.retrain.act = die  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        s.cycle(BAD)
    s.remediator = type(s.remediator)(s.cluster, s.sender)
    for _ in range(3):
        s.cycle(BAD)
    assert len(jobs(s)) == 1
    assert s.results("retrain") == [("retrain", "Pending")]


def test_a_job_created_without_an_answer_is_not_recorded_failed_nor_created_twice() -> None:
    s = retrain_scenario()
    original = s.cluster.create

    def created_then_reset(kind: Any, namespace: str, body: Any) -> Any:
        original(kind, namespace, body)
        raise KubernetesError(f"creating {kind.kind}", 0, "connection reset by peer")

    s.cluster.create = created_then_reset  # type: ignore[method-assign]
    s.cycle(BAD)
    s.cluster.create = original  # type: ignore[method-assign]
    assert s.results("retrain") == [("retrain", "Pending")], "not Failed: the Job may exist"
    for _ in range(3):
        s.cycle(BAD)
    assert len(jobs(s)) == 1
    finish_job(s.cluster, jobs(s)[0]["metadata"]["name"])
    s.cycle(BAD)
    assert s.results("retrain") == [("retrain", "Succeeded")]
