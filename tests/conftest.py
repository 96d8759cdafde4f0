"""Shared fixtures: one real sandbox (control plane, kwok nodes, Prometheus, Alertmanager) per test run.

Tests marked `cluster` or `e2e` use it; `pytest -m "not cluster and not e2e"` runs the unit tests alone, in
seconds, without starting anything. The sandbox is reused when one is already running (and then left running);
one started here is stopped at the end unless MODELMONITOR_KEEP_CLUSTER=1.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator

import pytest

from modelmonitor_sandbox.devcluster import cluster as sandbox
from modelmonitor_sandbox.devcluster.build import kubectl_binary
from support import Cluster, wait_for


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    existing = sandbox.load_state()
    reused = existing is not None and sandbox.is_healthy(existing)
    state = sandbox.up(progress=lambda m: print(f"[sandbox] {m}", file=sys.stderr))
    yield Cluster(state, kubectl_binary())
    if not reused and os.environ.get("MODELMONITOR_KEEP_CLUSTER") != "1":
        sandbox.down(progress=lambda m: None)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test (with its default ServiceAccount in place), deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        f"the default ServiceAccount in {name}",
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        timeout=30,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
