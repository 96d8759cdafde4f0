"""How monitors reach a Prometheus that wants credentials, and what Events cost, on the real sandbox.

A real Prometheus behind TLS (a serving certificate from a CA of the test's own) and basic auth (its web
config, which it re-reads on every request), scraping a real exporter; credentials in real Secrets; the
operator under its own least-privilege ServiceAccount (``get`` on Secrets, ``create``/``patch`` on Events, no
more). Shown here:

- a rotated basic-auth Secret is picked up after the TTL, the old credentials are no longer sent, and the old
  client's temporary PEM directory is gone;
- several monitors over several cycles read each Secret once per TTL (GETs counted by a wrapper around the real
  Kubernetes client, whose every call reaches the real API server);
- the same Event posted three times is one Event with count 3; one that expired is posted anew, its count carried
  on; messages of one reason that change every time are counted on one combined Event from the tenth on.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from actions_rig import crd_fixture, operator_account_fixture, operator_kubeconfig  # noqa: F401 (fixtures)
from kubernetes.config import new_client_from_config

from modelmonitor.actions import Remediator
from modelmonitor.adapters.alertmanager import HttpAlertSender
from modelmonitor.adapters.kubernetes import KubernetesClient, ObjectRef
from modelmonitor.loop import Evaluator, Registry
from modelmonitor.operator_metrics import OperatorMetrics
from modelmonitor.settings import OperatorSettings
from modelmonitor_sandbox.devcluster import pki
from support import Cluster, ExporterProcess, OperatorProcess, PrometheusProcess, wait_for

pytestmark = pytest.mark.cluster

# bcrypt (cost 5) of "first-password" and "second-password", as Prometheus' web config wants them; made once with
# `python -c 'import crypt; print(crypt.crypt("first-password", "$2b$05$abcdefghijklmnopqrstuu"))'`.
FIRST = ("monitor-a", "first-password", "$2b$05$abcdefghijklmnopqrstuuM3sQey8DZviRRkMjmk7wGr.7zlb4loC")
SECOND = ("monitor-b", "second-password", "$2b$05$abcdefghijklmnopqrstuuQQ3svipWaDLu5Kgwa3hvLrUP0FshBnK")
PEM_DIR_PREFIX = "modelmonitor-prometheus-"


@dataclass
class SecuredPrometheus:
    exporter: ExporterProcess
    prometheus: PrometheusProcess
    ca_pem: str
    tls: dict[str, str]

    def accept(self, *users: tuple[str, str, str]) -> None:
        """Let exactly these users in (Prometheus reads the file on the next request)."""
        self.prometheus.set_web_config(
            {"tls_server_config": self.tls, "basic_auth_users": {name: hashed for name, _, hashed in users}}
        )


@pytest.fixture
def secured(namespace: str, tmp_path: Path) -> Iterator[SecuredPrometheus]:
    # The sandbox's PKI module makes a CA and a serving certificate for 127.0.0.1: this Prometheus' own.
    certificates = pki.generate(tmp_path / "pki")
    tls = {"cert_file": str(certificates.serving_cert), "key_file": str(certificates.serving_key)}
    exporter = ExporterProcess(tmp_path)
    base = {"model": "fraud", "version": "v1", "group": "all"}
    exporter.set(
        [
            {"name": "modelmonitor_labeled_predictions_total", "labels": {**base, "outcome": "tp"}, "rate": 20},
            {"name": "modelmonitor_labeled_predictions_total", "labels": {**base, "outcome": "fp"}, "rate": 1},
        ]
    )
    web = {"tls_server_config": tls, "basic_auth_users": {FIRST[0]: FIRST[2], SECOND[0]: SECOND[2]}}
    prometheus = PrometheusProcess(tmp_path, [exporter.address], {"namespace": namespace}, web_config=web)
    yield SecuredPrometheus(exporter, prometheus, certificates.ca_cert.read_text(), tls)
    prometheus.stop()
    exporter.stop()


def put_secret(cluster: Cluster, namespace: str, name: str, data: Mapping[str, str]) -> None:
    """Create or replace a Secret, as `kubectl create secret ... | kubectl apply` would."""
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": dict(data)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def basic_auth(user: tuple[str, str, str]) -> dict[str, str]:
    return {"username": user[0], "password": user[1]}


def monitor(name: str, url: str, basic_secret: str = "prom-basic") -> str:
    return json.dumps(
        {
            "apiVersion": "modelmonitor.dev/v1alpha1",
            "kind": "ModelMonitor",
            "metadata": {"name": name},
            "spec": {
                "target": {"name": "fraud"},
                "model": {"name": "fraud"},
                "prometheus": {
                    "url": url,
                    "timeout": "3s",
                    "auth": {"basicAuthSecretRef": {"name": basic_secret}},
                    "tls": {"caSecretRef": {"name": "prom-ca"}},
                },
                "interval": "1s",
                "policies": [
                    {
                        "name": "accuracy-drop",
                        "signal": "accuracy",
                        "window": "10s",
                        "condition": {"op": "<", "threshold": 0.8},
                        "minSamples": 5,
                    }
                ],
            },
        }
    )


def policy(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status = cluster.kubectl_json("get", "modelmonitor", name, "-n", namespace).get("status") or {}
    return {
        "phase": status.get("phase"),
        "at": status.get("lastEvaluationTime", ""),
        **(status.get("policies") or [{}])[0],
    }


def evaluated_at(policy: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(policy["at"] or "1970-01-01T00:00:00Z").replace("Z", "+00:00"))


def pem_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith(PEM_DIR_PREFIX))


def test_a_rotated_secret_is_used_after_the_ttl_and_the_old_clients_files_are_gone(
    cluster: Cluster, crd: None, operator_account: str, namespace: str, tmp_path: Path, secured: SecuredPrometheus
) -> None:
    put_secret(cluster, namespace, "prom-ca", {"ca.crt": secured.ca_pem})
    put_secret(cluster, namespace, "prom-basic", basic_auth(FIRST))
    operator_tmp = tmp_path / "operator-tmp"
    operator_tmp.mkdir()
    env = {
        **os.environ,
        "KUBECONFIG": str(operator_kubeconfig(cluster, namespace, tmp_path)),
        "MODELMONITOR_SECRET_TTL_SECONDS": "2",
        # Every cycle's evaluation is written, so the test can wait for one made after a change of credentials.
        "MODELMONITOR_STATUS_HEARTBEAT_SECONDS": "0",
        "TMPDIR": str(operator_tmp),  # where the client writes the CA from the Secret for OpenSSL
    }
    env.pop("MODELMONITOR_PROMETHEUS_URL", None)
    operator = OperatorProcess(env, namespace, tmp_path)
    operator.start()
    try:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=monitor("fraud", secured.prometheus.url))
        first = wait_for(
            "the monitor to be Healthy through TLS and basic auth",
            lambda: (p := policy(cluster, namespace, "fraud"))["phase"] == "Healthy" and p.get("value") and p,
            timeout=90,
        )
        assert first["value"] == pytest.approx(20 / 21, abs=0.05)
        [old_dir] = pem_dirs(operator_tmp)
        assert (old_dir / "ca.pem").read_text() == secured.ca_pem

        put_secret(cluster, namespace, "prom-basic", basic_auth(SECOND))
        new_dirs = wait_for(
            "a new client for the rotated Secret, and the old one's PEM directory removed",
            lambda: (dirs := pem_dirs(operator_tmp)) and old_dir not in dirs and dirs,
            timeout=30,
        )
        assert len(new_dirs) == 1, new_dirs  # one client in use, nothing left behind

        # From now on only the new credentials get in: the monitor stays Healthy only if it sends them.
        secured.accept(SECOND)
        since = datetime.now(UTC) + timedelta(seconds=3)  # a few cycles later
        wait_for(
            "evaluations after the old user was removed",
            lambda: evaluated_at(policy(cluster, namespace, "fraud")) > since,
            timeout=30,
        )
        later = policy(cluster, namespace, "fraud")
        assert (later["phase"], later["lastOutcome"]) == ("Healthy", "OK"), later

        # And the web config is really enforced: with only the old user let in, the monitor cannot get in.
        secured.accept(FIRST)
        refused = wait_for(
            "an authentication error once the new user is refused",
            lambda: (p := policy(cluster, namespace, "fraud")).get("lastOutcome") == "Error" and p,
            timeout=30,
        )
        assert "401" in refused["message"], refused
    finally:
        operator.stop()
    assert pem_dirs(operator_tmp) == []  # a stopped operator closes its clients


class CountingKubernetes:
    """The real client, counting the Secret GETs that reach the API server."""

    def __init__(self, real: KubernetesClient) -> None:
        self.real = real
        self.secret_gets: Counter[str] = Counter()

    def patch_monitor_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.real.patch_monitor_status(namespace, name, status)

    def emit_event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None:
        self.real.emit_event(ref, event_type, reason, message)

    def read_secret(self, namespace: str, name: str) -> Mapping[str, bytes]:
        self.secret_gets[name] += 1
        return self.real.read_secret(namespace, name)


def test_many_monitors_over_many_cycles_read_each_secret_once_per_ttl(
    cluster: Cluster, crd: None, operator_account: str, namespace: str, tmp_path: Path, secured: SecuredPrometheus
) -> None:
    put_secret(cluster, namespace, "prom-ca", {"ca.crt": secured.ca_pem})
    put_secret(cluster, namespace, "prom-basic", basic_auth(FIRST))
    put_secret(cluster, namespace, "prom-basic-copy", basic_auth(FIRST))
    names = [f"fraud-{i}" for i in range(6)]
    for index, name in enumerate(names):
        secret = "prom-basic" if index < 4 else "prom-basic-copy"
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=monitor(name, secured.prometheus.url, secret))
    registry = Registry()
    for body in cluster.kubectl_json("get", "modelmonitors", "-n", namespace)["items"]:
        registry.upsert(body)
    assert len(registry) == 6

    # The operator's own identity (get on Secrets, nothing more), in this process so its calls can be counted.
    real = KubernetesClient(new_client_from_config(str(operator_kubeconfig(cluster, namespace, tmp_path))))
    kube = CountingKubernetes(real)
    ttl = 3.0
    evaluator = Evaluator(
        OperatorSettings(secret_ttl_seconds=ttl),
        registry,
        kube,
        Remediator(real, HttpAlertSender()),
        OperatorMetrics(),
    )
    cycles = 0
    try:
        started = time.monotonic()
        report = evaluator.cycle()
        assert report.evaluated == 6
        cycles += 1
        assert dict(kube.secret_gets) == {"prom-ca": 1, "prom-basic": 1, "prom-basic-copy": 1}
        # Equal credentials from two Secrets are equal settings: all six monitors share one client.
        assert evaluator.connections.open_clients == 1
        while cycles < 8:
            time.sleep(1.0 - time.time() % 1.0 + 0.05)  # monitors of interval 1s are due again
            assert evaluator.cycle().evaluated == 6
            cycles += 1
        elapsed = time.monotonic() - started
    finally:
        evaluator.close()

    # Before: 6 monitors x 8 cycles x 2 Secrets = 96 GETs. Now: each Secret once per TTL.
    most = int(elapsed // ttl) + 1
    assert all(2 <= gets <= most for gets in kube.secret_gets.values()), (dict(kube.secret_gets), elapsed)
    assert sum(kube.secret_gets.values()) <= 3 * most
    for name in names:  # and every monitor was measured through the secured Prometheus
        assert policy(cluster, namespace, name)["phase"] == "Healthy"


def test_the_same_event_three_times_is_one_event_counted_three_times(
    cluster: Cluster, crd: None, operator_account: str, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=monitor("fraud", "http://127.0.0.1:9"))
    uid = cluster.kubectl_json("get", "modelmonitor", "fraud", "-n", namespace)["metadata"]["uid"]
    # Posted with the operator's own identity: create and patch on Events are all it has.
    kube = KubernetesClient(new_client_from_config(str(operator_kubeconfig(cluster, namespace, tmp_path))))
    ref = ObjectRef(namespace, "fraud", uid)
    message = "policy accuracy-drop (accuracy) Pending -> Firing: 0.61 < 0.8 over 10m"

    def events() -> list[dict[str, Any]]:
        items = cluster.kubectl_json("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=fraud")
        return sorted(items["items"], key=lambda e: e["metadata"]["creationTimestamp"])

    for _ in range(3):
        kube.emit_event(ref, "Warning", "PolicyFiring", message)
        time.sleep(1.1)  # Event timestamps have whole seconds
    [event] = events()
    assert (event["count"], event["reason"], event["message"], event["type"]) == (3, "PolicyFiring", message, "Warning")
    assert event["involvedObject"]["uid"] == uid
    assert event["lastTimestamp"] > event["firstTimestamp"]

    kube.emit_event(ref, "Warning", "PolicyFiring", "policy accuracy-drop (accuracy) Pending -> Firing: 0.42 < 0.8")
    assert sorted(e["count"] for e in events()) == [1, 3]  # another message is another Event

    # An Event that expired (deleted here, as the API server's TTL would) is posted anew, its count carried on.
    cluster.kubectl("delete", "event", event["metadata"]["name"], "-n", namespace)
    kube.emit_event(ref, "Warning", "PolicyFiring", message)
    again = [e for e in events() if e["message"] == message]
    assert [(e["metadata"]["name"], e["count"]) for e in again] == [(event["metadata"]["name"], 4)]

    # A reason whose message changes every time (a flapping value) is counted on one combined Event from the tenth
    # distinct message on, instead of a new object each time.
    for value in range(12):
        kube.emit_event(ref, "Normal", "PolicyPending", f"policy accuracy-drop Inactive -> Pending: 0.{value}")
    pending = [e for e in events() if e["reason"] == "PolicyPending"]
    combined = [e for e in pending if e["message"].startswith("(combined from similar events): ")]
    assert len(pending) == 10, [(e["message"], e["count"]) for e in pending]
    assert [(e["count"], e["message"][-4:]) for e in combined] == [(3, "0.11")]
