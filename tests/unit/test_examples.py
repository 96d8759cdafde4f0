"""The examples users copy first: every ModelMonitor passes the API models, the four common cases are there, the
model Deployment wires the sidecar as the docs say, and the example model, sidecar and traffic run together.

The API server's own verdict on every example manifest (server-side dry run, CEL rules included) is in
tests/integration/test_helm_install.py.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelmonitor.api import parse_monitor
from modelmonitor.sidecar import cli as sidecar_cli
from modelmonitor_sandbox.devcluster.processes import free_port
from support import http_get, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FRAUD = EXAMPLES / "fraud-model"


def documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        found += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def monitors() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in documents() if d["kind"] == "ModelMonitor"]


def test_every_example_is_a_named_kubernetes_object() -> None:
    assert len(documents()) >= 9
    for path, document in documents():
        assert {"apiVersion", "kind", "metadata"} <= document.keys(), path
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", document["metadata"]["name"]), path


@pytest.mark.parametrize("path_and_body", monitors(), ids=lambda pb: str(pb[0].relative_to(EXAMPLES)))
def test_every_example_monitor_passes_the_api_models(path_and_body: tuple[Path, dict[str, Any]]) -> None:
    _path, body = path_and_body
    spec = parse_monitor(body)
    for policy in spec.policies:
        assert set(policy.actions) <= set(spec.actions), policy.name


@pytest.mark.parametrize(
    ("signals", "action_type"),
    [
        ({"dataDrift"}, "retrain"),
        ({"accuracy"}, "rollback"),
        ({"latencyP95", "latencyP99"}, "scale"),
        ({"fairnessGap"}, "alert"),
        ({"estimatedAccuracy"}, "retrain"),
        ({"labelCoverage"}, "alert"),
    ],
)
def test_the_common_cases_have_an_example(signals: set[str], action_type: str) -> None:
    """Drift to retrain, accuracy to rollback, latency to scale, fairness to alert; estimated accuracy (with
    drift, allOf) to retrain, label coverage to alert."""
    for _path, body in monitors():
        spec = parse_monitor(body)
        for policy in spec.policies:
            if policy.signal in signals and any(spec.actions[a].type == action_type for a in policy.actions):
                return
    pytest.fail(f"no example ModelMonitor acts on {signals} with a {action_type} action")


def _model_manifest() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((EXAMPLES / "model-with-sidecar.yaml").read_text())
    return {d["kind"]: d for d in docs if d}


def test_the_sidecar_proxies_to_the_model_and_is_what_clients_and_prometheus_reach() -> None:
    manifest = _model_manifest()
    pod = manifest["Deployment"]["spec"]["template"]
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    sidecar, model = containers["modelmonitor"], containers["model"]
    assert sidecar["image"] == "modelmonitor/sidecar:0.1.0"
    # Args replace the image's default command, so they must name the subcommand; then the sidecar's own parser.
    assert sidecar["args"][0] == "sidecar"
    parser = argparse.ArgumentParser()
    sidecar_cli.add_arguments(parser)
    args = parser.parse_args([a.replace("$(MODEL_VERSION)", "v1") for a in sidecar["args"][1:]])
    model_port = next(p["containerPort"] for p in model["ports"])
    assert args.upstream == f"http://127.0.0.1:{model_port}"
    listen_port = args.listen[1]
    assert sidecar["ports"] == [{"name": "modelmonitor", "containerPort": listen_port}]
    assert {e["name"] for e in sidecar["env"]} >= {"MODEL_VERSION"}
    # The profile comes from a ConfigMap mounted where --profile points.
    mount = next(m for m in sidecar["volumeMounts"] if args.profile.startswith(m["mountPath"]))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "fraud-profile"
    # Clients reach the sidecar, not the model.
    assert manifest["Service"]["spec"]["ports"][0]["targetPort"] == "modelmonitor"
    assert manifest["Service"]["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    # Prometheus scrapes the sidecar's port by name.
    (podmonitor,) = yaml.safe_load_all((EXAMPLES / "podmonitor.yaml").read_text())
    assert podmonitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert podmonitor["spec"]["podMetricsEndpoints"][0]["port"] == "modelmonitor"
    for container in containers.values():
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_example_monitor_targets_the_example_model() -> None:
    spec = parse_monitor(yaml.safe_load((FRAUD / "monitor.yaml").read_text()))
    assert spec.target.name == _model_manifest()["Deployment"]["metadata"]["name"]
    sidecar = next(
        c
        for c in _model_manifest()["Deployment"]["spec"]["template"]["spec"]["containers"]
        if c["name"] == "modelmonitor"
    )
    assert f"--model={spec.model.name}" in sidecar["args"]


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _sample(metrics: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_example_model_sidecar_and_traffic_run_together(tmp_path: Path) -> None:
    """The kind walkthrough's steps 5 and 6 on loopback: training data, profile, model server, sidecar, traffic."""
    python = sys.executable
    train = tmp_path / "train.csv"
    with train.open("w") as out:
        subprocess.run([python, str(FRAUD / "training_data.py"), "--rows", "2000"], stdout=out, check=True)
    profile = tmp_path / "profile.json"
    subprocess.run(
        [python, "-m", "modelmonitor", "profile", "build", str(train), "-o", str(profile), "--label", "label",
         "--prediction", "prediction", "--score", "score", "--group", "segment", "--n-boot", "50",
         "--window-size", "200"],
        check=True, capture_output=True,
    )  # fmt: skip
    model_port, sidecar_port = free_port(), free_port()
    processes = [
        subprocess.Popen([python, str(FRAUD / "server.py"), "--host", "127.0.0.1", "--port", str(model_port)]),
        subprocess.Popen(
            [python, "-m", "modelmonitor", "sidecar", f"--profile={profile}", f"--listen=127.0.0.1:{sidecar_port}",
             f"--upstream=http://127.0.0.1:{model_port}", "--model=fraud", "--version=v1"],
            stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip
    sidecar = f"http://127.0.0.1:{sidecar_port}"
    try:
        wait_for("the sidecar", lambda: http_get(f"{sidecar}/healthz"), timeout=30)
        wait_for("the model server", lambda: http_get(f"http://127.0.0.1:{model_port}/v1/models/fraud"), timeout=30)
        answer = _post(f"{sidecar}/v1/models/fraud:predict", {"instances": [{"amount": 3.0, "velocity": 0.0}]})
        assert answer["predictions"][0]["label"] == 1 and answer["predictions"][0]["score"] > 0.99
        subprocess.run(
            [python, str(FRAUD / "traffic.py"), "--url", sidecar, "--rate", "60", "--seconds", "2", "--drift"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        metrics = wait_for(
            "labels joined in the sidecar",
            lambda: (
                (m := (http_get(f"{sidecar}/metrics") or b"").decode())
                and _sample(m, "modelmonitor_labeled_predictions_total") >= 20
                and m
            ),
            timeout=60,
        )
        # Traffic posts every call's label before it exits (how many calls fit in 2 s depends on the machine):
        # all of them joined, only the first hand-made call (no request id) has none.
        calls = _sample(metrics, "modelmonitor_requests_total", code="2xx")
        assert _sample(metrics, "modelmonitor_labeled_predictions_total") >= calls - 1
        assert _sample(metrics, "modelmonitor_proxy_unmonitored_total") == 0
        right = _sample(metrics, "modelmonitor_labeled_predictions_total", outcome="tp")
        right += _sample(metrics, "modelmonitor_labeled_predictions_total", outcome="tn")
        # The drifted world flips the relation the model learned: it is mostly wrong.
        assert right / _sample(metrics, "modelmonitor_labeled_predictions_total") < 0.5
        assert _sample(metrics, "modelmonitor_group_predictions_total", group="new-customer") > 0
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
