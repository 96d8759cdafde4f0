"""Fakes for the actions' unit tests: an in-memory API server (`FakeCluster`, the `Workloads` protocol), a
recording alert sender, and `Scenario`, which runs the remediator the way the evaluation loop does (evaluate
with the real policy engine, act, render status) with an injected clock.

The fake keeps what the real API server guarantees and the actions rely on: resourceVersion preconditions on
PUT and on merge patches (409), AlreadyExists on create (409), NotFound (404), label selectors, JSON merge
patch semantics, and a tiny Deployment controller (`roll_out`) that labels each template with a hash and
renumbers a restored ReplicaSet as the newest revision.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from modelmonitor.actions import ActionsOutcome, MonitorContext, Remediator
from modelmonitor.actions.testhooks import CrashHook
from modelmonitor.adapters.alertmanager import AlertError
from modelmonitor.adapters.kubernetes import DEPLOYMENT, REPLICASET, Kind, KubernetesError
from modelmonitor.adapters.registry import RegistryConnections
from modelmonitor.policy import Measurement, format_time
from modelmonitor.reconcile import monitor_from_body, reconcile

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
NS = "ml"
OPERATOR = "system:serviceaccount:modelmonitor-system:modelmonitor"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeCluster:
    """An in-memory API server for the kinds the actions use."""

    def __init__(self, me: str = OPERATOR) -> None:
        self.objects: dict[tuple[Kind, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name), writes only, in order
        self.me = me
        self.now = T0
        self._rv = 100
        self.fail_next: dict[tuple[str, str], KubernetesError] = {}  # (verb, kind) -> error raised once
        self.reads: dict[str, int] = {}  # kind -> gets and lists

    # --- the Workloads protocol -------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _fail(self, verb: str, kind: Kind) -> None:
        if verb in ("get", "list"):
            self.reads[kind.kind] = self.reads.get(kind.kind, 0) + 1
        error = self.fail_next.pop((verb, kind.kind), None)
        if error is not None:
            raise error

    def get(self, kind: Kind, namespace: str, name: str, *, subresource: str = "") -> dict[str, Any]:
        self._fail("get", kind)
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            raise KubernetesError(f"reading {kind.kind} {namespace}/{name}", 404, "not found")
        if subresource == "scale":
            return {
                "metadata": {"name": name, "resourceVersion": obj["metadata"]["resourceVersion"]},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            }
        return copy.deepcopy(obj)

    def list(self, kind: Kind, namespace: str, *, label_selector: str = "") -> list[dict[str, Any]]:
        self._fail("list", kind)
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)
        found = []
        for (k, ns, _name), obj in sorted(self.objects.items(), key=lambda kv: kv[0][2]):
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if k == kind and ns == namespace and all(labels.get(a) == b for a, b in wanted.items()):
                found.append(copy.deepcopy(obj))
        return found

    def create(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._fail("create", kind)
        name = body["metadata"]["name"]
        if (kind, namespace, name) in self.objects:
            raise KubernetesError(f"creating {kind.kind} {namespace}/{name}", 409, "already exists")
        obj = copy.deepcopy(dict(body))
        meta = obj["metadata"]
        meta.update(
            namespace=namespace,
            resourceVersion=self._next_rv(),
            uid=f"uid-{name}",
            generation=1,
            creationTimestamp=format_time(self.now),
        )
        self.objects[(kind, namespace, name)] = obj
        self.calls.append(("create", kind.kind, name))
        return copy.deepcopy(obj)

    def _store(self, kind: Kind, namespace: str, name: str, new: dict[str, Any], old: dict[str, Any]) -> None:
        new["metadata"]["resourceVersion"] = self._next_rv()
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
        new["status"] = old.get("status", {})
        self.objects[(kind, namespace, name)] = new

    def replace(self, kind: Kind, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._fail("replace", kind)
        old = self.objects.get((kind, namespace, name))
        if old is None:
            raise KubernetesError(f"replacing {kind.kind} {namespace}/{name}", 404, "not found")
        if body["metadata"].get("resourceVersion") != old["metadata"]["resourceVersion"]:
            raise KubernetesError(f"replacing {kind.kind} {namespace}/{name}", 409, "the object has been modified")
        new = copy.deepcopy(dict(body))
        self._store(kind, namespace, name, new, old)
        self.calls.append(("replace", kind.kind, name))
        return copy.deepcopy(new)

    def patch(
        self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        self._fail("patch", kind)
        old = self.objects.get((kind, namespace, name))
        if old is None:
            raise KubernetesError(f"patching {kind.kind} {namespace}/{name}", 404, "not found")
        wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and wanted_rv != old["metadata"]["resourceVersion"]:
            raise KubernetesError(f"patching {kind.kind} {namespace}/{name}", 409, "the object has been modified")
        if subresource == "scale":
            patch = {"spec": {"replicas": patch["spec"]["replicas"]}}
        new = merge_patch(old, patch)
        self._store(kind, namespace, name, new, old)
        self.calls.append((f"patch/{subresource}" if subresource else "patch", kind.kind, name))
        return copy.deepcopy(new)

    def whoami(self) -> str:
        return self.me

    # --- test helpers -----------------------------------------------------------------------------------------

    def put(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as a person would have created it."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", NS)
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", format_time(self.now))
        meta["resourceVersion"] = self._next_rv()
        self.objects[(kind, meta["namespace"], meta["name"])] = obj
        return obj

    def obj(self, kind: Kind, name: str, namespace: str = NS) -> dict[str, Any]:
        return self.objects[(kind, namespace, name)]

    def writes(self, kind: str | None = None) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if kind is None or c[1] == kind]


def deployment(
    name: str = "fraud", *, replicas: int = 2, image: str = "model:v1", env: dict[str, str] | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "model", "image": image}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        },
    }


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def roll_out(cluster: FakeCluster, name: str = "fraud", *, complete: bool = True) -> str:
    """What the Deployment controller does after a template change; returns the live template hash."""
    deploy = cluster.obj(DEPLOYMENT, name)
    template = deploy["spec"]["template"]
    digest = template_hash(template)
    owned = [
        rs
        for (kind, _ns, _n), rs in cluster.objects.items()
        if kind == REPLICASET and rs["metadata"]["ownerReferences"][0]["uid"] == deploy["metadata"]["uid"]
    ]
    newest = max((int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) for rs in owned), default=0)
    existing = next((rs for rs in owned if rs["metadata"]["labels"]["pod-template-hash"] == digest), None)
    current = int(deploy["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", "0"))
    revision = (
        current
        if existing is not None
        and int(existing["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) == current
        else newest + 1
    )
    if existing is None:
        rs_template = copy.deepcopy(template)
        rs_template["metadata"]["labels"]["pod-template-hash"] = digest
        existing = cluster.put(
            REPLICASET,
            {
                "metadata": {
                    "name": f"{name}-{digest}",
                    "labels": {**template["metadata"]["labels"], "pod-template-hash": digest},
                    "annotations": {},
                    "ownerReferences": [{"kind": "Deployment", "name": name, "uid": deploy["metadata"]["uid"]}],
                },
                "spec": {"template": rs_template},
            },
        )
    existing["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = str(revision)
    deploy["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = str(revision)
    replicas = deploy["spec"].get("replicas", 1)
    deploy["status"] = {
        "observedGeneration": deploy["metadata"].get("generation", 1),
        "replicas": replicas,
        "updatedReplicas": replicas if complete else 0,
        "availableReplicas": replicas if complete else 0,
        "conditions": [
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                "lastUpdateTime": format_time(cluster.now),
                "lastTransitionTime": format_time(cluster.now),
            }
        ],
    }
    return digest


def finish_job(
    cluster: FakeCluster, name: str, outcome: str = "Complete", *, annotations: dict[str, str] | None = None
) -> None:
    """What the Job controller does when the Job's pod ends."""
    from modelmonitor.adapters.kubernetes import JOB

    job = cluster.obj(JOB, name)
    job["metadata"].setdefault("annotations", {}).update(annotations or {})
    job["status"] = {
        "conditions": [
            {"type": outcome, "status": "True", "reason": "BackoffLimitExceeded" if outcome == "Failed" else ""}
        ],
        "completionTime": format_time(cluster.now),
    }


@dataclass
class FakeSender:
    """Records what would have been posted; `down` makes every post fail."""

    alerts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    webhooks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    down: bool = False

    def post_alerts(self, alertmanager_url: str, alerts: Any) -> None:
        if self.down:
            raise AlertError(f"posting to Alertmanager {alertmanager_url}: connection refused")
        self.alerts.extend((alertmanager_url, dict(a)) for a in alerts)

    def post_webhook(self, url: str, payload: Any) -> None:
        if self.down:
            raise AlertError(f"posting to the webhook {url}: connection refused")
        self.webhooks.append((url, dict(payload)))


def monitor_spec(actions: dict[str, Any], *, policy_actions: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A raw ModelMonitor spec: one accuracy policy (for 0s, so a breach fires at once) naming ``actions``."""
    return {
        "target": {"name": "fraud"},
        "model": {"name": "fraud"},
        "interval": "10s",
        "policies": [
            {
                "name": "accuracy-drop",
                "signal": "accuracy",
                "window": "5m",
                "condition": {"op": "<", "threshold": 0.8},
                "for": "0s",
                "severity": "critical",
                "actions": policy_actions if policy_actions is not None else list(actions),
            }
        ],
        "actions": actions,
        **extra,
    }


class CheckpointFailed(RuntimeError):
    pass


class Scenario:
    """The remediator driven cycle by cycle as the loop drives it, on a fake clock."""

    def __init__(
        self,
        spec: dict[str, Any],
        cluster: FakeCluster | None = None,
        sender: FakeSender | None = None,
        *,
        crash: CrashHook | None = None,
        registries: RegistryConnections | None = None,
    ) -> None:
        self.raw = spec
        self.cluster = cluster or FakeCluster()
        self.sender = sender or FakeSender()
        self.seconds = 0.0
        self.remediator = Remediator(
            self.cluster, self.sender, crash=crash, clock=lambda: self.seconds, registries=registries
        )
        self.status: dict[str, Any] = {}
        self.annotations: dict[str, str] = {}
        self.conflict_with: str | None = None  # the older monitor changing the same workload, as the loop says
        self.outcomes: list[ActionsOutcome] = []
        self.checkpoint_fails = False

    @property
    def now(self) -> datetime:
        return at(self.seconds)

    def _checkpoint(self, records: Any) -> None:
        if self.checkpoint_fails:
            raise CheckpointFailed("status write refused")
        # The loop's checkpoint: the status of this cycle with the Pending records, written before acting.
        self.status = self._reconciled.with_pending(self.status, records)
        self.cluster.calls.append(("checkpoint", "ModelMonitor", ",".join(sorted(r.key for r in records))))

    def cycle(self, accuracy: float | Measurement | None, *, after: float = 10.0) -> ActionsOutcome:
        """Advance the clock by ``after`` seconds, measure ``accuracy`` (None: no data; or any `Measurement`),
        act, render status."""
        self.seconds += after
        self.cluster.now = self.now
        monitor = monitor_from_body(
            {"metadata": {"namespace": NS, "name": "fraud", "uid": "uid-monitor"}, "spec": self.raw}
        )
        if isinstance(accuracy, Measurement):
            measurement = accuracy
        else:
            measurement = Measurement.no_data("no series") if accuracy is None else Measurement.value(accuracy, 500)
        self._reconciled = reconcile(
            monitor,
            {p["name"]: measurement for p in self.raw["policies"]},
            self.status,
            self.now,
            conflict_with=self.conflict_with,
        )
        ctx = MonitorContext(
            NS,
            "fraud",
            "uid-monitor",
            monitor.spec,
            status=self.status,
            annotations=dict(self.annotations),
            conflict_with=self.conflict_with,
        )
        outcome = self.remediator.run(ctx, self._reconciled.evaluation, self.now, self._checkpoint)
        self.status = self._reconciled.with_actions(
            self.status, outcome.records, outcome.last_known_good, outcome.registry
        )
        self.outcomes.append(outcome)
        return outcome

    def records(self, name: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.status.get("actions") or [] if name is None or r["name"] == name]

    def results(self, name: str | None = None) -> list[tuple[str, str]]:
        """(key suffix after the episode, result) of the records, oldest first: easy to compare."""
        return [(r["key"].rsplit("/", 1)[1], r["result"]) for r in self.records(name)]
