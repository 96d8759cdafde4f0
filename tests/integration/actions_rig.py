"""The rig of the action tests on the real sandbox: the operator as a real process running under its own
least-privilege ServiceAccount (RBAC applied from `modelmonitor.rbac`, a token from ``kubectl create token``, a
kubeconfig with the sandbox's CA), a real exporter, a real Prometheus scraping it, and the helpers to read what
a user would read.

Fixtures are imported by the test modules (``from actions_rig import rig_fixture``); pytest knows them by the
name given in ``@pytest.fixture(name=...)``.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelmonitor.rbac import render
from support import Cluster, ExporterProcess, OperatorProcess, PrometheusProcess, token_kubeconfig, wait_for

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modelmonitor.dev_modelmonitors.yaml"
OPERATOR_NAMESPACE = "modelmonitor-system"
OPERATOR_ACCOUNT = "modelmonitor"
FAILING_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"


@pytest.fixture(scope="session", name="crd")
def crd_fixture(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/modelmonitors.modelmonitor.dev", "--timeout=60s")


@pytest.fixture(scope="session", name="operator_account")
def operator_account_fixture(cluster: Cluster) -> str:
    """The operator's ServiceAccount and ClusterRole, from the one RBAC definition (bindings come per test)."""
    if cluster.kubectl("get", "namespace", OPERATOR_NAMESPACE, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    objects = [
        o for o in render(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, watch=["placeholder"]) if o["kind"] != "RoleBinding"
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    return f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"


def operator_kubeconfig(cluster: Cluster, namespace: str, directory: Path) -> Path:
    """Bind the operator's ClusterRole in ``namespace`` only, and a kubeconfig that authenticates as its
    ServiceAccount with a token (no admin certificate)."""
    bindings = [
        o for o in render(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, watch=[namespace]) if o["kind"] == "RoleBinding"
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(bindings))
    path = token_kubeconfig(cluster, OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, directory / "operator.kubeconfig")
    who = f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
    wait_for(
        "the operator's RoleBinding to take effect",
        lambda: (
            cluster.kubectl("auth", "can-i", "create", "jobs", "-n", namespace, who, check=False).stdout.strip()
            == "yes"
        ),
        timeout=20,
    )
    return path


def operator_process(
    kubeconfig: Path,
    namespace: str,
    directory: Path,
    prometheus_url: str,
    replica: str = "",
    extra_env: dict[str, str] | None = None,
) -> OperatorProcess:
    """The operator authenticated as its ServiceAccount, watching `namespace` (one replica, named ``replica``)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "MODELMONITOR_PROMETHEUS_URL": prometheus_url}
    return OperatorProcess({**env, **(extra_env or {})}, namespace, directory, replica)


@dataclass
class Rig:
    cluster: Cluster
    namespace: str
    exporter: ExporterProcess
    prometheus: PrometheusProcess
    operator: OperatorProcess

    # --- the model's behaviour -----------------------------------------------------------------------------

    def model(self, model: str, *, good: float, bad: float) -> None:
        """The exporter reports label-joined outcomes at ``good`` correct and ``bad`` wrong predictions/s."""
        base = {"model": model, "version": "v1", "group": "all"}
        self.exporter.set(
            [
                {"name": "modelmonitor_labeled_predictions_total", "labels": {**base, "outcome": "tp"}, "rate": good},
                {"name": "modelmonitor_labeled_predictions_total", "labels": {**base, "outcome": "fp"}, "rate": bad},
            ]
        )

    def healthy(self, model: str = "fraud") -> None:
        self.model(model, good=20, bad=0)

    def broken(self, model: str = "fraud") -> None:
        self.model(model, good=2, bad=20)

    # --- objects ---------------------------------------------------------------------------------------------

    def apply(self, manifest: dict[str, Any] | str) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input=text)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return dict(self.cluster.kubectl_json("get", kind, name, "-n", self.namespace))

    def status(self, name: str = "fraud") -> dict[str, Any]:
        return dict(self.get("modelmonitor", name).get("status") or {})

    def records(self, action: str, name: str = "fraud") -> list[dict[str, Any]]:
        return [a for a in self.status(name).get("actions") or [] if a.get("name") == action]

    def final_record(self, action: str, name: str = "fraud", timeout: float = 90) -> dict[str, Any]:
        """Wait for a Succeeded or Failed record of ``action``; return it."""
        return dict(
            wait_for(
                f"a final record of {action}",
                lambda: next(
                    (r for r in reversed(self.records(action, name)) if r["result"] in ("Succeeded", "Failed")), None
                ),
                timeout=timeout,
            )
        )

    def running_pods(self, app: str = "fraud") -> list[dict[str, Any]]:
        pods = self.cluster.kubectl_json("get", "pods", "-n", self.namespace, "-l", f"app={app}")["items"]
        return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        items = self.cluster.kubectl_json("get", "events", "-n", self.namespace)["items"]
        return [e for e in items if reason is None or e["reason"] == reason]


@pytest.fixture(name="rig")
def rig_fixture(cluster: Cluster, crd: None, operator_account: str, namespace: str, tmp_path: Path) -> Iterator[Rig]:
    exporter = ExporterProcess(tmp_path)
    prometheus = PrometheusProcess(tmp_path, [exporter.address], {"namespace": namespace})
    kubeconfig = operator_kubeconfig(cluster, namespace, tmp_path)
    operator = operator_process(kubeconfig, namespace, tmp_path, prometheus.url)
    yield Rig(cluster, namespace, exporter, prometheus, operator)
    operator.stop()
    prometheus.stop()
    exporter.stop()
    if os.environ.get("MODELMONITOR_SHOW_OPERATOR_LOG"):
        print(operator.log_text())


def deployment(
    name: str = "fraud", *, replicas: int = 1, image: str = "model:v1", env: dict[str, str] | None = None
) -> str:
    env_yaml = json.dumps([{"name": k, "value": v} for k, v in (env or {}).items()])
    return textwrap.dedent(f"""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {name}}}
        spec:
          replicas: {replicas}
          revisionHistoryLimit: 10
          selector: {{matchLabels: {{app: {name}}}}}
          template:
            metadata: {{labels: {{app: {name}}}}}
            spec: {{containers: [{{name: model, image: "{image}", env: {env_yaml}}}]}}
        """)


def monitor(
    actions: dict[str, Any],
    *,
    name: str = "fraud",
    model: str = "fraud",
    policy_actions: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A ModelMonitor with one accuracy policy on quick timings (interval 1 s, window 4 s, for 1 s)."""
    return {
        "apiVersion": "modelmonitor.dev/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": name},
        "spec": {
            "target": {"name": model},
            "model": {"name": model},
            "prometheus": {"timeout": "2s"},
            "interval": "1s",
            "policies": [
                {
                    "name": "accuracy-drop",
                    "signal": "accuracy",
                    "window": "4s",
                    "condition": {"op": "<", "threshold": 0.8, "clearThreshold": 0.85},
                    "for": "1s",
                    "keepFiringFor": "1s",
                    "minSamples": 5,
                    "severity": "critical",
                    "actions": policy_actions if policy_actions is not None else list(actions),
                }
            ],
            "actions": actions,
            **extra,
        },
    }
