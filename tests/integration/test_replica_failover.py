"""Two operator replicas sharing the monitors by Leases, on the real sandbox, as real processes under the operator's
own least-privilege ServiceAccount: both take work, a killed one is replaced, no action is ever taken twice, and a
replica cut off from the API server stops acting.

Kills come two ways: SIGKILL of a replica (the first test), and the project's crash hook
(``MODELMONITOR_TEST_CRASH_AT``, docs/actions.md), which ends the replica with ``os._exit`` exactly between
recording an action as Pending and changing the cluster (``before-act``) or just after the change
(``after-act``): a SIGKILL at the worst instant, without a race in the test. The replica's monitor is chosen so
that the replica armed with the hook owns it (rendezvous hashing over the two replica names, as the operator
computes it).

The API server is made unreachable for one replica alone through a loopback TCP proxy in front of it that the
test cuts (the replica's kubeconfig points at the proxy; TLS goes through it untouched).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from actions_rig import (  # noqa: F401 - fixtures
    OPERATOR_NAMESPACE,
    crd_fixture,
    deployment,
    monitor,
    operator_account_fixture,
    operator_kubeconfig,
    operator_process,
)

from modelmonitor.sharding import owner_of
from support import Cluster, ExporterProcess, OperatorProcess, PrometheusProcess, http_get, wait_for

pytestmark = pytest.mark.cluster

#: Shorter Lease timings for the trials (the defaults, 15/10/2 s, are shown by the first test); not shorter, so
#: that renewals keep up on a machine shared with other work.
FAST_LEASES = {
    "MODELMONITOR_LEASE_DURATION_SECONDS": "6",
    "MODELMONITOR_LEASE_RENEW_DEADLINE_SECONDS": "4",
    "MODELMONITOR_LEASE_RETRY_PERIOD_SECONDS": "1",
}


# --- the rig ---------------------------------------------------------------------------------------------------


class Fleet:
    """The exporter's series for many models at once: each model healthy or broken."""

    def __init__(self, exporter: ExporterProcess) -> None:
        self.exporter = exporter
        self.models: dict[str, tuple[float, float]] = {}

    def set(self, models: list[str], *, broken: bool) -> None:
        for model in models:
            self.models[model] = (2.0, 20.0) if broken else (20.0, 0.0)
        base = {"version": "v1", "group": "all"}
        self.exporter.set(
            [
                {
                    "name": "modelmonitor_labeled_predictions_total",
                    "labels": {**base, "model": model, "outcome": outcome},
                    "rate": rate,
                }
                for model, (good, bad) in self.models.items()
                for outcome, rate in (("tp", good), ("fp", bad))
            ]
        )


@dataclass
class Replicas:
    cluster: Cluster
    namespace: str
    fleet: Fleet
    a: OperatorProcess
    b: OperatorProcess

    @property
    def names(self) -> tuple[str, str]:
        return (self.a.replica, self.b.replica)

    def owner(self, name: str) -> str | None:
        """The replica rendezvous hashing gives the monitor ``name`` while both are live."""
        return owner_of(self.namespace, name, self.names)

    def name_owned_by(self, prefix: str, replica: str) -> str:
        """The first name ``<prefix>-<n>`` that goes to ``replica``."""
        return next(f"{prefix}-{n}" for n in range(100) if self.owner(f"{prefix}-{n}") == replica)

    def leases(self) -> list[str]:
        """This test's replicas' Leases in the operator's namespace."""
        items = self.cluster.kubectl_json("get", "leases", "-n", OPERATOR_NAMESPACE)["items"]
        return [i["metadata"]["name"] for i in items if i["metadata"]["name"] in self.names]

    def apply(self, *manifests: dict[str, Any] | str) -> None:
        for manifest in manifests:
            text = manifest if isinstance(manifest, str) else json.dumps(manifest)
            self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input=text)

    def statuses(self) -> dict[str, dict[str, Any]]:
        items = self.cluster.kubectl_json("get", "modelmonitors", "-n", self.namespace)["items"]
        return {i["metadata"]["name"]: dict(i.get("status") or {}) for i in items}

    def status(self, name: str) -> dict[str, Any]:
        return self.statuses().get(name, {})

    def records(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.status(name).get("actions") or [] if a.get("name") == "act"]

    def final_record(self, name: str, timeout: float = 60) -> dict[str, Any]:
        return dict(
            wait_for(
                f"a final record of {name}'s action",
                lambda: next((r for r in self.records(name) if r["result"] in ("Succeeded", "Failed")), None),
                timeout=timeout,
            )
        )


def gauge(operator: OperatorProcess, name: str) -> float | None:
    """One unlabelled gauge from a replica's /metrics (None while it does not answer)."""
    body = http_get(f"http://127.0.0.1:{operator.metrics_port}/metrics")
    if body is None:
        return None
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def owned(operator: OperatorProcess) -> int:
    return int(gauge(operator, "modelmonitor_operator_monitors_owned") or 0)


@contextlib.contextmanager
def start_replicas(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    extra_env: dict[str, str] | None = None,
    kubeconfig_a: Path | None = None,
) -> Iterator[Replicas]:
    exporter = ExporterProcess(tmp_path)
    prometheus = PrometheusProcess(tmp_path, [exporter.address], {"namespace": namespace})
    kubeconfig = operator_kubeconfig(cluster, namespace, tmp_path)
    a, b = (
        operator_process(config, namespace, tmp_path, prometheus.url, replica=f"{namespace}-{x}", extra_env=extra_env)
        for config, x in ((kubeconfig_a or kubeconfig, "a"), (kubeconfig, "b"))
    )
    rig = Replicas(cluster, namespace, Fleet(exporter), a, b)
    try:
        yield rig
    finally:
        running = {p.replica for p in (a, b) if p.process is not None}
        for process in (a, b, prometheus, exporter):
            process.stop()
    # Stopped cleanly, a replica deletes its Lease on the way out (a killed one's stays until it expires).
    assert not running & set(rig.leases()), rig.leases()


# --- both replicas take work; a killed one is replaced -------------------------------------------------------


def test_two_replicas_share_the_monitors_and_a_killed_one_is_replaced_within_20_s(
    cluster: Cluster, crd: None, operator_account: str, namespace: str, tmp_path: Path
) -> None:
    """Default Lease timings (15 s / 10 s / 2 s). After a SIGKILL, a breach of every model is caught within 20 s:
    the survivor evaluates the dead replica's monitors again."""
    with start_replicas(cluster, namespace, tmp_path) as rig:
        models = [f"m{i:02d}" for i in range(24)]
        rig.fleet.set(models, broken=False)
        rig.a.start()
        rig.b.start()
        rig.apply(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": [monitor({}, name=m, model=m) for m in models]})
        )
        wait_for(
            "every monitor Healthy",
            lambda: [s.get("phase") for s in rig.statuses().values()].count("Healthy") == len(models),
            timeout=90,
        )
        shares = wait_for(
            "both replicas to carry a share",
            lambda: (s := (owned(rig.a), owned(rig.b))) and s[0] + s[1] == len(models) and min(s) > 0 and s,
            timeout=30,
        )
        expected = sum(1 for m in models if rig.owner(m) == rig.a.replica)
        assert shares == (expected, len(models) - expected), "the share rendezvous hashing gives each"

        rig.a.kill()
        killed = time.time()
        rig.fleet.set(models, broken=True)
        firing = wait_for(
            "every monitor Firing, the killed replica's too",
            lambda: (s := rig.statuses()) and [x.get("phase") for x in s.values()].count("Firing") == len(models) and s,
            timeout=40,
        )
        # The evaluation that first saw the breach (its episode's activeSince, floored to the second): for the killed
        # replica's monitors, the survivor's first evaluation of them.
        evaluated = [
            datetime.fromisoformat(p["activeSince"].replace("Z", "+00:00")).timestamp()
            for s in firing.values()
            for p in s["policies"]
        ]
        took = max(evaluated) - killed
        assert took <= 20, f"the killed replica's monitors were evaluated again only {took:.1f} s after the kill"
        assert owned(rig.b) == len(models)


# --- no duplicate action over 21 kill-and-failover trials -----------------------------------------------------

TRAINING_JOB = {
    "spec": {
        "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "train", "image": "trainer:v1"}]}},
    }
}
ACTIONS: dict[str, dict[str, Any]] = {
    "scale": {"type": "scale", "step": 1, "maxReplicas": 5, "cooldown": "1h"},
    "retrain": {"type": "retrain", "serviceAccountName": "trainer", "jobTemplate": TRAINING_JOB},
    "rollback": {"type": "rollback", "settlePeriod": "3s", "cooldown": "0s"},
}
#: (action type, crash point) of each trial: any three consecutive trials differ in type, so a replica armed for
#: its next trial never crashes finishing the other's action, nor on the one before.
TRIALS = [(kind, point) for _ in range(4) for point in ("before-act", "after-act") for kind in ACTIONS][:21]


def jobs_of(rig: Replicas, name: str) -> list[str]:
    items = rig.cluster.kubectl_json("get", "jobs", "-n", rig.namespace)["items"]
    return [
        j["metadata"]["name"]
        for j in items
        if any(o.get("name") == name for o in j["metadata"].get("ownerReferences") or [])
    ]


def revisions(rig: Replicas, name: str) -> list[str]:
    history = rig.cluster.kubectl("rollout", "history", "-n", rig.namespace, f"deployment/{name}").stdout
    return [line.split()[0] for line in history.splitlines() if line[:1].isdigit()]


def test_no_action_is_taken_twice_over_21_kill_and_failover_trials(
    cluster: Cluster, crd: None, operator_account: str, namespace: str, tmp_path: Path
) -> None:
    """Each trial: the replica that owns a firing monitor dies in the middle of its scale step, retraining Job or
    rollback; the other replica takes the monitor over and finishes the action, exactly once."""
    cluster.kubectl("create", "serviceaccount", "trainer", "-n", namespace)
    with start_replicas(cluster, namespace, tmp_path, FAST_LEASES) as rig:
        replica = {rig.a.replica: rig.a, rig.b.replica: rig.b}
        victims = [rig.names[i % 2] for i in range(len(TRIALS))]
        names = [rig.name_owned_by(f"t{i:02d}", v) for i, v in enumerate(victims)]
        rig.fleet.set(names, broken=False)
        for i, (kind, _point) in enumerate(TRIALS):
            rig.apply(deployment(names[i], image="model:v1"))
            rig.apply(monitor({"act": ACTIONS[kind]}, name=names[i], model=names[i]))
        # Each replica starts armed for its first trial.
        rig.a.start(crash_at=f"{TRIALS[0][1]}:{TRIALS[0][0]}")
        rig.b.start(crash_at=f"{TRIALS[1][1]}:{TRIALS[1][0]}")
        wait_for(
            "every rollback monitor's last-known-good",
            lambda: all(
                rig.status(n).get("lastKnownGood") for n, (k, _) in zip(names, TRIALS, strict=True) if k == "rollback"
            ),
            timeout=120,
        )
        restarts: dict[str, threading.Thread] = {}
        for i, (kind, point) in enumerate(TRIALS):
            name, victim = names[i], replica[victims[i]]
            if victims[i] in restarts:
                restarts.pop(victims[i]).join()
            if kind == "rollback":
                cluster.kubectl("set", "image", "-n", namespace, f"deployment/{name}", "model=model:v2")
            rig.fleet.set([name], broken=True)
            victim.wait_for_crash(timeout=60)
            record = rig.final_record(name)
            assert record["result"] == "Succeeded", (i, kind, point, record)
            # Armed for its next trial (two on), the replica comes back while the other one carries on.
            following = TRIALS[i + 2] if i + 2 < len(TRIALS) else None
            arm = f"{following[1]}:{following[0]}" if following else None
            restarts[victims[i]] = threading.Thread(target=victim.start, kwargs={"crash_at": arm})
            restarts[victims[i]].start()
            if kind == "scale":
                assert int(cluster.kubectl_json("get", "deployment", name, "-n", namespace)["spec"]["replicas"]) == 2
            elif kind == "retrain":
                assert len(jobs_of(rig, name)) == 1, (i, point, jobs_of(rig, name))
            else:
                assert revisions(rig, name) == ["2", "3"], (i, point, revisions(rig, name))
        for thread in restarts.values():
            thread.join()
        time.sleep(3)  # a few more cycles of every still-firing policy on both replicas
        for i, (kind, point) in enumerate(TRIALS):
            results = [r["result"] for r in rig.records(names[i]) if r["result"] != "Skipped"]
            assert results == ["Succeeded"], (i, kind, point, rig.records(names[i]))
        scaled = [n for n, (k, _) in zip(names, TRIALS, strict=True) if k == "scale"]
        assert all(
            int(cluster.kubectl_json("get", "deployment", n, "-n", namespace)["spec"]["replicas"]) == 2 for n in scaled
        ), "exactly one scale step each"
        retrained = [n for n, (k, _) in zip(names, TRIALS, strict=True) if k == "retrain"]
        assert all(len(jobs_of(rig, n)) == 1 for n in retrained), "exactly one Job each"


# --- a replica that cannot reach the API server stops acting --------------------------------------------------


class CuttableProxy:
    """A loopback TCP proxy to the API server; `cut` drops its connections and refuses new ones until `restore`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.server.close()


def test_a_replica_cut_off_from_the_api_server_stops_acting_and_the_other_takes_over(
    cluster: Cluster, crd: None, operator_account: str, namespace: str, tmp_path: Path
) -> None:
    server = urlparse(cluster.state.server)
    proxy = CuttableProxy((server.hostname or "127.0.0.1", server.port or 443))
    direct = operator_kubeconfig(cluster, namespace, tmp_path)
    through_proxy = tmp_path / "proxied.kubeconfig"
    config = json.loads(direct.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    through_proxy.write_text(json.dumps(config))
    try:
        with start_replicas(cluster, namespace, tmp_path, FAST_LEASES, kubeconfig_a=through_proxy) as rig:
            models = [f"c{i:02d}" for i in range(12)]
            rig.fleet.set(models, broken=False)
            rig.a.start()
            rig.b.start()
            rig.apply(
                json.dumps(
                    {"apiVersion": "v1", "kind": "List", "items": [monitor({}, name=m, model=m) for m in models]}
                )
            )
            wait_for(
                "every monitor Healthy, both replicas carrying a share",
                lambda: (
                    [s.get("phase") for s in rig.statuses().values()].count("Healthy") == len(models)
                    and owned(rig.a) > 0
                    and owned(rig.a) + owned(rig.b) == len(models)
                ),
                timeout=90,
            )
            assert gauge(rig.a, "modelmonitor_operator_lease_acting") == 1

            proxy.cut()
            cut = time.monotonic()
            samples: list[tuple[float, float | None, int, int]] = []  # (seconds after the cut, acting, a's, b's)
            while time.monotonic() - cut < 20 and not (samples and samples[-1][3] == len(models)):
                samples.append(
                    (
                        time.monotonic() - cut,
                        gauge(rig.a, "modelmonitor_operator_lease_acting"),
                        owned(rig.a),
                        owned(rig.b),
                    )
                )
                time.sleep(0.2)
            stopped = next((t for t, acting, _a, _b in samples if acting == 0), None)
            assert stopped is not None and stopped <= 4 + 1.5, (
                f"a still acting after the renew deadline (4 s): {samples}"
            )
            assert samples[-1][3] == len(models), f"b did not take every monitor over: {samples}"
            assert all(a + b <= len(models) for _t, _acting, a, b in samples), f"both claimed a monitor: {samples}"
            rig.fleet.set(models, broken=True)
            wait_for(
                "every monitor Firing, evaluated by b alone",
                lambda: [s.get("phase") for s in rig.statuses().values()].count("Firing") == len(models),
                timeout=30,
            )
            assert "does not act" in rig.a.log_text()

            proxy.restore()
            wait_for(
                "replica a back with its share",
                lambda: owned(rig.a) > 0 and owned(rig.a) + owned(rig.b) == len(models),
                timeout=30,
            )
    finally:
        proxy.close()
