"""The operator's identity: its ServiceAccount, bound with the RBAC from `modelmonitor.rbac`, can do what the
actions need in the namespace it watches, and nothing else (asked of the real API server with
``kubectl auth can-i --as``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from actions_rig import crd_fixture, operator_account_fixture, operator_kubeconfig  # noqa: F401 - fixtures

from support import Cluster

pytestmark = pytest.mark.cluster


def can(cluster: Cluster, who: str, verb: str, resource: str, namespace: str | None) -> bool:
    where = ["-n", namespace] if namespace else ["--all-namespaces"]
    resource, _, subresource = resource.partition("/")
    sub = [f"--subresource={subresource}"] if subresource else []
    answer = cluster.kubectl("auth", "can-i", verb, resource, *sub, *where, f"--as={who}", check=False)
    return answer.stdout.strip() == "yes"


def test_the_operator_can_do_its_job_in_the_watched_namespace_and_nothing_more(
    cluster: Cluster, operator_account: str, namespace: str, tmp_path: Path
) -> None:
    operator_kubeconfig(cluster, namespace, tmp_path)
    other = f"{namespace}-other"
    cluster.kubectl("create", "namespace", other)
    try:
        allowed = [
            ("watch", "modelmonitors.modelmonitor.dev"),
            ("patch", "modelmonitors.modelmonitor.dev/status"),
            ("create", "events"),
            ("get", "secrets"),
            ("patch", "deployments.apps"),
            ("update", "deployments.apps"),
            ("list", "replicasets.apps"),
            ("patch", "horizontalpodautoscalers.autoscaling"),
            ("create", "jobs.batch"),
            ("list", "pods"),
        ]
        for verb, resource in allowed:
            assert can(cluster, operator_account, verb, resource, namespace), f"cannot {verb} {resource}"

        denied = [
            ("get", "secrets", other),  # Secrets of namespaces it does not watch
            ("list", "secrets", namespace),  # only the Secrets a monitor names, by name
            ("create", "pods", namespace),  # pods only through Jobs
            ("delete", "deployments.apps", namespace),
            ("delete", "jobs.batch", namespace),
            ("create", "jobs.batch", other),
            ("patch", "deployments.apps", other),
            ("create", "rolebindings.rbac.authorization.k8s.io", namespace),
            ("create", "serviceaccounts/token", namespace),
            ("update", "modelmonitors.modelmonitor.dev", namespace),  # reads specs, never rewrites them
            ("list", "nodes", None),
        ]
        for verb, resource, where in denied:
            assert not can(cluster, operator_account, verb, resource, where), f"may {verb} {resource} in {where}"
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_the_kubeconfig_authenticates_as_the_service_account_not_as_admin(
    cluster: Cluster, operator_account: str, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = operator_kubeconfig(cluster, namespace, tmp_path)
    import subprocess

    whoami = subprocess.run(
        [
            str(cluster.kubectl_path),
            f"--kubeconfig={kubeconfig}",
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert whoami == operator_account
    forbidden = subprocess.run(
        [str(cluster.kubectl_path), f"--kubeconfig={kubeconfig}", "get", "secrets", "-n", "kube-system"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert forbidden.returncode != 0 and "forbidden" in forbidden.stderr
