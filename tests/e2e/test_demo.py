"""`make demo`'s command, run as a user would (`modelmonitor demo --quick`), then each closed loop checked twice:
in the demo's own machine-readable summary, and independently in what the cluster kept afterwards (the
Deployment, its revision history, the retraining Job, the monitor's status and Events) and in the model registry
(a real MLflow server the fixture starts and hands to the demo: the versions, their tags, the alias).

The demo runs once for the module (about 4-5 minutes); the tests below read what it left.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support import Cluster, MlflowProcess

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


@dataclass
class DemoRun:
    namespace: str
    output: Path
    stdout: str
    returncode: int
    summary: dict[str, Any]
    mlflow: MlflowProcess

    def loop(self, number: int) -> dict[str, Any]:
        return next(loop for loop in self.summary["loops"] if loop["number"] == number)


@pytest.fixture(scope="module")
def demo(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    namespace = f"demo-{uuid.uuid4().hex[:8]}"
    output = tmp_path_factory.mktemp("demo")
    # The demo's registry, started here so that it outlives the demo for the checks below. Not under pytest's
    # basetemp: a concurrent pytest run of the same user may prune it while the server runs.
    directory = Path(tempfile.mkdtemp(prefix="modelmonitor-demo-mlflow-"))
    mlflow = MlflowProcess(directory)
    try:
        result = subprocess.run(
            [
                sys.executable, "-m", "modelmonitor", "demo", "--quick", "--namespace", namespace,
                "--output", str(output), "--mlflow", mlflow.url,
            ],
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )  # fmt: skip
        summary_path = output / "summary.json"
        assert summary_path.exists(), result.stdout[-4000:] + result.stderr[-3000:]
        summary = json.loads(summary_path.read_text())
        yield DemoRun(namespace, output, result.stdout, result.returncode, summary, mlflow)
    finally:
        mlflow.stop()
        shutil.rmtree(directory, ignore_errors=True)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _monitor(cluster: Cluster, run: DemoRun) -> dict[str, Any]:
    return dict(cluster.kubectl_json("get", "modelmonitor", "fraud", "-n", run.namespace))


def _records(cluster: Cluster, run: DemoRun, action: str) -> list[dict[str, Any]]:
    return [a for a in _monitor(cluster, run)["status"].get("actions") or [] if a["name"] == action]


def _events(cluster: Cluster, run: DemoRun, reason: str) -> list[str]:
    items = cluster.kubectl_json("get", "events", "-n", run.namespace)["items"]
    return [e["message"] for e in items if e["reason"] == reason and e["involvedObject"]["kind"] == "ModelMonitor"]


def _deployment(cluster: Cluster, run: DemoRun) -> dict[str, Any]:
    return dict(cluster.kubectl_json("get", "deployment", "fraud-model", "-n", run.namespace))


def _ordered(loop: dict[str, Any]) -> None:
    """Trigger, then detection, then the actions, then recovery."""
    assert loop["triggered_at"] is not None and loop["detected_at"] is not None and loop["recovered_at"] is not None
    assert loop["triggered_at"] <= loop["detected_at"] <= loop["actions"][0]["at"] + 1
    assert loop["actions"][-1]["at"] <= loop["recovered_at"]


def test_the_demo_succeeds_and_draws_its_timeline(demo: DemoRun) -> None:
    assert demo.returncode == 0, demo.stdout[-5000:]
    assert demo.summary["ok"] is True
    # Under 10 minutes once the binaries are cached (the quick pacing is what CI runs).
    assert demo.summary["duration_seconds"] < 600
    png = Path(demo.summary["timeline_png"])
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width >= 1000 and height >= 800 and png.stat().st_size > 50_000
    # The narration shows kubectl get mm and the monitor's Events as they happen, and the summary table.
    out = demo.stdout
    assert "$ kubectl get mm" in out and "NAME    TARGET        PHASE" in out
    for reason in ("PolicyFiring", "ActionPending", "ActionSucceeded", "LastKnownGood"):
        assert f"Event Normal  {reason}" in out or f"Event Warning {reason}" in out, reason
    assert "1. inputs drift -> retrain -> promote: OK" in out
    assert "3. load rises -> latency breaches -> scale up: OK" in out
    assert not demo.summary["errors"]


def test_drift_fires_a_retraining_job_whose_version_is_promoted_and_the_drift_clears(
    demo: DemoRun, cluster: Cluster
) -> None:
    loop = demo.loop(1)
    assert loop["ok"], loop
    _ordered(loop)
    assert loop["detected"].startswith("input-drift fired")
    details = loop["details"]
    source = details["source"]
    assert [a["what"] for a in loop["actions"]] == [
        "retraining Job created",
        f"promoted v2 (registered version 2, MODEL_URI {source})",
    ]
    assert details["version"] == "v2" and details["registered_version"] == "2" and details["training_rows"] >= 3000
    assert [r["what"] for r in loop["registry"]] == ["champion: v1 -> v2 (Promoted, by the operator)"]

    # The Job the operator created: from the template, as the trainer's ServiceAccount, owned by the monitor,
    # carrying the evidence and its own name, and marked handled by the operator.
    job = cluster.kubectl_json("get", "job", details["job"], "-n", demo.namespace)
    name = job["metadata"]["name"]
    annotations = job["metadata"]["annotations"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "fraud-trainer"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelMonitor"
    assert annotations["modelmonitor.dev/policy"] == "input-drift"
    assert annotations["modelmonitor.dev/signal"] == "dataDrift"
    assert float(annotations["modelmonitor.dev/value"]) > float(annotations["modelmonitor.dev/threshold"])
    assert annotations["modelmonitor.dev/outcome"].startswith("Succeeded")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert {"name": "MODELMONITOR_JOB", "value": name} in container["env"]
    [retrain] = [r for r in _records(cluster, demo, "retrain") if r["result"] == "Succeeded"]
    assert f"promoted model version {source}" in retrain["reason"]
    assert "registered version 2 of fraud-detector" in retrain["reason"]
    history = cluster.kubectl("rollout", "history", "deployment/fraud-model", "-n", demo.namespace).stdout
    assert f"modelmonitor promoted model version {source} from Job {name}" in history

    # In MLflow: the trainer's version 2 carries the Job's name and the source the Deployment was given; the
    # operator moved champion to it once it proved itself, and tagged version 1, which it replaced.
    tags = demo.mlflow.tags("fraud-detector", "2")
    assert tags["modelmonitor.dev/job"] == name and tags["modelmonitor.dev/profile"].startswith("mlflow-artifacts:/")
    assert (
        demo.mlflow.call("GET", "/model-versions/get", {"name": "fraud-detector", "version": "2"})["model_version"][
            "source"
        ]
        == source
    )
    assert "champion moved to version 2" in demo.mlflow.tags("fraud-detector", "1")["previous-champion"]
    assert any(
        m.startswith("policy input-drift (dataDrift) Resolving -> Inactive")
        for m in _events(cluster, demo, "PolicyInactive")
    )


def test_a_worse_version_is_rolled_back_to_the_last_known_good_revision(demo: DemoRun, cluster: Cluster) -> None:
    loop = demo.loop(2)
    assert loop["ok"], loop
    _ordered(loop)
    details = loop["details"]
    assert (details["bad_version"], details["bad_registered_version"], details["restored_version"]) == ("v3", "3", "v2")
    assert details["model_uri"] == demo.loop(1)["details"]["source"]
    assert loop["detected"].startswith("accuracy-drop fired") and details["detected_value"] < 0.8
    assert [r["what"] for r in loop["registry"]] == [
        "champion: v2 -> v3 (by hand)",
        "champion: v3 -> v2 (RolledBack, by the operator)",
    ]

    [rollback] = [r for r in _records(cluster, demo, "rollback") if r["result"] == "Succeeded"]
    assert "rolled back Deployment/fraud-model to the last-known-good template" in rollback["reason"]
    deployment = _deployment(cluster, demo)
    ledger = json.loads(deployment["metadata"]["annotations"]["modelmonitor.dev/rollback"])
    assert (
        ledger["policy"] == "accuracy-drop"
        and ledger["to"] == _monitor(cluster, demo)["status"]["lastKnownGood"]["templateHash"]
    )
    model = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "model")
    assert {"name": "MODEL_URI", "value": details["model_uri"]} in model["env"]
    # Exactly one rollback: the restored revision was not rolled back from again.
    assert len(ledger["rolledBackFrom"]) == 1

    # In MLflow, read after the demo: champion is back on version 2 and version 3 is marked rolled back; the
    # monitor's registry status says the same and keeps the history of both moves.
    assert demo.mlflow.alias("fraud-detector", "champion") == "2"
    assert "accuracy-drop" in demo.mlflow.tags("fraud-detector", "3")["rolled-back"]
    registry = _monitor(cluster, demo)["status"]["registry"]
    assert (registry["servedVersion"], registry["aliasVersion"]) == ("2", "2")
    moves = [(e["event"], e["version"]) for e in registry["history"] if e["event"] in ("Promoted", "RolledBack")]
    assert moves == [("Promoted", "2"), ("RolledBack", "2")]


def test_rising_load_breaches_latency_and_scaling_up_brings_it_back(demo: DemoRun, cluster: Cluster) -> None:
    loop = demo.loop(3)
    assert loop["ok"], loop
    _ordered(loop)
    assert loop["detected"].startswith("latency-p95 fired") and loop["details"]["detected_value"] > 0.4
    before, after = loop["details"]["replicas_before"], loop["details"]["replicas_after"]
    assert before == 2 and 2 < after <= 5
    assert loop["actions"][0]["what"] == "scale from 2 to 3 replicas"

    steps = [r for r in _records(cluster, demo, "scaleUp") if r["result"] == "Succeeded"]
    assert len(steps) == after - before
    assert _deployment(cluster, demo)["spec"]["replicas"] == after
    # The recovery is the operator's own measurement: the policy went back to Inactive on an OK value.
    latency = next(p for p in _monitor(cluster, demo)["status"]["policies"] if p["name"] == "latency-p95")
    assert latency["state"] == "Inactive" and latency["value"] < 0.4
