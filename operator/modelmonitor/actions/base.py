"""What every action shares: the monitor it acts for, what a cycle returns, records, and the names it writes.

An action handler works in three steps, so that the rails and the idempotency protocol live in one place
(`modelmonitor.actions.remediator`) and each handler only knows its own kind of change:

1. ``plan``: read the cluster and say what would be done (`Plan`), that nothing is to be done now (``None``),
   or that the decision is settled without acting (`Settled`: already done, impossible, pointless).
2. the remediator applies the rails (dry run, approval, cooldown, budget) and records the plan as Pending in
   status *before* acting;
3. ``act``: make the change, idempotently (deterministic names, optimistic concurrency, a ledger annotation
   written in the same request as the change), and say how it ended.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from modelmonitor.adapters.kubernetes import Kind
from modelmonitor.api import ModelMonitorSpec
from modelmonitor.policy import ActionRecord, ActionResult, Decision, Evaluation, parse_time, records_from_status

#: Annotations and labels the operator writes on the objects it creates or changes.
PREFIX = "modelmonitor.dev/"
#: On a ModelMonitor: the idempotency keys (comma- or space-separated) of pending actions a person approves.
APPROVE_ANNOTATION = PREFIX + "approve"
#: On a workload: the ledger of the last promotion (Job, version, key), written with the change itself.
PROMOTED_ANNOTATION = PREFIX + "promoted"
#: Kubernetes' own convention, shown by ``kubectl rollout history``.
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"

AWAITING_APPROVAL = "awaiting approval"


@dataclass(frozen=True)
class MonitorContext:
    """The monitor the actions work for: its identity, validated spec, prior status and annotations.

    ``conflict_with`` names the older ModelMonitor that changes the same workload (`policy.conflicts`): while
    it is set this monitor takes no workload-changing action; its alerts still go out.
    """

    namespace: str
    name: str
    uid: str
    spec: ModelMonitorSpec
    status: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    conflict_with: str | None = None
    #: Whether this operator replica still owns the monitor: asked right before every change to the cluster,
    #: so a replica that lost its Lease stops acting before another one takes over (`modelmonitor.sharding`).
    owned: Callable[[], bool] = field(default=lambda: True)

    @property
    def history(self) -> list[ActionRecord]:
        """``status.actions``: the bounded action history, newest last."""
        return records_from_status(self.status)

    @property
    def target(self) -> Kind:
        """The kind of the workload (``spec.target``)."""
        return Kind(self.spec.target.resolved_api_version, self.spec.target.kind)

    @property
    def target_name(self) -> str:
        return self.spec.target.name

    @property
    def target_text(self) -> str:
        """``Deployment/fraud``: how messages name the workload."""
        return f"{self.spec.target.kind}/{self.spec.target.name}"

    @property
    def last_known_good(self) -> Mapping[str, Any] | None:
        lkg = self.status.get("lastKnownGood")
        return lkg if isinstance(lkg, Mapping) and lkg.get("templateHash") else None

    def approved(self, key: str) -> bool:
        """Whether the approval annotation names ``key`` (or, for a scale step ``key#n``, its episode key)."""
        raw = self.annotations.get(APPROVE_ANNOTATION, "")
        approved = {k for k in re.split(r"[\s,]+", raw) if k}
        return key in approved or key.split("#", 1)[0] in approved

    def approve_command(self, key: str) -> str:
        """The command a person runs to approve ``key``."""
        return (
            f"kubectl annotate modelmonitor {self.name} -n {self.namespace} --overwrite "
            f"{APPROVE_ANNOTATION}='{key.split('#', 1)[0]}'"
        )


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the ModelMonitor."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Notice:
    """Something people must hear about that is not a policy firing (a failed retraining, a Degraded monitor):
    sent through every alert action of the monitor."""

    alertname: str
    policy: str  # "" when it is about the monitor as a whole (then the alert has no policy label)
    summary: str
    description: str
    severity: str = "warning"
    annotations: Mapping[str, str] = field(default_factory=dict)  # more annotations for the alert


@dataclass
class ActionsOutcome:
    """What one cycle of actions produced: records for ``status.actions``, Events, a new lastKnownGood, and a new
    ``status.registry`` (None: unchanged; {}: removed)."""

    records: list[ActionRecord] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    last_known_good: dict[str, Any] | None = None
    registry: dict[str, Any] | None = None


#: Persists Pending records in the monitor's status before acting; raises if it cannot (then nothing is done).
Checkpoint = Callable[[Sequence[ActionRecord]], None]


class Actions(Protocol):
    """Carries out one cycle's decisions and tracks actions in flight. Blocking: called from a worker thread."""

    def run(
        self, monitor: MonitorContext, evaluation: Evaluation, now: datetime, checkpoint: Checkpoint
    ) -> ActionsOutcome: ...


@dataclass(frozen=True)
class Plan:
    """What an action would do now. ``key`` is the record's key: the decision's, or ``<key>#<n>`` for the n-th
    scale step of an episode. ``runs`` are past runs of this action known from the cluster (key -> time),
    counted by cooldown and budget with those in status. ``data`` is the handler's own."""

    key: str
    what: str
    data: Any = None
    runs: Mapping[str, datetime] = field(default_factory=dict)
    checkpoint: bool = True  # record Pending before acting (alerts are idempotent and skip it)
    repeat: bool = False  # a re-send of something already done in this episode: no rails, no new record


@dataclass(frozen=True)
class Settled:
    """A decision that needs no action now, with the record saying why (result Succeeded, Skipped or Failed)."""

    key: str
    result: ActionResult
    reason: str


@dataclass(frozen=True)
class Done:
    """How ``act`` ended: ``result`` Succeeded or Failed, or Pending while the change is still in progress
    (a Job running, a rollout rolling); ``reason`` says what happened. ``None`` result: retry next cycle."""

    result: ActionResult | None
    reason: str


def record(
    decision: Decision, *, result: ActionResult, at: datetime, reason: str, key: str | None = None
) -> ActionRecord:
    """The record of ``decision`` under ``key`` (default: the decision's key)."""
    return ActionRecord.for_decision(decision, result=result, at=at, reason=reason, key=key)


def has_record(history: Sequence[ActionRecord], key: str, *results: ActionResult) -> bool:
    """Whether the history holds a record with ``key`` (and, if given, one of ``results``)."""
    return any(r.key == key and (not results or r.result in results) for r in history)


def is_awaiting_approval(entry: ActionRecord) -> bool:
    return entry.result is ActionResult.PENDING and entry.reason.startswith(AWAITING_APPROVAL)


def evidence(decision: Decision) -> str:
    """The decision's evidence in words: value, threshold, window and query."""
    value = "no value" if decision.value is None else f"value {decision.value:g}"
    threshold = "" if decision.threshold is None else f", threshold {decision.threshold:g}"
    query = f"; query: {decision.query}" if decision.query else ""
    return f"policy {decision.policy} ({value}{threshold}, window {decision.window}){query}"


def read_json_annotation(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A JSON object stored in an annotation of ``obj`` ({} when absent or not a JSON object)."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def timestamp(text: Any) -> datetime | None:
    """An RFC 3339 time from the API server or a ledger, or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})
