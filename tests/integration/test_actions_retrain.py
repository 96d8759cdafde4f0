"""Retrain on the real sandbox: a breach starts a Job from the template, as the ServiceAccount the spec names,
owned by the monitor, carrying the evidence; the version the trainer reports is promoted into the Deployment
and the new pods run it, and the new revision becomes last-known-good only after it proved itself. A failing
Job alerts (the real Alertmanager receives it) and promotes nothing."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from actions_rig import FAILING_LABEL, Rig, crd_fixture, deployment, monitor, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from support import wait_for

pytestmark = pytest.mark.cluster

VERSION_KEY = "modelmonitor.dev/model-version"


def retrain(pod_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "type": "retrain",
        "serviceAccountName": "trainer",
        "cooldown": "1h",
        "jobTemplate": {
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": pod_labels or {}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "train", "image": "trainer:v1"}]},
                },
            }
        },
        "promote": {
            "from": "annotation",
            "key": VERSION_KEY,
            "to": {"env": {"container": "model", "name": "MODEL_VERSION"}},
        },
    }


def trainer_account(rig: Rig) -> str:
    """The ServiceAccount training runs as, allowed to annotate its Job with the version it produced."""
    ns = rig.namespace
    rig.cluster.kubectl("create", "serviceaccount", "trainer", "-n", ns)
    rig.cluster.kubectl("create", "role", "report-version", "-n", ns, "--verb=get,patch", "--resource=jobs.batch")
    rig.cluster.kubectl(
        "create", "rolebinding", "trainer-reports", "-n", ns, "--role=report-version", f"--serviceaccount={ns}:trainer"
    )
    return f"system:serviceaccount:{ns}:trainer"


def retraining_jobs(rig: Rig) -> list[dict[str, Any]]:
    items = rig.cluster.kubectl_json("get", "jobs", "-n", rig.namespace, "-l", "modelmonitor.dev/monitor=fraud")[
        "items"
    ]
    return list(items)


def model_version(rig: Rig) -> str | None:
    container = rig.get("deployment", "fraud")["spec"]["template"]["spec"]["containers"][0]
    return next((e["value"] for e in container.get("env") or [] if e["name"] == "MODEL_VERSION"), None)


def test_a_retraining_job_completes_and_its_version_is_promoted(rig: Rig) -> None:
    trainer = trainer_account(rig)
    rig.healthy()
    rig.apply(deployment(replicas=1, env={"MODEL_VERSION": "v1"}))
    rig.operator.start()
    actions = {"retrain": retrain(), "rollback": {"type": "rollback", "settlePeriod": "5s"}}
    rig.apply(monitor(actions, policy_actions=["retrain"]))
    v1 = wait_for("v1 as last-known-good", lambda: rig.status().get("lastKnownGood"), timeout=90)

    rig.broken()
    [job] = wait_for("the retraining Job", lambda: retraining_jobs(rig), timeout=60)
    name = job["metadata"]["name"]
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer"
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ModelMonitor" and owner["uid"] == rig.get("modelmonitor", "fraud")["metadata"]["uid"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["MODELMONITOR_POLICY"] == "accuracy-drop" and env["MODELMONITOR_SIGNAL"] == "accuracy"
    assert float(env["MODELMONITOR_VALUE"]) < 0.8 and env["MODELMONITOR_WINDOW"] == "4s"
    assert job["metadata"]["annotations"]["modelmonitor.dev/threshold"] == "0.8"

    # The trainer, as its own ServiceAccount, reports the version it produced on its Job.
    rig.cluster.kubectl("annotate", "job", name, "-n", rig.namespace, f"{VERSION_KEY}=v2", f"--as={trainer}")
    record = rig.final_record("retrain")
    assert record["result"] == "Succeeded", record
    assert "promoted model version v2" in record["reason"]
    assert model_version(rig) == "v2"
    wait_for(
        "a Running pod with MODEL_VERSION=v2",
        lambda: any(
            {"name": "MODEL_VERSION", "value": "v2"} in (p["spec"]["containers"][0].get("env") or [])
            for p in rig.running_pods()
        ),
        timeout=60,
    )
    assert len(retraining_jobs(rig)) == 1
    outcome = rig.get("job", name)["metadata"]["annotations"]["modelmonitor.dev/outcome"]
    assert outcome.startswith("Succeeded")

    # The promoted revision proves itself before it becomes last-known-good.
    assert rig.status()["lastKnownGood"]["templateHash"] == v1["templateHash"]
    rig.healthy()
    new = wait_for(
        "the promoted revision as last-known-good",
        lambda: (lkg := rig.status().get("lastKnownGood", {})).get("templateHash") != v1["templateHash"] and lkg,
        timeout=90,
    )
    assert new["revision"] == "2"


def alertmanager_alerts(rig: Rig, alertname: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{rig.cluster.alertmanager_url}/api/v2/alerts", timeout=5) as response:
        alerts = json.loads(response.read())
    return [
        a for a in alerts if a["labels"].get("alertname") == alertname and a["labels"].get("namespace") == rig.namespace
    ]


def test_a_failing_job_alerts_and_promotes_nothing(rig: Rig) -> None:
    trainer_account(rig)
    rig.healthy()
    rig.apply(deployment(replicas=1, env={"MODEL_VERSION": "v1"}))
    rig.operator.start()
    actions = {
        "retrain": retrain({FAILING_LABEL: "true"}),
        "page": {"type": "alert", "alertmanager": {"url": rig.cluster.alertmanager_url}},
    }
    rig.apply(monitor(actions, policy_actions=["retrain"]))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)
    generation = rig.get("deployment", "fraud")["metadata"]["generation"]

    rig.broken()
    record = rig.final_record("retrain")
    assert record["result"] == "Failed", record
    assert "failed" in record["reason"] and "nothing promoted" in record["reason"]
    alerts = wait_for(
        "the failure alert in Alertmanager",
        lambda: alertmanager_alerts(rig, "ModelMonitorRetrainFailed"),
        timeout=30,
    )
    assert alerts[0]["labels"]["monitor"] == "fraud" and alerts[0]["status"]["state"] == "active"
    assert "retraining Job" in alerts[0]["annotations"]["summary"]
    assert rig.events("RetrainFailed")
    assert model_version(rig) == "v1"
    assert rig.get("deployment", "fraud")["metadata"]["generation"] == generation, "the workload was not touched"
