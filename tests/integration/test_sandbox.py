"""The local sandbox behaves like a real cluster: what the operator and the demo rely on."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator

import pytest

from modelmonitor_sandbox.devcluster.processes import free_port
from support import Cluster, wait_for

pytestmark = pytest.mark.cluster


def _running_pods(cluster: Cluster, namespace: str, selector: str) -> list[dict]:
    pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def _deployment(name: str, image: str, replicas: int) -> str:
    return textwrap.dedent(f"""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {name}}}
        spec:
          replicas: {replicas}
          selector: {{matchLabels: {{app: {name}}}}}
          template:
            metadata: {{labels: {{app: {name}}}}}
            spec: {{containers: [{{name: model, image: "{image}"}}]}}
        """)


def test_nodes_are_ready(cluster: Cluster) -> None:
    nodes = cluster.kubectl_json("get", "nodes")["items"]
    ready = [
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert len(ready) >= 2, nodes
    assert "Ready" in cluster.kubectl("get", "nodes").stdout


def test_server_reports_the_pinned_version(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{cluster.state.versions['kubernetes']}"


def test_deployment_gets_running_pods_and_rollout_undo_restores_the_old_replicaset(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_deployment("fraud", "model:v1", 3))
    wait_for("3 Running pods", lambda: len(_running_pods(cluster, namespace, "app=fraud")) == 3)
    first_hash = _running_pods(cluster, namespace, "app=fraud")[0]["metadata"]["labels"]["pod-template-hash"]

    cluster.kubectl("set", "image", "-n", namespace, "deployment/fraud", "model=model:v2")
    cluster.kubectl("rollout", "status", "-n", namespace, "deployment/fraud", "--timeout=60s")
    replicasets = cluster.kubectl_json("get", "replicasets", "-n", namespace, "-l", "app=fraud")["items"]
    assert len(replicasets) == 2
    second_hash = _running_pods(cluster, namespace, "app=fraud")[0]["metadata"]["labels"]["pod-template-hash"]
    assert second_hash != first_hash

    cluster.kubectl("rollout", "undo", "-n", namespace, "deployment/fraud")
    cluster.kubectl("rollout", "status", "-n", namespace, "deployment/fraud", "--timeout=60s")
    wait_for(
        "the v1 pods back",
        lambda: (
            {p["metadata"]["labels"]["pod-template-hash"] for p in _running_pods(cluster, namespace, "app=fraud")}
            == {first_hash}
        ),
    )
    images = {c["image"] for p in _running_pods(cluster, namespace, "app=fraud") for c in p["spec"]["containers"]}
    assert images == {"model:v1"}
    # Kubernetes renumbers the restored ReplicaSet as the newest revision.
    restored = next(
        rs
        for rs in cluster.kubectl_json("get", "replicasets", "-n", namespace, "-l", "app=fraud")["items"]
        if rs["metadata"]["labels"]["pod-template-hash"] == first_hash
    )
    assert restored["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"


def test_scaling_a_deployment_changes_running_pods(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_deployment("scaled", "model:v1", 1))
    wait_for("1 Running pod", lambda: len(_running_pods(cluster, namespace, "app=scaled")) == 1)
    cluster.kubectl("scale", "-n", namespace, "deployment/scaled", "--replicas=4")
    wait_for("4 Running pods", lambda: len(_running_pods(cluster, namespace, "app=scaled")) == 4)


def _job(name: str, labels: str = "") -> str:
    return textwrap.dedent(f"""
        apiVersion: batch/v1
        kind: Job
        metadata: {{name: {name}}}
        spec:
          backoffLimit: 0
          template:
            metadata: {{labels: {{{labels}}}}}
            spec:
              restartPolicy: Never
              containers: [{{name: train, image: trainer:v1}}]
        """)


def _job_condition(cluster: Cluster, namespace: str, name: str) -> str | None:
    job = cluster.kubectl_json("get", "job", name, "-n", namespace)
    for condition in job.get("status", {}).get("conditions", []):
        if condition["status"] == "True" and condition["type"] in ("Complete", "Failed"):
            return str(condition["type"])
    return None


def test_job_runs_to_complete(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_job("train"))
    assert wait_for("the Job to finish", lambda: _job_condition(cluster, namespace, "train")) == "Complete"


def test_job_whose_container_fails_ends_failed(cluster: Cluster, namespace: str) -> None:
    # kwok's chaos stage fails containers of pods carrying this label (used to show a failing retraining Job).
    failing = '"pod-container-running-failed.stage.kwok.x-k8s.io": "true"'
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_job("broken", failing))
    assert wait_for("the Job to finish", lambda: _job_condition(cluster, namespace, "broken")) == "Failed"


def test_rbac_denies_a_service_account_without_binding(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    who = f"--as=system:serviceaccount:{namespace}:nobody"
    denied = cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, who, check=False)
    assert denied.stdout.strip() == "no"
    assert denied.returncode != 0

    cluster.kubectl("create", "role", "pod-reader", "-n", namespace, "--verb=list", "--resource=pods")
    cluster.kubectl(
        "create", "rolebinding", "nobody-reads", "-n", namespace, "--role=pod-reader",
        f"--serviceaccount={namespace}:nobody",
    )  # fmt: skip
    wait_for(
        "the RoleBinding to take effect",
        lambda: (
            cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, who, check=False).stdout.strip() == "yes"
        ),
        timeout=15,
    )
    other = cluster.kubectl("auth", "can-i", "list", "pods", "-n", "default", who, check=False)
    assert other.stdout.strip() == "no"


@pytest.fixture
def exporter() -> Iterator[str]:
    """A real exporter process serving one gauge on a free loopback port."""
    port = free_port()
    code = textwrap.dedent(f"""
        import time
        from prometheus_client import Gauge, start_http_server
        Gauge("sandbox_probe_value", "a value for the scrape test").set(42)
        start_http_server({port}, addr="127.0.0.1")
        time.sleep(600)
        """)
    process = subprocess.Popen([sys.executable, "-c", code])
    wait_for(
        "the exporter to serve /metrics",
        lambda: _get(f"http://127.0.0.1:{port}/metrics") is not None,
        timeout=20,
        interval=0.2,
    )
    yield f"127.0.0.1:{port}"
    process.kill()
    process.wait()


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bytes(response.read())
    except OSError:
        return None


def test_prometheus_scrapes_a_target_registered_at_run_time(cluster: Cluster, exporter: str) -> None:
    assert _get(f"{cluster.prometheus_url}/-/ready") is not None
    name = f"probe-{exporter.rsplit(':', 1)[1]}"
    cluster.add_scrape_target(name, exporter, {"namespace": "sandbox-test", "model": "probe"})
    try:
        series = wait_for(
            "Prometheus to scrape the new target",
            lambda: cluster.prometheus_query(f'sandbox_probe_value{{instance="{exporter}"}}'),
            timeout=60,
        )
        assert float(series[0]["value"][1]) == 42.0
        assert series[0]["metric"]["model"] == "probe"
        assert series[0]["metric"]["namespace"] == "sandbox-test"
    finally:
        cluster.remove_scrape_target(name)

    def target_gone() -> bool:
        body = json.loads(_get(f"{cluster.prometheus_url}/api/v1/targets") or b"{}")
        return all(t["labels"].get("instance") != exporter for t in body["data"]["activeTargets"])

    wait_for("the removed target to leave Prometheus", target_gone, timeout=60)


def test_alertmanager_is_ready_and_accepts_alerts(cluster: Cluster) -> None:
    assert _get(f"{cluster.alertmanager_url}/-/ready") is not None
    alert = [{"labels": {"alertname": "SandboxProbe", "probe": free_port().__str__()}, "annotations": {}}]
    request = urllib.request.Request(
        f"{cluster.alertmanager_url}/api/v2/alerts",
        data=json.dumps(alert).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    probe = alert[0]["labels"]["probe"]
    wait_for(
        "Alertmanager to list the alert",
        lambda: any(
            a["labels"].get("probe") == probe
            for a in json.loads(_get(f"{cluster.alertmanager_url}/api/v2/alerts") or b"[]")
        ),
        timeout=20,
    )


def test_cluster_up_again_reuses_the_running_sandbox(cluster: Cluster) -> None:
    before = dict(cluster.state.pids)
    result = subprocess.run(
        [sys.executable, "-m", "modelmonitor", "cluster", "up"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "reusing the running sandbox" in result.stderr
    assert f"KUBECONFIG={cluster.kubeconfig}" in result.stdout
    status = subprocess.run(
        [sys.executable, "-m", "modelmonitor", "cluster", "status"], capture_output=True, text=True, check=True
    )
    for name, pid in before.items():
        assert f"{name}" in status.stdout and str(pid) in status.stdout


def test_cluster_env_prints_shell_exports(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelmonitor", "cluster", "env"], capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    assert f"export KUBECONFIG={cluster.kubeconfig}" in lines
    assert f"export MODELMONITOR_PROMETHEUS_URL={cluster.prometheus_url}" in lines
    assert f"export MODELMONITOR_ALERTMANAGER_URL={cluster.alertmanager_url}" in lines
