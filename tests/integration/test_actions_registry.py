"""The MLflow model registry on the real sandbox with a real ``mlflow server`` (sqlite backend store): a retrain's
registered version is pinned into the workload by its immutable source URI and made champion once it proved
itself; a bad release is rolled back and the alias moved back, the bad version tagged; and with the registry
stopped (its processes frozen, so every call times out) during a rollback, serving is restored at once and the
alias move waits, said so in status and Events, and is done exactly once when the registry is back. And the
reference profile belongs to the version: stored with it by `profile build`, loaded by the sidecar serving it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from actions_rig import Rig, crd_fixture, deployment, monitor, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from modelmonitor_sandbox.devcluster.processes import free_port
from support import MlflowProcess, http_get, wait_for

pytestmark = pytest.mark.cluster

ALIAS = "champion"


@pytest.fixture(scope="module")
def mlflow() -> Iterator[MlflowProcess]:
    # Not under pytest's basetemp: a concurrent pytest run of the same user may prune it while the server runs.
    directory = Path(tempfile.mkdtemp(prefix="modelmonitor-mlflow-"))
    server = MlflowProcess(directory)
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def source(model: str, n: int) -> str:
    return f"s3://models/{model}/{n}"


def registry(mlflow: MlflowProcess, model: str) -> dict[str, Any]:
    return {"mlflow": {"trackingUri": mlflow.url, "timeout": "3s"}, "model": model, "alias": ALIAS}


def served_uri(rig: Rig) -> str | None:
    container = rig.get("deployment", "fraud")["spec"]["template"]["spec"]["containers"][0]
    return next((e["value"] for e in container.get("env") or [] if e["name"] == "MODEL_URI"), None)


def registry_status(rig: Rig) -> dict[str, Any]:
    return dict(rig.status().get("registry") or {})


def condition(rig: Rig, kind: str) -> dict[str, Any]:
    return next((c for c in rig.status().get("conditions") or [] if c["type"] == kind), {})


def v1_serving(rig: Rig, mlflow: MlflowProcess, actions: dict[str, Any], policy_actions: list[str]) -> str:
    """Version 1 registered and champion, pinned by the Deployment, recorded as served and last-known-good."""
    model = rig.namespace
    v1 = mlflow.register(model, source(model, 1))
    mlflow.call("POST", "/registered-models/alias", {"name": model, "alias": ALIAS, "version": v1})
    rig.healthy()
    rig.apply(deployment(replicas=1, env={"MODEL_URI": source(model, 1)}))
    rig.operator.start()
    rig.apply(monitor(actions, policy_actions=policy_actions, registry=registry(mlflow, model)))
    wait_for("v1 as last-known-good", lambda: rig.status().get("lastKnownGood"), timeout=90)
    wait_for("v1 recorded as served", lambda: registry_status(rig).get("servedVersion") == v1, timeout=60)
    assert registry_status(rig)["aliasVersion"] == v1
    return v1


def retrain() -> dict[str, Any]:
    return {
        "type": "retrain",
        "serviceAccountName": "trainer",
        "cooldown": "1h",
        "jobTemplate": {
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "train", "image": "trainer:v1"}]}
                },
            }
        },
        "promote": {"from": "registry", "to": {"env": {"container": "model", "name": "MODEL_URI"}}},
    }


def test_a_retrained_version_is_pinned_then_made_champion(rig: Rig, mlflow: MlflowProcess) -> None:
    model = rig.namespace
    rig.cluster.kubectl("create", "serviceaccount", "trainer", "-n", rig.namespace)
    actions = {"retrain": retrain(), "rollback": {"type": "rollback", "settlePeriod": "5s"}}
    v1 = v1_serving(rig, mlflow, actions, ["retrain"])

    rig.broken()
    jobs = wait_for(
        "the retraining Job",
        lambda: rig.cluster.kubectl_json("get", "jobs", "-n", rig.namespace, "-l", "modelmonitor.dev/monitor=fraud")[
            "items"
        ],
        timeout=60,
    )
    job = jobs[0]["metadata"]["name"]
    env = {e["name"]: e["value"] for e in jobs[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELMONITOR_JOB"] == job, "the Job knows its own name, to tag what it registers"
    # The trainer registers what it trained and tags it with its Job's name; another version is registered
    # meanwhile and must not be the one promoted.
    v2 = mlflow.register(model, source(model, 2), {"modelmonitor.dev/job": job})
    mlflow.register(model, source(model, 3))

    record = rig.final_record("retrain")
    assert record["result"] == "Succeeded", record
    assert f"registered version {v2} of {model}" in record["reason"]
    assert served_uri(rig) == source(model, 2), "the immutable source URI is pinned, never the alias"
    wait_for("version 2 recorded as served", lambda: registry_status(rig).get("servedVersion") == v2, timeout=60)
    assert mlflow.alias(model, ALIAS) == v1, "not champion before it proved itself"

    rig.healthy()
    wait_for("version 2 made champion", lambda: mlflow.alias(model, ALIAS) == v2, timeout=90)
    assert "previous-champion" in mlflow.tags(model, v1)
    status = wait_for("the status to say so", lambda: (s := registry_status(rig)).get("aliasVersion") == v2 and s)
    promoted = [e for e in status["history"] if e["event"] == "Promoted"]
    assert [(e["version"], e["source"]) for e in promoted] == [(v2, source(model, 2))]
    served = [e for e in status["history"] if e["event"] == "Served"]
    assert served[-1]["version"] == v2 and f"retraining Job {job}" in served[-1]["why"]
    assert rig.events("RegistryAliasMoved")
    wide = rig.cluster.kubectl("get", "mm", "fraud", "-n", rig.namespace, "-o", "wide").stdout
    assert "SERVING" in wide and f" {v2} " in wide


def hand_release(rig: Rig, mlflow: MlflowProcess) -> str:
    """Someone registers version 2, pins it in the Deployment and moves the alias to it, by hand."""
    model = rig.namespace
    v2 = mlflow.register(model, source(model, 2))
    rig.broken()  # version 2 is worse
    rig.cluster.kubectl("set", "env", "-n", rig.namespace, "deployment/fraud", f"MODEL_URI={source(model, 2)}")
    mlflow.call("POST", "/registered-models/alias", {"name": model, "alias": ALIAS, "version": v2})
    return v2


ROLLBACK = {"rollback": {"type": "rollback", "settlePeriod": "5s", "cooldown": "0s"}}


def test_a_bad_release_is_rolled_back_and_the_alias_moved_back(rig: Rig, mlflow: MlflowProcess) -> None:
    model = rig.namespace
    v1 = v1_serving(rig, mlflow, ROLLBACK, ["rollback"])
    v2 = hand_release(rig, mlflow)

    record = rig.final_record("rollback")
    assert record["result"] == "Succeeded", record
    assert served_uri(rig) == source(model, 1)
    wait_for("the alias moved back to version 1", lambda: mlflow.alias(model, ALIAS) == v1, timeout=60)
    assert "rolled-back" in mlflow.tags(model, v2)
    status = wait_for("the status to say so", lambda: (s := registry_status(rig)).get("aliasVersion") == v1 and s)
    [rolled] = [e for e in status["history"] if e["event"] == "RolledBack"]
    assert rolled["version"] == v1 and f"rolled back from version {v2}" in rolled["why"]
    wait_for("version 1 served again", lambda: registry_status(rig).get("servedVersion") == v1, timeout=60)


def test_the_registry_down_during_a_rollback_does_no_harm(rig: Rig, mlflow: MlflowProcess) -> None:
    model = rig.namespace
    v1 = v1_serving(rig, mlflow, ROLLBACK, ["rollback"])
    v2 = hand_release(rig, mlflow)
    mlflow.freeze()
    try:
        record = rig.final_record("rollback")
        assert record["result"] == "Succeeded", record
        assert served_uri(rig) == source(model, 1), "serving never waits for the registry"
        pending = wait_for("the pending alias move", lambda: registry_status(rig).get("pending"), timeout=60)
        assert pending["kind"] == "Rollback"
        synced = wait_for(
            "RegistrySynced False with the error",
            lambda: (c := condition(rig, "RegistrySynced")).get("status") == "False" and c.get("message") and c,
            timeout=30,
        )
        assert synced["reason"] == "AliasMovePending"
        assert rig.events("RegistryUpdatePending")
    finally:
        mlflow.thaw()
    wait_for("the alias moved back once the registry is up", lambda: mlflow.alias(model, ALIAS) == v1, timeout=90)
    wait_for("RegistrySynced True", lambda: condition(rig, "RegistrySynced").get("status") == "True", timeout=30)
    assert "rolled-back" in mlflow.tags(model, v2)
    status = registry_status(rig)
    assert status.get("pending") is None
    assert [e["version"] for e in status["history"] if e["event"] == "RolledBack"] == [v1], "done exactly once"
    assert len(rig.events("RegistryUpdatePending")) == 1, "said once, not every retry"


FRAUD = Path(__file__).resolve().parents[2] / "examples" / "fraud-model"


def test_a_versions_profile_is_stored_with_it_and_the_sidecar_serving_it_loads_it(
    mlflow: MlflowProcess, tmp_path: Path
) -> None:
    model = f"profiles-{tmp_path.name}"
    v1 = mlflow.register(model, source(model, 1))
    v2 = mlflow.register(model, source(model, 2))
    python = sys.executable
    train = tmp_path / "train.csv"
    with train.open("w") as out:
        subprocess.run([python, str(FRAUD / "training_data.py"), "--rows", "500"], stdout=out, check=True)
    profile = tmp_path / "profile.json"
    subprocess.run(
        [python, "-m", "modelmonitor", "profile", "build", str(train), "-o", str(profile), "--label", "label",
         "--prediction", "prediction", "--score", "score", "--n-boot", "20", "--window-size", "100",
         "--registry", mlflow.url, "--registered-model", model, "--registered-version", v1],
        check=True, capture_output=True,
    )  # fmt: skip
    uri = mlflow.tags(model, v1)["modelmonitor.dev/profile"]
    stored = http_get(f"{mlflow.url}/api/2.0/mlflow-artifacts/artifacts/{uri.removeprefix('mlflow-artifacts:/')}")
    assert stored == profile.read_bytes()

    port = free_port()
    log = tmp_path / "sidecar.log"
    sidecar = subprocess.Popen(
        [python, "-m", "modelmonitor", "sidecar", "--profile-from-registry", mlflow.url, "--registered-model", model,
         "--model-uri", source(model, 1), f"--listen=127.0.0.1:{port}", "--model=fraud", "--version=v1"],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for("the sidecar", lambda: http_get(f"http://127.0.0.1:{port}/healthz") is not None, timeout=60)
        assert f"reference profile of version {v1} of {model}" in log.read_text()
    finally:
        sidecar.terminate()
        sidecar.wait(timeout=30)

    refused = subprocess.run(
        [python, "-m", "modelmonitor", "sidecar", "--profile-from-registry", mlflow.url, "--registered-model", model,
         "--registered-version", v2, "--listen=127.0.0.1:1", "--model=fraud", "--version=v2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2
    assert f"version {v2} of {model} has no modelmonitor.dev/profile tag" in refused.stderr
