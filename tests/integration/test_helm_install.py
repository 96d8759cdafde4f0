"""`helm install` of charts/modelmonitor onto the real sandbox, and the operator working under the identity the
chart creates.

Why the operator runs as a local process and not in the chart's pod: the sandbox's nodes are kwok's simulated
nodes. The chart's Deployment is scheduled and its pod reported Running, but no container is ever started (kwok
simulates pod status, it runs no processes). So this test installs the chart for real (CRD, ServiceAccount,
Role and RoleBinding, Deployment, Service) and then runs `modelmonitor run` on this machine with exactly what
the pod would have: the environment of the installed Deployment and a token of the chart's ServiceAccount
(`kubectl create token`) in a kubeconfig holding only that token and the sandbox's CA; tests/integration/
test_images.py runs the operator's image with podman instead, with the same checks
(`the_operator_evaluates_and_acts`). Every API call the operator makes is then authorized by the chart's RBAC and
nothing else. The `helm test` hook pod is not run for the same reason (kwok never runs its curl); its rendering
is checked in tests/unit/test_chart.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelmonitor_sandbox.devcluster import versions
from modelmonitor_sandbox.devcluster.paths import binary_path
from modelmonitor_sandbox.devcluster.processes import free_port
from support import Cluster, ExporterProcess, http_get, token_kubeconfig, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelmonitor"
EXAMPLES = ROOT / "examples"
RELEASE = "mm"


@dataclass
class Release:
    """The installed chart: where it lives, what it watches, and a kubeconfig that is its ServiceAccount."""

    cluster: Cluster
    namespace: str  # the release's namespace (operator, ServiceAccount, Service)
    watched: str  # the namespace whose ModelMonitors it watches
    other: str  # a namespace it must not touch
    account: str  # system:serviceaccount:<namespace>:<name>
    kubeconfig: Path

    def as_operator(self, *args: str) -> subprocess.CompletedProcess[str]:
        """kubectl authenticated with the ServiceAccount's token only."""
        return subprocess.run(
            [str(self.cluster.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def can(self, verb: str, resource: str, namespace: str | None) -> bool:
        where = ["-n", namespace] if namespace else ["--all-namespaces"]
        resource, _, subresource = resource.partition("/")
        sub = [f"--subresource={subresource}"] if subresource else []
        return self.as_operator("auth", "can-i", verb, resource, *sub, *where).stdout.strip() == "yes"


def helm(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    path = binary_path("helm", versions.HELM, "helm")
    assert path.exists(), f"helm is not built ({path}): run `modelmonitor cluster build`"
    result = subprocess.run(
        [str(path), f"--kubeconfig={cluster.kubeconfig}", *args], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}"
    return result


@pytest.fixture
def release(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Release]:
    watched, other = f"{namespace}-models", f"{namespace}-other"
    for extra in (watched, other):
        cluster.kubectl("create", "namespace", extra)
    try:
        helm(
            cluster,
            "install", RELEASE, str(CHART),
            "--namespace", namespace,
            "--set", f"watchNamespaces={{{watched}}}",
            "--set", f"prometheus.url={cluster.prometheus_url}",
            "--set", "settings.tickSeconds=0.5",
            "--wait", "--timeout", "120s",
        )  # fmt: skip
        deployment = cluster.kubectl_json(
            "get", "deployment", "-n", namespace, "-l", f"app.kubernetes.io/instance={RELEASE}"
        )
        (pod,) = [d["spec"]["template"]["spec"] for d in deployment["items"]]
        account = pod["serviceAccountName"]
        kubeconfig = token_kubeconfig(cluster, namespace, account, tmp_path / "chart.kubeconfig")
        yield Release(cluster, namespace, watched, other, f"system:serviceaccount:{namespace}:{account}", kubeconfig)
    finally:
        subprocess.run(
            [str(binary_path("helm", versions.HELM, "helm")), f"--kubeconfig={cluster.kubeconfig}", "uninstall",
             RELEASE, "--namespace", namespace, "--wait", "--timeout", "60s"],
            capture_output=True, check=False, timeout=90,
        )  # fmt: skip
        for extra in (watched, other):
            cluster.kubectl("delete", "namespace", extra, "--wait=false", check=False)


def installed_env(cluster: Cluster, release: Release, pod: dict[str, Any]) -> dict[str, str]:
    """The environment of the operator container of ``pod`` as installed in the cluster, the pod's own fields
    (downward API) filled in as the kubelet would."""
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "operator"]
    assert container["args"] == ["run"]
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            env[e["name"]] = {
                "metadata.name": pod["metadata"]["name"],
                "metadata.namespace": pod["metadata"]["namespace"],
            }[path]
    return env


def operator_pods(cluster: Cluster, release: Release) -> list[dict[str, Any]]:
    """The pods of the installed Deployment (kwok reports them Running; no container runs, see above)."""
    pods = cluster.kubectl_json("get", "pods", "-n", release.namespace, "-l", f"app.kubernetes.io/instance={RELEASE}")
    return [p for p in pods["items"] if "operator" in {c["name"] for c in p["spec"]["containers"]}]


def owned(metrics_port: int) -> int:
    """How many monitors a replica carries, from its /metrics."""
    body = (http_get(f"http://127.0.0.1:{metrics_port}/metrics") or b"").decode()
    line = next((x for x in body.splitlines() if x.startswith("modelmonitor_operator_monitors_owned ")), "x 0")
    return int(float(line.split()[1]))


def labeled(good: float, bad: float) -> list[dict[str, Any]]:
    """Label-joined outcomes of model `fraud`: `good` right and `bad` wrong predictions per second."""
    base = {"model": "fraud", "version": "v1", "group": "all"}
    return [
        {"name": "modelmonitor_labeled_predictions_total", "labels": {**base, "outcome": "tp"}, "rate": good},
        {"name": "modelmonitor_labeled_predictions_total", "labels": {**base, "outcome": "fp"}, "rate": bad},
    ]


MODEL = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: fraud}
spec:
  replicas: 1
  selector: {matchLabels: {app: fraud}}
  template:
    metadata: {labels: {app: fraud}}
    spec: {containers: [{name: model, image: "fraud-model:v1"}]}
"""

MONITOR = {
    "apiVersion": "modelmonitor.dev/v1alpha1",
    "kind": "ModelMonitor",
    "metadata": {"name": "fraud"},
    "spec": {
        "target": {"name": "fraud"},
        "model": {"name": "fraud"},
        "interval": "1s",
        "policies": [
            {
                "name": "accuracy-drop",
                "signal": "accuracy",
                "window": "10s",
                "condition": {"op": "<", "threshold": 0.8, "clearThreshold": 0.85},
                "for": "2s",
                "minSamples": 5,
                "actions": ["scale-up"],
            }
        ],
        "actions": {"scale-up": {"type": "scale", "step": 1, "maxReplicas": 3, "cooldown": "10m"}},
    },
}


def a_breach_scales_the_target(release: Release, exporter: ExporterProcess) -> None:
    """The `fraud` monitor's status is written (Healthy), then a drop in accuracy fires its policy and scales the
    Deployment through the chart's RBAC: a Succeeded scale record and a PolicyFiring Event."""
    cluster = release.cluster

    def status() -> dict[str, Any]:
        return dict(cluster.kubectl_json("get", "mm", "fraud", "-n", release.watched).get("status") or {})

    healthy = wait_for("the monitor to be Healthy", lambda: status().get("phase") == "Healthy" and status(), 90)
    assert healthy["policies"][0]["value"] > 0.8
    exporter.set(labeled(good=2, bad=20))
    wait_for(
        "the scale action to add a replica",
        lambda: cluster.kubectl_json("get", "deployment", "fraud", "-n", release.watched)["spec"]["replicas"] == 2,
        timeout=120,
    )
    records = wait_for(
        "a Succeeded scale record",
        lambda: [a for a in status().get("actions") or [] if a["name"] == "scale-up" and a["result"] == "Succeeded"],
        timeout=30,
    )
    assert records[0]["type"] == "scale"
    reasons = {
        e["reason"]
        for e in cluster.kubectl_json("get", "events", "-n", release.watched)["items"]
        if e["involvedObject"]["name"] == "fraud"
    }
    assert "PolicyFiring" in reasons, reasons


def the_operator_evaluates_and_acts(
    release: Release, exporter: ExporterProcess, metrics_port: int, running: Callable[[], bool], log: Callable[[], str]
) -> None:
    """What a user sees of an operator running under the chart's identity (as a process here, as its image in
    tests/integration/test_images.py): /healthz answers, a monitor's status is written, and a breach scales the
    target through the chart's RBAC, with nothing forbidden in the operator's `log()`."""
    cluster = release.cluster
    exporter.set(labeled(good=20, bad=1))
    wait_for(
        "the operator's /healthz",
        lambda: http_get(f"http://127.0.0.1:{metrics_port}/healthz") or not running(),
        timeout=60,
    )
    assert running(), log()[-3000:]
    cluster.kubectl("apply", "-n", release.watched, "-f", "-", input=MODEL)
    cluster.kubectl("apply", "-n", release.watched, "-f", "-", input=json.dumps(MONITOR))
    a_breach_scales_the_target(release, exporter)
    text = log()
    assert "forbidden" not in text.lower(), text[-3000:]


def test_the_chart_installs_two_replicas_and_both_take_work_under_its_service_account(
    cluster: Cluster, release: Release, tmp_path: Path
) -> None:
    """Both of the chart's replicas run as `modelmonitor run` with their pod's environment: they share the
    monitors by Leases in the release namespace, and one of them scales the Deployment through the chart's RBAC."""
    # The kubeconfig is the chart's ServiceAccount, not the sandbox's admin.
    whoami = release.as_operator("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == release.account, whoami.stderr

    exporter = ExporterProcess(tmp_path)
    target = f"helm-{release.watched}"
    cluster.add_scrape_target(target, exporter.address, {"namespace": release.watched, "pod": "fraud-0"})
    pods = wait_for(
        "the chart's two operator pods", lambda: (p := operator_pods(cluster, release)) and len(p) == 2 and p
    )
    processes: list[tuple[subprocess.Popen[bytes], int, Path]] = []
    for pod in pods:
        metrics_port = free_port()
        env = installed_env(cluster, release, pod)
        assert env["MODELMONITOR_NAMESPACES"] == release.watched
        assert env["MODELMONITOR_PROMETHEUS_URL"] == cluster.prometheus_url
        assert (env["MODELMONITOR_REPLICA_NAME"], env["MODELMONITOR_LEASE_NAMESPACE"]) == (
            pod["metadata"]["name"],
            release.namespace,
        )
        # The pod listens on 0.0.0.0:8080; on this shared machine the process takes a free loopback port instead.
        env["MODELMONITOR_METRICS_ADDRESS"] = f"127.0.0.1:{metrics_port}"
        log = tmp_path / f"{pod['metadata']['name']}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "modelmonitor", "run"],
                env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(release.kubeconfig), **env},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        processes.append((process, metrics_port, log))
    try:
        exporter.set(labeled(good=20, bad=1))
        for process, metrics_port, log in processes:
            wait_for(
                "the operator's /healthz",
                lambda p=process, port=metrics_port: (
                    http_get(f"http://127.0.0.1:{port}/healthz") or p.poll() is not None
                ),
                timeout=60,
            )
            assert process.poll() is None, log.read_text()[-3000:]
        cluster.kubectl("apply", "-n", release.watched, "-f", "-", input=MODEL)
        cluster.kubectl("apply", "-n", release.watched, "-f", "-", input=json.dumps(MONITOR))
        # More monitors of the same model (no actions), so that both replicas get a share.
        extra = [{**MONITOR, "metadata": {"name": f"fraud-{i}"}, "spec": {**MONITOR["spec"], "policies": [
            {k: v for k, v in MONITOR["spec"]["policies"][0].items() if k != "actions"}], "actions": {}}}
            for i in range(9)]  # fmt: skip
        cluster.kubectl(
            "apply",
            "-n",
            release.watched,
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": extra}),
        )
        shares = wait_for(
            "both replicas to carry a share of the 10 monitors",
            lambda: (s := [owned(port) for _p, port, _l in processes]) and sum(s) == 10 and min(s) > 0 and s,
            timeout=90,
        )
        assert len(shares) == 2
        leases = cluster.kubectl_json("get", "leases", "-n", release.namespace)["items"]
        assert {lease["spec"]["holderIdentity"] for lease in leases} == {p["metadata"]["name"] for p in pods}

        a_breach_scales_the_target(release, exporter)
        for _process, _port, log in processes:
            text = log.read_text()
            assert "forbidden" not in text.lower(), text[-3000:]
    finally:
        for process, _port, _log in processes:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        cluster.remove_scrape_target(target)
        exporter.stop()


def test_the_chart_identity_cannot_do_what_it_should_not(release: Release) -> None:
    allowed = [
        ("watch", "modelmonitors.modelmonitor.dev", release.watched),
        ("patch", "modelmonitors.modelmonitor.dev/status", release.watched),
        ("create", "events", release.watched),
        ("get", "secrets", release.watched),
        ("patch", "deployments.apps", release.watched),
        ("create", "jobs.batch", release.watched),
        ("update", "leases.coordination.k8s.io", release.namespace),
    ]
    for verb, resource, where in allowed:
        assert release.can(verb, resource, where), f"the chart's identity cannot {verb} {resource} in {where}"
    denied = [
        ("create", "pods", release.watched),  # pods only through retraining Jobs
        ("get", "secrets", None),  # no Secret outside the watched namespace...
        ("get", "secrets", release.other),
        ("get", "secrets", release.namespace),
        ("list", "secrets", release.watched),  # ...and inside it only by name
        ("list", "modelmonitors.modelmonitor.dev", release.other),
        ("list", "modelmonitors.modelmonitor.dev", None),
        ("patch", "deployments.apps", release.other),
        ("delete", "deployments.apps", release.watched),
        ("create", "jobs.batch", release.other),
        ("update", "modelmonitors.modelmonitor.dev", release.watched),
        ("create", "rolebindings.rbac.authorization.k8s.io", release.watched),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
        ("list", "nodes", None),
        ("update", "leases.coordination.k8s.io", release.watched),  # Leases in the release namespace only
        ("list", "leases.coordination.k8s.io", None),
    ]
    for verb, resource, where in denied:
        assert not release.can(verb, resource, where), f"the chart's identity may {verb} {resource} in {where}"
    # And the API server says so to the operator itself.
    refused = release.as_operator("get", "secrets", "-n", release.other)
    assert refused.returncode != 0 and "forbidden" in refused.stderr


def _example_documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path, document))
    return found


def test_every_example_manifest_is_accepted_by_the_api_server(release: Release) -> None:
    """Server-side dry run (schema, CEL rules, defaulting) of every example object the sandbox has an API for."""
    served = set(release.cluster.kubectl("api-versions").stdout.split())
    checked = 0
    for path, document in _example_documents():
        if document["apiVersion"] not in served:  # e.g. monitoring.coreos.com/v1 without the Prometheus Operator
            continue
        result = release.cluster.kubectl(
            "apply", "--dry-run=server", "-n", release.watched, "-f", "-", input=yaml.safe_dump(document), check=False
        )
        assert result.returncode == 0, f"{path.relative_to(ROOT)} {document['kind']}: {result.stderr}"
        checked += 1
    assert checked >= 6


def test_a_cluster_wide_install_reads_secrets_only_by_name(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """The default install watches every namespace (a ClusterRole): still no listing Secrets, no pods, no
    deleting. Only RBAC is checked here: an operator running cluster-wide would act on other tests' monitors."""
    release = f"cw-{namespace}"  # ClusterRole names are cluster-wide: one per test run
    helm(cluster, "install", release, str(CHART), "--namespace", namespace, "--set", "test.enabled=false")
    try:
        account = f"{release}-modelmonitor"
        kubeconfig = token_kubeconfig(cluster, namespace, account, tmp_path / "cw.kubeconfig")
        identity = Release(cluster, namespace, "", "", f"system:serviceaccount:{namespace}:{account}", kubeconfig)
        for verb, resource in [
            ("watch", "modelmonitors.modelmonitor.dev"),
            ("patch", "modelmonitors.modelmonitor.dev/status"),
            ("get", "secrets"),
            ("create", "jobs.batch"),
        ]:
            assert identity.can(verb, resource, None), f"cluster-wide install cannot {verb} {resource}"
        for verb, resource in [
            ("list", "secrets"),
            ("watch", "secrets"),
            ("create", "pods"),
            ("delete", "deployments.apps"),
            ("update", "modelmonitors.modelmonitor.dev"),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ]:
            assert not identity.can(verb, resource, None), f"cluster-wide install may {verb} {resource}"
    finally:
        helm(cluster, "uninstall", release, "--namespace", namespace)
    assert cluster.kubectl("get", "clusterrole", f"{release}-modelmonitor", check=False).returncode != 0
