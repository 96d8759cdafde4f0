"""The rollback action and the last-known-good revision it returns to.

**Last-known-good.** A Deployment revision is known by its ReplicaSet's ``pod-template-hash`` label, not by its
revision number: Kubernetes renumbers a restored ReplicaSet as the newest revision. A revision becomes
``status.lastKnownGood`` once it is fully rolled out and every policy of the monitor has been OK (Inactive with
an OK measurement) on it for the rollback action's ``settlePeriod``, counted from the later of the rollout's
completion and the moment the last policy became Inactive. Both come from the cluster and the status, so an
operator restart neither shortens nor restarts the settle period. A promoted model is a new revision and
proves itself the same way.

**Rollback.** On a breach the Deployment's pod template is replaced by the last-known-good ReplicaSet's (its
``pod-template-hash`` label removed, as ``kubectl rollout undo`` does), with a PUT carrying the
``resourceVersion`` read (optimistic concurrency), after checking the preconditions: the target is a
Deployment, it is not paused, a last-known-good exists, its ReplicaSet still exists, and the live template
differs from it. The same request annotates the Deployment with the cause (``modelmonitor.dev/rollback-cause``,
``kubernetes.io/change-cause``) and a ledger (``modelmonitor.dev/rollback``): the key done and every template
hash rolled back from. A revision rolled back from is never rolled back from again automatically (no
flip-flop). The rollout is then watched until it finishes, or reported Failed when it does not within the
Deployment's ``progressDeadlineSeconds``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from modelmonitor.actions.base import (
    CHANGE_CAUSE_ANNOTATION,
    PREFIX,
    Done,
    Event,
    MonitorContext,
    Plan,
    Settled,
    annotations_of,
    evidence,
    is_awaiting_approval,
    labels_of,
    read_json_annotation,
    timestamp,
)
from modelmonitor.adapters.kubernetes import DEPLOYMENT, REPLICASET, KubernetesError, Workloads
from modelmonitor.api import ActionType, RollbackAction, duration_seconds
from modelmonitor.policy import ActionRecord, ActionResult, Decision, Evaluation, OutcomeKind, State, format_time

LEDGER_ANNOTATION = PREFIX + "rollback"
CAUSE_ANNOTATION = PREFIX + "rollback-cause"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
#: The Deployment default when progressDeadlineSeconds is not set.
DEFAULT_PROGRESS_DEADLINE = 600
#: How many rolled-back-from template hashes the ledger remembers.
MAX_BAD_REVISIONS = 20


# --- reading Deployments and ReplicaSets (pure) ---------------------------------------------------------------


def revision(obj: Mapping[str, Any]) -> int:
    """The ``deployment.kubernetes.io/revision`` of a Deployment or ReplicaSet (0 when absent)."""
    try:
        return int(annotations_of(obj).get(REVISION_ANNOTATION, "0"))
    except ValueError:
        return 0


def owned_replicasets(deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ReplicaSets the Deployment owns (its revision history), newest revision last."""
    uid = deployment["metadata"]["uid"]
    owned = [
        dict(rs)
        for rs in replicasets
        if any(ref.get("uid") == uid for ref in (rs.get("metadata") or {}).get("ownerReferences") or [])
    ]
    return sorted(owned, key=revision)


def current_replicaset(deployment: Mapping[str, Any], owned: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The ReplicaSet of the Deployment's live template: the one at the Deployment's revision."""
    live = revision(deployment)
    matching = [dict(rs) for rs in owned if revision(rs) == live and live > 0]
    return matching[-1] if matching else None


def template_hash(replicaset: Mapping[str, Any]) -> str:
    return labels_of(replicaset).get(HASH_LABEL, "")


def restorable_template(replicaset: Mapping[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template as a Deployment template: without the ``pod-template-hash`` label."""
    template = copy.deepcopy(dict((replicaset.get("spec") or {}).get("template") or {}))
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.pop(HASH_LABEL, None)
    template.setdefault("metadata", {})["labels"] = labels
    return template


def rollout_done(deployment: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the rollout is complete (every replica updated and available, no old ones left), and why not."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return False, "the Deployment controller has not seen the latest spec yet"
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return False, f"{updated} of {wanted} replicas updated"
    if total > updated:
        return False, f"{total - updated} old replicas pending termination"
    if available < updated:
        return False, f"{available} of {updated} updated replicas available"
    return True, f"{wanted} replicas updated and available"


def _condition(deployment: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def progress_deadline_exceeded(deployment: Mapping[str, Any]) -> str | None:
    """The controller's message when the rollout passed its progressDeadlineSeconds, else None."""
    progressing = _condition(deployment, "Progressing")
    if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        return str(progressing.get("message") or "progress deadline exceeded")
    return None


def live_since(deployment: Mapping[str, Any], replicaset: Mapping[str, Any]) -> datetime | None:
    """When the live revision finished rolling out (the Progressing condition's NewReplicaSetAvailable time)."""
    progressing = _condition(deployment, "Progressing")
    if progressing.get("reason") == "NewReplicaSetAvailable":
        return timestamp(progressing.get("lastUpdateTime")) or timestamp(progressing.get("lastTransitionTime"))
    return timestamp((replicaset.get("metadata") or {}).get("creationTimestamp"))


def selector_of(deployment: Mapping[str, Any]) -> str:
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def all_ok(evaluation: Evaluation) -> datetime | None:
    """When every policy became OK (the latest entry into Inactive), or None if one is not OK now."""
    states = evaluation.states
    if evaluation.paused or not states:
        return None
    if any(s.state is not State.INACTIVE or s.last_outcome is not OutcomeKind.OK for s in states):
        return None
    return max(s.since for s in states)


class RollbackHandler:
    """Tracks the last-known-good revision, rolls back to it, and watches the rollout."""

    type: ActionType = "rollback"

    def __init__(self, workloads: Workloads) -> None:
        self.workloads = workloads
        # When each monitor's live revision was last checked: a settled monitor is re-checked every quarter of
        # its settle period, not every cycle (two API reads each), so a healthy fleet costs the API server little.
        self._checked: dict[tuple[str, str], datetime] = {}

    def history(self, ctx: MonitorContext) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        deployment = self.workloads.get(DEPLOYMENT, ctx.namespace, ctx.target_name)
        replicasets = self.workloads.list(REPLICASET, ctx.namespace, label_selector=selector_of(deployment))
        return deployment, owned_replicasets(deployment, replicasets)

    # --- last-known-good ------------------------------------------------------------------------------------

    def track_last_known_good(
        self, ctx: MonitorContext, evaluation: Evaluation, now: datetime
    ) -> tuple[dict[str, Any] | None, list[Event]]:
        """A new ``status.lastKnownGood`` when the live revision has settled (or was renumbered), else None."""
        rollbacks = [a for a in ctx.spec.actions.values() if isinstance(a, RollbackAction)]
        if not rollbacks or ctx.target != DEPLOYMENT:
            return None, []
        settle = max(duration_seconds(a.settle_period) for a in rollbacks)
        ok_since = all_ok(evaluation)
        if ok_since is None or (now - ok_since).total_seconds() < settle:
            return None, []
        slot = (ctx.namespace, ctx.name)
        last = self._checked.get(slot)
        if last is not None and (now - last).total_seconds() < settle / 4:
            return None, []
        self._checked[slot] = now
        deployment, owned = self.history(ctx)
        done, _why = rollout_done(deployment)
        current = current_replicaset(deployment, owned)
        if not done or current is None or not template_hash(current):
            return None, []
        live = live_since(deployment, current) or now
        since = max(ok_since, live)
        if (now - since).total_seconds() < settle:
            return None, []
        prior = ctx.last_known_good
        good_hash, good_revision = template_hash(current), str(revision(current))
        if prior is not None and prior.get("templateHash") == good_hash:
            if prior.get("revision") == good_revision:
                return None, []
            # The same template, renumbered (e.g. restored by a rollback): keep when it became good.
            return {**prior, "revision": good_revision}, []
        lkg = {"revision": good_revision, "templateHash": good_hash, "since": format_time(now)}
        message = (
            f"{ctx.target_text} revision {good_revision} (pod-template-hash {good_hash}) is the last-known-good: "
            f"every policy OK for {format_time(since)} .. {format_time(now)} (settlePeriod "
            f"{max(rollbacks, key=lambda a: duration_seconds(a.settle_period)).settle_period})"
        )
        return lkg, [Event("Normal", "LastKnownGood", message)]

    # --- rollback -------------------------------------------------------------------------------------------

    def plan(
        self, ctx: MonitorContext, decision: Decision, action: RollbackAction, now: datetime, firing_since: datetime
    ) -> Plan | Settled | None:
        key = decision.key
        if ctx.target != DEPLOYMENT:
            return Settled(key, ActionResult.FAILED, f"rollback needs a Deployment; the target is {ctx.target_text}")
        deployment, owned = self.history(ctx)
        ledger = read_json_annotation(deployment, LEDGER_ANNOTATION)
        if ledger.get("key") == key:
            return None  # done; the rollout is watched by `reconcile`
        lkg = ctx.last_known_good
        if lkg is None:
            return Settled(
                key,
                ActionResult.SKIPPED,
                "no last-known-good revision yet: a revision becomes last-known-good once every policy stayed OK "
                "on it for the settle period",
            )
        if (deployment.get("spec") or {}).get("paused"):
            return Settled(key, ActionResult.SKIPPED, f"{ctx.target_text} is paused (spec.paused); not rolling back")
        good_hash = str(lkg["templateHash"])
        good = next((rs for rs in reversed(owned) if template_hash(rs) == good_hash), None)
        if good is None:
            return Settled(
                key,
                ActionResult.FAILED,
                f"the last-known-good ReplicaSet (pod-template-hash {good_hash}, revision {lkg.get('revision')}) "
                f"of {ctx.target_text} no longer exists (revisionHistoryLimit?)",
            )
        current = current_replicaset(deployment, owned)
        bad_hash = template_hash(current) if current is not None else ""
        template = restorable_template(good)
        if bad_hash == good_hash or template == (deployment.get("spec") or {}).get("template"):
            return Settled(
                key,
                ActionResult.SKIPPED,
                f"{ctx.target_text} already runs the last-known-good template (pod-template-hash {good_hash})",
            )
        if not bad_hash:
            return None  # the controller has not labelled the live revision yet
        rolled_back_from = [str(h) for h in ledger.get("rolledBackFrom") or []]
        if bad_hash in rolled_back_from:
            return Settled(
                key,
                ActionResult.SKIPPED,
                f"already rolled back once from pod-template-hash {bad_hash}; at most one automatic rollback per "
                "bad revision",
            )
        bad_revision = revision(current) if current is not None else 0
        what = (
            f"roll back {ctx.target_text} from revision {bad_revision} (pod-template-hash {bad_hash}) to the "
            f"last-known-good revision {revision(good)} (pod-template-hash {good_hash})"
        )
        cause = f"ModelMonitor {ctx.namespace}/{ctx.name}: {evidence(decision)}"
        new_ledger = {
            "key": key,
            "monitor": ctx.name,
            "action": decision.action,
            "policy": decision.policy,
            "at": format_time(now),
            "from": bad_hash,
            "to": good_hash,
            "rolledBackFrom": [*rolled_back_from, bad_hash][-MAX_BAD_REVISIONS:],
        }
        updated = copy.deepcopy(deployment)
        updated.pop("status", None)
        updated["spec"]["template"] = template
        annotations = updated["metadata"].setdefault("annotations", {})
        annotations[LEDGER_ANNOTATION] = json.dumps(new_ledger, separators=(",", ":"))
        annotations[CAUSE_ANNOTATION] = f"{format_time(now)} {what}: {cause}"[:4096]
        annotations[CHANGE_CAUSE_ANNOTATION] = f"modelmonitor rollback to revision {revision(good)}: {cause}"[:1024]
        runs = {}
        if (ledger_at := timestamp(ledger.get("at"))) is not None and ledger.get("action") == decision.action:
            runs[str(ledger.get("key"))] = ledger_at
        return Plan(key=key, what=what, data=updated, runs=runs)

    def act(self, ctx: MonitorContext, plan: Plan, now: datetime) -> Done:
        try:
            self.workloads.replace(DEPLOYMENT, ctx.namespace, ctx.target_name, plan.data)
        except KubernetesError as exc:
            if exc.status == 409:
                return Done(None, f"{ctx.target_text} changed meanwhile; checking again next cycle")
            raise
        return Done(ActionResult.PENDING, f"{plan.what}; waiting for the rollout")

    def reconcile(self, ctx: MonitorContext, now: datetime, is_open: Callable[[str], bool]) -> list[ActionRecord]:
        """Final records for rollbacks in flight: Succeeded when the rollout finished, Failed when it did not."""
        if ctx.target != DEPLOYMENT or not any(isinstance(a, RollbackAction) for a in ctx.spec.actions.values()):
            return []
        pending = [
            r
            for r in ctx.history
            if r.type == self.type and r.result is ActionResult.PENDING and not is_awaiting_approval(r)
        ]
        if not pending:
            return []
        try:
            deployment = self.workloads.get(DEPLOYMENT, ctx.namespace, ctx.target_name)
        except KubernetesError as exc:
            if exc.status != 404:
                raise
            deployment = {}
        ledger = read_json_annotation(deployment, LEDGER_ANNOTATION) if deployment else {}
        records = []
        for entry in pending:
            key = entry.key

            def final(result: ActionResult, reason: str, entry: ActionRecord = entry) -> ActionRecord:
                return entry.settled(result, reason, now)

            if not deployment:
                records.append(final(ActionResult.FAILED, f"{ctx.target_text} no longer exists"))
                continue
            if ledger.get("key") != key:
                if not is_open(key):
                    # Recorded, then the operator stopped before acting, and the policy no longer fires.
                    records.append(
                        final(ActionResult.SKIPPED, "not rolled back: the policy stopped firing before it was done")
                    )
                continue
            records.extend(self._watch(ctx, deployment, ledger, now, final))
        return records

    def _watch(
        self,
        ctx: MonitorContext,
        deployment: dict[str, Any],
        ledger: Mapping[str, Any],
        now: datetime,
        final: Callable[[ActionResult, str], ActionRecord],
    ) -> list[ActionRecord]:
        replicasets = self.workloads.list(REPLICASET, ctx.namespace, label_selector=selector_of(deployment))
        current = current_replicaset(deployment, owned_replicasets(deployment, replicasets))
        live_hash = template_hash(current) if current is not None else ""
        done, why = rollout_done(deployment)
        if live_hash == ledger.get("to") and done:
            return [
                final(
                    ActionResult.SUCCEEDED,
                    f"rolled back {ctx.target_text} to the last-known-good template (pod-template-hash "
                    f"{ledger.get('to')}), now revision {revision(current or {})}; the rollout finished: {why}",
                )
            ]
        if live_hash and live_hash not in (ledger.get("to"), ledger.get("from")):
            return [final(ActionResult.FAILED, f"the rollback was superseded: {ctx.target_text} now runs {live_hash}")]
        exceeded = progress_deadline_exceeded(deployment)
        started = timestamp(ledger.get("at")) or now
        deadline = int((deployment.get("spec") or {}).get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE)
        if exceeded or (now - started).total_seconds() > deadline:
            return [
                final(
                    ActionResult.FAILED,
                    f"the rollback of {ctx.target_text} did not finish within {deadline} s: {exceeded or why}",
                )
            ]
        return []
