"""The retrain action: a Job from the user's template, tracked to the end, and optionally promoted.

The Job is created in the monitor's namespace under a name derived from the idempotency key (so a second
attempt, after an operator restart, finds the first instead of creating another), runs as the ServiceAccount
the spec names (refused if that is the operator's own), is owned by the ModelMonitor (deleted with it), and
carries the evidence (monitor, policy, signal, value, threshold, window, query) as ``MODELMONITOR_*``
environment variables and ``modelmonitor.dev/*`` annotations. One Job per monitor runs at a time.

The Jobs themselves are the record of what ran: every cycle the monitor's unfinished business is found by
label, and once a Job is handled the outcome is written on it (``modelmonitor.dev/outcome``), so nothing
depends on the bounded status history. On success with ``promote`` set, the model version the Job reported
(an annotation on the Job, or its container's termination message) is written into the workload's pod
template (env var, image tag or pod annotation) with optimistic concurrency, together with a ledger annotation
(``modelmonitor.dev/promoted``) naming the Job, so a promotion is never applied twice. The new revision then
has to prove itself for the settle period before it becomes last-known-good. A failed Job (or one that
reports no version) promotes nothing and raises an alert.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from modelmonitor.actions.base import (
    CHANGE_CAUSE_ANNOTATION,
    PREFIX,
    PROMOTED_ANNOTATION,
    Done,
    MonitorContext,
    Notice,
    Plan,
    Settled,
    annotations_of,
    is_awaiting_approval,
    labels_of,
    read_json_annotation,
    timestamp,
)
from modelmonitor.actions.registry import RegistryHandler
from modelmonitor.actions.testhooks import CrashHook
from modelmonitor.adapters.kubernetes import DEPLOYMENT, JOB, POD, STATEFULSET, KubernetesError, Workloads
from modelmonitor.adapters.registry import RegistryError
from modelmonitor.api import API_VERSION, KIND, ActionType, Promotion, RetrainAction
from modelmonitor.api.registry import JOB_TAG
from modelmonitor.policy import ActionRecord, ActionResult, Decision, format_time

log = logging.getLogger("modelmonitor.actions")

MONITOR_UID_LABEL = PREFIX + "monitor-uid"
MONITOR_LABEL = PREFIX + "monitor"
ACTION_LABEL = PREFIX + "action"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelmonitor"}
KEY_ANNOTATION = PREFIX + "key"
OUTCOME_ANNOTATION = PREFIX + "outcome"
#: After a Job completes, how long to wait for its model version to appear (a trainer may annotate its Job
#: just as it exits) before the promotion is given up as failed.
VERSION_GRACE_SECONDS = 60.0
MAX_VERSION_LENGTH = 128
#: A registered version's source URI is written whole (an env value or annotation, not an image tag).
MAX_SOURCE_LENGTH = 2048
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def job_name(monitor: str, action: str, key: str) -> str:
    """``<monitor>-<action>-<hash of key>``: deterministic per episode, a valid name, at most 63 characters."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    base = re.sub(r"[^a-z0-9-]+", "-", f"{monitor}-{action}".lower()).strip("-")
    return f"{base[: 63 - 11].rstrip('-')}-{digest}"


def job_finished(job: Mapping[str, Any]) -> tuple[str, str] | None:
    """``("Complete" | "Failed", message)`` once the Job has finished, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            text = ": ".join(str(p) for p in (condition.get("reason"), condition.get("message")) if p)
            return str(condition["type"]), text
    return None


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def build_job(ctx: MonitorContext, decision: Decision, action: RetrainAction, name: str) -> dict[str, Any]:
    """The Job for ``decision``, from the action's template (pure)."""
    policy = next((p for p in ctx.spec.policies if p.name == decision.policy), None)
    signal = (policy.signal if policy is not None else None) or "query"
    evidence = {
        "monitor": ctx.name,
        "namespace": ctx.namespace,
        "model": ctx.spec.model.name,
        "policy": decision.policy,
        "signal": signal,
        "value": _number(decision.value),
        "threshold": _number(decision.threshold),
        "window": decision.window,
        "severity": decision.severity.value,
        "query": decision.query,
        "key": decision.key,
        # The Job's own name (MODELMONITOR_JOB): a trainer tags the model version it registers with it
        # (modelmonitor.dev/job=<name>), which is how promote.from: registry finds that version.
        "job": name,
    }
    annotations = {PREFIX + k: v for k, v in evidence.items()}
    annotations[PREFIX + "action"] = decision.action
    labels = {**MANAGED_BY, MONITOR_UID_LABEL: ctx.uid, ACTION_LABEL: decision.action}
    if len(ctx.name) <= 63:
        labels[MONITOR_LABEL] = ctx.name

    template = action.job_template
    spec = copy.deepcopy(template.spec)
    pod = spec.setdefault("template", {})
    pod_meta = pod.setdefault("metadata", {})
    pod_meta["annotations"] = {**(pod_meta.get("annotations") or {}), **annotations}
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), MONITOR_UID_LABEL: ctx.uid}
    pod_spec = pod.setdefault("spec", {})
    pod_spec["serviceAccountName"] = action.service_account_name
    env = [{"name": f"MODELMONITOR_{k.upper()}", "value": v} for k, v in evidence.items()]
    ours = {e["name"] for e in env}
    for container in pod_spec.get("containers") or []:
        kept = [e for e in container.get("env") or [] if e.get("name") not in ours]
        container["env"] = [*kept, *env]
    metadata = template.metadata
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": ctx.namespace,
            "labels": {**(metadata.labels if metadata else {}), **labels},
            "annotations": {**(metadata.annotations if metadata else {}), **annotations},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": ctx.name,
                    "uid": ctx.uid,
                    "controller": True,
                    # True would need update rights on modelmonitors/finalizers; deletion still cascades.
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": spec,
    }


def read_version(job: Mapping[str, Any], pods: list[dict[str, Any]], promote: Promotion) -> tuple[str | None, str]:
    """The model version a finished Job reported, or (None, why not)."""
    if promote.from_ == "annotation":
        assert promote.key is not None
        raw = annotations_of(job).get(promote.key)
        if raw is None:
            return None, f"the Job has no annotation {promote.key}"
        return _valid(raw.strip(), f"annotation {promote.key}")
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    wanted = promote.container or containers[0].get("name")
    succeeded = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"] or pods
    for pod in succeeded:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != wanted:
                continue
            message = (((status.get("state") or {}).get("terminated") or {}).get("message") or "").strip()
            if not message:
                continue
            if promote.key is None:
                return _valid(message, f"the termination message of container {wanted}")
            try:
                parsed = json.loads(message)
            except ValueError:
                return None, f"the termination message of container {wanted} is not JSON: {message[:100]!r}"
            value = parsed.get(promote.key) if isinstance(parsed, dict) else None
            if value is None or isinstance(value, (dict, list)):
                return None, f"the termination message of container {wanted} has no key {promote.key!r}"
            return _valid(str(value).strip(), f"key {promote.key} of the termination message")
    return None, f"container {wanted} left no termination message"


def _valid(version: str, where: str) -> tuple[str | None, str]:
    if not version or len(version) > MAX_VERSION_LENGTH or any(c.isspace() or ord(c) < 32 for c in version):
        return None, f"{where} is not a usable version: {version[:MAX_VERSION_LENGTH]!r}"
    return version, where


def _image_with_tag(image: str, tag: str) -> str:
    """``registry:5000/repo/model:old@sha256:..`` -> ``registry:5000/repo/model:<tag>``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return f"{name}:{tag}"


def promoted_workload(
    workload: Mapping[str, Any], promote: Promotion, version: str
) -> tuple[dict[str, Any] | None, str]:
    """The workload with ``version`` written where ``promote.to`` says, and a description; or (None, problem)."""
    updated = copy.deepcopy(dict(workload))
    updated.pop("status", None)
    template = updated.setdefault("spec", {}).setdefault("template", {})
    containers = template.setdefault("spec", {}).get("containers") or []
    target = promote.to
    if target.annotation is not None:
        template.setdefault("metadata", {}).setdefault("annotations", {})[target.annotation.key] = version
        return updated, f"pod annotation {target.annotation.key}={version}"
    wanted = target.env.container if target.env is not None else target.image.container if target.image else ""
    container = next((c for c in containers if c.get("name") == wanted), None)
    if container is None:
        return None, f"the workload has no container {wanted!r} (promote.to names it)"
    if target.env is not None:
        env = [e for e in container.get("env") or [] if e.get("name") != target.env.name]
        container["env"] = [*env, {"name": target.env.name, "value": version}]
        return updated, f"env {target.env.name}={version} of container {wanted}"
    if not _IMAGE_TAG.match(version):
        return None, f"{version!r} is not a valid image tag"
    old = str(container.get("image", ""))
    container["image"] = _image_with_tag(old, version)
    return updated, f"image of container {wanted}: {old} -> {container['image']}"


def _recorded_outcome(ctx: MonitorContext, job: Mapping[str, Any], now: datetime) -> ActionRecord | None:
    """The final record of a handled Job, rebuilt from its outcome mark, when its latest record in status is
    still Pending (an earlier attempt of the same key may have failed before this Job was created)."""
    annotations = annotations_of(job)
    key = annotations.get(KEY_ANNOTATION, job["metadata"]["name"])
    recorded = [r for r in ctx.history if r.key == key]
    if not recorded:
        return None
    latest = max(recorded, key=lambda r: r.at)
    if latest.result is not ActionResult.PENDING:
        return None
    result_text, _, reason = annotations[OUTCOME_ANNOTATION].partition(": ")
    try:
        result = ActionResult(result_text)
    except ValueError:
        return None  # not a mark this operator wrote
    return latest.settled(result, reason, now)


class RetrainHandler:
    """Creates retraining Jobs, follows them to the end, promotes what they produced."""

    type: ActionType = "retrain"

    def __init__(
        self, workloads: Workloads, registry: RegistryHandler | None = None, crash: CrashHook | None = None
    ) -> None:
        self.workloads = workloads
        self.registry = registry
        self.crash = crash or CrashHook()

    def _jobs(self, ctx: MonitorContext) -> list[dict[str, Any]]:
        return self.workloads.list(JOB, ctx.namespace, label_selector=f"{MONITOR_UID_LABEL}={ctx.uid}")

    def plan(
        self, ctx: MonitorContext, decision: Decision, action: RetrainAction, now: datetime, firing_since: datetime
    ) -> Plan | Settled | None:
        name = job_name(ctx.name, decision.action, decision.key)
        try:
            self.workloads.get(JOB, ctx.namespace, name)
            return None  # created already (this episode); followed by `reconcile`
        except KubernetesError as exc:
            if exc.status != 404:
                raise
        account = action.service_account_name
        try:
            me = self.workloads.whoami()
        except KubernetesError:
            me = ""
        if me == f"system:serviceaccount:{ctx.namespace}:{account}":
            return Settled(
                decision.key,
                ActionResult.FAILED,
                f"refusing to run the retraining Job as the operator's own ServiceAccount {account}; name one with "
                "only the rights training needs in serviceAccountName",
            )
        jobs = self._jobs(ctx)
        running = [j["metadata"]["name"] for j in jobs if job_finished(j) is None]
        if running:
            return Settled(
                decision.key,
                ActionResult.SKIPPED,
                f"retraining Job {running[0]} of this monitor is still running; one runs at a time",
            )
        runs = {
            annotations_of(j).get(KEY_ANNOTATION, j["metadata"]["name"]): created
            for j in jobs
            if labels_of(j).get(ACTION_LABEL) == decision.action
            and (created := timestamp(j["metadata"].get("creationTimestamp"))) is not None
        }
        return Plan(
            key=decision.key,
            what=f"run retraining Job {name} as ServiceAccount {account}",
            data=build_job(ctx, decision, action, name),
            runs=runs,
        )

    def act(self, ctx: MonitorContext, plan: Plan, now: datetime) -> Done:
        name = plan.data["metadata"]["name"]
        try:
            self.workloads.create(JOB, ctx.namespace, plan.data)
        except KubernetesError as exc:
            if exc.status != 409:
                raise
            existing = self.workloads.get(JOB, ctx.namespace, name)
            if annotations_of(existing).get(KEY_ANNOTATION) != plan.key:
                raise KubernetesError(f"creating Job {name}", 409, "a Job of that name exists for another key") from exc
        return Done(ActionResult.PENDING, f"created retraining Job {name}; waiting for it to finish")

    def reconcile(
        self, ctx: MonitorContext, now: datetime, is_open: Callable[[str], bool]
    ) -> tuple[list[ActionRecord], list[Notice]]:
        """Records for Jobs that finished since the last cycle, promotion included, and failures to alert on."""
        if not any(isinstance(a, RetrainAction) for a in ctx.spec.actions.values()):
            return [], []
        records: list[ActionRecord] = []
        notices: list[Notice] = []
        jobs = self._jobs(ctx)
        keys = {annotations_of(j).get(KEY_ANNOTATION) for j in jobs}
        for entry in ctx.history:
            if (
                entry.type == self.type
                and entry.result is ActionResult.PENDING
                and not is_awaiting_approval(entry)
                and entry.key not in keys
                and not is_open(entry.key)
            ):
                # Recorded, then the operator stopped before creating the Job, and the policy no longer fires.
                records.append(
                    entry.settled(
                        ActionResult.SKIPPED, "no retraining Job was created: the policy stopped firing first", now
                    )
                )
        for job in jobs:
            annotations = annotations_of(job)
            if OUTCOME_ANNOTATION in annotations:
                # Handled in an earlier cycle. If the operator stopped between marking the Job and writing the
                # record, the mark is the only trace of the outcome: write the record from it.
                recovered = _recorded_outcome(ctx, job, now)
                if recovered is not None:
                    records.append(recovered)
                continue
            finished = job_finished(job)
            if finished is None:
                continue
            outcome = self._finish(ctx, job, finished, now)
            if outcome is None:
                continue  # try again next cycle (a version may still come, the workload was busy)
            result, reason = outcome
            name = job["metadata"]["name"]
            self.workloads.patch(
                JOB,
                ctx.namespace,
                name,
                {"metadata": {"annotations": {OUTCOME_ANNOTATION: f"{result}: {reason}"[:1024]}}},
            )
            policy = annotations.get(PREFIX + "policy", "")
            records.append(
                ActionRecord(
                    name=labels_of(job).get(ACTION_LABEL, ""),
                    type=self.type,
                    policy=policy,
                    key=annotations.get(KEY_ANNOTATION, name),
                    result=result,
                    at=now,
                    reason=reason,
                )
            )
            if result is ActionResult.FAILED:
                notices.append(
                    Notice(
                        alertname="ModelMonitorRetrainFailed",
                        policy=policy,
                        summary=f"{ctx.namespace}/{ctx.name}: retraining Job {name} failed",
                        description=reason,
                    )
                )
        return records, notices

    def _registered_version(self, ctx: MonitorContext, job: str) -> tuple[str | None, str] | None:
        """The source URI of the version the Job registered and tagged with its name, and where it was found;
        (None, why not) when there is none; None when the registry cannot be reached (retried next cycle)."""
        registry = ctx.spec.registry
        if self.registry is None or registry is None:
            return None, "no model registry is configured (spec.registry)"
        where = f"the version of registered model {registry.model} tagged {JOB_TAG}={job}"
        missing = f"registered model {registry.model} has no version tagged {JOB_TAG}={job}"
        try:
            version = self.registry.job_version(ctx, job)
        except RegistryError as exc:
            if exc.unreachable:
                log.warning("%s/%s: promotion of Job %s waits for the registry: %s", ctx.namespace, ctx.name, job, exc)
                return None
            return None, f"{where}: {exc}"
        if version is None:
            return None, missing
        if not version.source or len(version.source) > MAX_SOURCE_LENGTH or any(c.isspace() for c in version.source):
            return None, f"version {version.version} of {registry.model} has no usable source URI: {version.source!r}"
        return version.source, f"registered version {version.version} of {registry.model}"

    def _finish(
        self, ctx: MonitorContext, job: dict[str, Any], finished: tuple[str, str], now: datetime
    ) -> tuple[ActionResult, str] | None:
        name = job["metadata"]["name"]
        state, message = finished
        if state == "Failed":
            return (
                ActionResult.FAILED,
                f"retraining Job {name} failed ({message or 'no reason given'}); nothing promoted",
            )
        action = ctx.spec.actions.get(labels_of(job).get(ACTION_LABEL, ""))
        promote = action.promote if isinstance(action, RetrainAction) else None
        if promote is None:
            return ActionResult.SUCCEEDED, f"retraining Job {name} completed"
        if promote.from_ == "registry":
            found = self._registered_version(ctx, name)
            if found is None:
                return None  # the registry cannot be reached: asked again next cycle
            version, where = found
        else:
            pods = []
            if promote.from_ == "terminationMessage":
                pods = self.workloads.list(POD, ctx.namespace, label_selector=f"batch.kubernetes.io/job-name={name}")
            version, where = read_version(job, pods, promote)
        if version is None:
            completed = timestamp((job.get("status") or {}).get("completionTime")) or now
            if (now - completed).total_seconds() < VERSION_GRACE_SECONDS:
                return None
            return (
                ActionResult.FAILED,
                f"retraining Job {name} completed but reported no model version ({where}); nothing promoted",
            )
        if ctx.target not in (DEPLOYMENT, STATEFULSET):
            return ActionResult.FAILED, f"promotion needs a Deployment or StatefulSet; the target is {ctx.target_text}"
        if ctx.conflict_with is not None:
            return ActionResult.SKIPPED, (
                f"retraining Job {name} completed; model version {version} not promoted: ModelMonitor "
                f"{ctx.conflict_with} is older and also changes {ctx.target_text}"
            )
        workload = self.workloads.get(ctx.target, ctx.namespace, ctx.target_name)
        ledger = read_json_annotation(workload, PROMOTED_ANNOTATION)
        if ledger.get("job") == name:
            return (
                ActionResult.SUCCEEDED,
                f"retraining Job {name} completed; promoted model version {ledger.get('version')}",
            )
        updated, what = promoted_workload(workload, promote, version)
        if updated is None:
            return (
                ActionResult.FAILED,
                f"retraining Job {name} completed but version {version} cannot be promoted: {what}",
            )
        annotations = updated.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[PROMOTED_ANNOTATION] = json.dumps(
            {
                "job": name,
                "version": version,
                "key": annotations_of(job).get(KEY_ANNOTATION, ""),
                "at": format_time(now),
            },
            separators=(",", ":"),
        )
        annotations[CHANGE_CAUSE_ANNOTATION] = f"modelmonitor promoted model version {version} from Job {name}"
        try:
            self.workloads.replace(ctx.target, ctx.namespace, ctx.target_name, updated)
        except KubernetesError as exc:
            if exc.status == 409:
                return None  # the workload changed meanwhile: read it again next cycle
            raise
        self.crash("after-promote", self.type)
        return (
            ActionResult.SUCCEEDED,
            f"retraining Job {name} completed; promoted model version {version} (from {where}) into "
            f"{ctx.target_text}: {what}. The new revision becomes last-known-good once it stays OK for the settle "
            "period",
        )
