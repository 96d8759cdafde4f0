"""A start that cannot complete is loud: `modelmonitor run` exits non-zero within seconds with a message naming
what failed (the metrics port, the kubeconfig, the API server, the CRD), and evaluates nothing.

Real processes against the real sandbox: the operator under its own ServiceAccount, a real socket holding the
metrics port, kubeconfigs that are missing, not YAML or pointing at a closed port, and the fault proxy answering
404 for the ModelMonitor API group, as an API server without the CRD does.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from actions_rig import crd_fixture, monitor, operator_account_fixture, operator_kubeconfig  # noqa: F401 - fixtures

from faultproxy import Fault, FaultProxy
from support import Cluster

pytestmark = pytest.mark.cluster


def run_operator(kubeconfig: Path, namespace: str, metrics_address: str, timeout: float = 30) -> tuple[int, str]:
    """Run `modelmonitor run`; it must exit by itself within ``timeout`` seconds. Returns (exit code, output)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "MODELMONITOR_METRICS_ADDRESS": metrics_address}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "modelmonitor", "run", "--namespace", namespace],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the operator did not exit within {timeout:.0f} s: {exc.stderr!r}") from None
    return done.returncode, done.stdout + done.stderr


def free_address() -> str:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return f"127.0.0.1:{probe.getsockname()[1]}"


def apply_monitor(cluster: Cluster, namespace: str) -> None:
    scale = {"type": "scale", "step": 1, "maxReplicas": 3}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(monitor({"scaleUp": scale})))


def test_metrics_port_in_use(
    cluster: Cluster, crd: None, operator_account: str, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = operator_kubeconfig(cluster, namespace, tmp_path)
    apply_monitor(cluster, namespace)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        code, output = run_operator(kubeconfig, namespace, address)
    assert code == 1, output
    assert f"cannot serve /metrics and /healthz on {address}" in output and "Address already in use" in output, output
    status = cluster.kubectl_json("get", "modelmonitor", "fraud", "-n", namespace).get("status")
    assert not status, f"an operator that could not start evaluated the monitor: {status}"


@pytest.mark.parametrize("problem", ["missing", "not-yaml", "closed-port"])
def test_bad_kubeconfig(cluster: Cluster, problem: str, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "operator.kubeconfig"
    if problem == "not-yaml":
        kubeconfig.write_text("clusters: [\n")
    elif problem == "closed-port":
        closed = free_address()
        kubeconfig.write_text(cluster.kubeconfig.read_text().replace(cluster.state.server, f"https://{closed}"))
    code, output = run_operator(kubeconfig, "default", free_address())
    assert code == 1, output
    if problem == "closed-port":
        assert f"cannot reach the API server at https://{closed}" in output, output
        assert f"configured by the kubeconfig {kubeconfig}" in output, output
    else:
        assert f"cannot load the kubeconfig {kubeconfig}" in output, output


def test_crd_missing(cluster: Cluster, crd: None, operator_account: str, namespace: str, tmp_path: Path) -> None:
    kubeconfig = operator_kubeconfig(cluster, namespace, tmp_path)
    with FaultProxy(cluster.state.server, Path(cluster.state.root) / "pki") as proxy:
        # What an API server without the CRD answers for the ModelMonitor group's discovery document.
        proxy.add(Fault("no-crd", method="GET", path=r"^/apis/modelmonitor\.dev/v1alpha1$", status=404))
        code, output = run_operator(
            proxy.kubeconfig(kubeconfig, tmp_path / "proxied.kubeconfig"), namespace, free_address()
        )
        assert proxy.injected["no-crd"] >= 1
    assert code == 1, output
    assert "the ModelMonitor CRD is not installed" in output and proxy.url in output, output
