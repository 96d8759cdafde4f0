"""Prometheus answering badly: slow, trickling, truncated, garbage, an HTML error page, the wrong shape, or a
256 MiB answer. The real operator process (its own ServiceAccount) evaluates one monitor per kind of bad answer
against a fake Prometheus (tests/faultyprometheus.py); each policy would breach on any number it could read, and
each monitor may scale its own Deployment and page the real Alertmanager.

What a user sees: every such policy is Error (or NoData for an empty answer), with a message naming the
problem; no Deployment changes, no action record, no firing alert; the operator's memory stays bounded while it
is offered 256 MiB answers. The control monitor, answered well, acts: the answers do reach the operator.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from actions_rig import Rig, crd_fixture, deployment, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from faultyprometheus import FaultyPrometheus
from support import wait_for

pytestmark = pytest.mark.cluster

# mode -> (state, a part of the policy's message)
EXPECTED = {
    "empty": ("NoData", ""),
    "slow": ("Error", "timeout: no answer from"),
    "trickle": ("Error", "timeout: no complete answer from"),
    "truncated": ("Error", "connection: the answer from"),
    "garbage": ("Error", "badResponse: the answer is not a Prometheus API JSON object"),
    "html": ("Error", "http: HTTP 502"),
    "wrongshape": ("Error", "badResponse: malformed answer: data.result of a vector is not a list"),
    "huge": ("Error", "over the limit of 67108864 bytes (64 MiB)"),
}
#: The operator's resident memory may not grow by more than this while it is offered 256 MiB answers.
RSS_GROWTH_LIMIT = 150 * 1024 * 1024


@pytest.fixture
def prometheus() -> Iterator[FaultyPrometheus]:
    server = FaultyPrometheus(slow_seconds=10)
    yield server
    server.close()


def faulty_monitor(mode: str, prometheus_url: str, alertmanager_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelmonitor.dev/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": mode},
        "spec": {
            "target": {"name": mode},
            "model": {"name": "fraud"},
            # Long enough for the huge answer to reach the size limit before the timeout.
            "prometheus": {"url": f"{prometheus_url}/{mode}", "timeout": "20s" if mode == "huge" else "2s"},
            "interval": "2s",
            "policies": [
                {
                    "name": "backlog",
                    "query": "max(queue_depth{model={{model}}})",
                    "window": "4s",
                    "condition": {"op": ">", "threshold": 1},
                    "severity": "critical",
                    "actions": ["scaleUp", "page"],
                }
            ],
            "actions": {
                "scaleUp": {"type": "scale", "step": 1, "maxReplicas": 3, "cooldown": "0s"},
                "page": {"type": "alert", "alertmanager": {"url": alertmanager_url}, "resendInterval": "2s"},
            },
        },
    }


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def firing_alerts(rig: Rig) -> list[str]:
    with urllib.request.urlopen(f"{rig.cluster.alertmanager_url}/api/v2/alerts", timeout=5) as response:
        alerts = json.loads(response.read())
    return sorted(
        a["labels"]["monitor"]
        for a in alerts
        if a["labels"].get("namespace") == rig.namespace and a["labels"].get("alertname") == "ModelMonitorPolicyFiring"
    )


def test_bad_answers_are_errors_never_actions(rig: Rig, prometheus: FaultyPrometheus) -> None:
    modes = ["breach", *EXPECTED]
    for mode in modes:
        rig.apply(deployment(mode, replicas=1))
    rig.operator.start()
    process = rig.operator.process
    assert process is not None
    baseline = rss_bytes(process.pid)
    for mode in modes:
        rig.apply(faulty_monitor(mode, prometheus.url, rig.cluster.alertmanager_url))

    def policy(mode: str) -> dict[str, Any]:
        return next(iter(rig.status(mode).get("policies") or []), {})

    peak = baseline
    deadline = time.monotonic() + 60
    # Until every faulty monitor has been evaluated at least three times (Degraded from the third error on).
    while time.monotonic() < deadline:
        peak = max(peak, rss_bytes(process.pid))
        if all(prometheus.served[mode] >= 3 for mode in EXPECTED) and all(
            policy(mode).get("state") == state for mode, (state, _) in EXPECTED.items()
        ):
            break
        time.sleep(0.5)
    peak = max(peak, rss_bytes(process.pid))
    for mode, (state, message) in EXPECTED.items():
        seen = policy(mode)
        assert seen.get("state") == state and message in str(seen.get("message", "")), (mode, seen)
        assert not rig.records("scaleUp", mode) and not rig.records("page", mode), (mode, rig.status(mode))
        assert rig.get("deployment", mode)["spec"]["replicas"] == 1, mode
    assert prometheus.served["huge"] >= 3
    assert peak - baseline < RSS_GROWTH_LIMIT, f"RSS grew from {baseline >> 20} MiB to {peak >> 20} MiB"

    # The control: a readable answer over the threshold scales and pages.
    wait_for("the control monitor to scale", lambda: rig.get("deployment", "breach")["spec"]["replicas"] > 1, 60)
    assert wait_for("the control's alert", lambda: firing_alerts(rig), timeout=30) == ["breach"]
    print(f"operator RSS: {baseline >> 20} MiB at start, {peak >> 20} MiB at most; served {dict(prometheus.served)}")
