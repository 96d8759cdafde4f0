"""One monitor, one path: a watched ModelMonitor becomes one typed `Monitor` once per change, and `reconcile`
turns (monitor, measurements, prior status, now) into the status to write and the decisions to act on.

The evaluation loop and the tests call the same functions: the loop only schedules, batches queries and performs
the writes these functions describe. Pure: no I/O, no clock (``now`` is passed in).

A cycle of one monitor, as the loop runs it:

1. ``reconciled = reconcile(monitor, measurements, prior_status, now)``: the policies' new states, transitions
   and decisions, and ``reconciled.status``, the status to write when no action runs;
2. the actions layer carries out ``reconciled.decisions``; before it changes anything it persists its Pending
   records with ``reconciled.with_pending(prior, records)`` (restart-safe: a killed operator finds them);
3. ``reconciled.with_actions(prior, records, last_known_good)`` is the status to write after acting, and
   ``reconciled.events(records)`` the Events to post.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar, cast

from modelmonitor.actions import Event
from modelmonitor.api import ModelMonitorSpec, Policy, duration_seconds, parse_monitor
from modelmonitor.api.common import ApiModel
from modelmonitor.policy import (
    ActionRecord,
    ActionResult,
    Decision,
    Evaluation,
    Measurement,
    MonitorSpec,
    evaluate,
    monitor_from_api,
    render_status,
)
from modelmonitor.policy.model import Rule
from modelmonitor.policy.spec import rule_from_policy
from modelmonitor.policy.timefmt import parse_time
from modelmonitor.signals import SignalRequest

__all__ = ["Monitor", "Reconciled", "StatusWrite", "monitor_from_body", "reconcile", "status_write"]


@dataclass(frozen=True)
class Monitor:
    """A ModelMonitor as the operator works with it: identity, the validated spec, the engine's view of it and
    the signal requests of its policies, all derived once per watched change."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: ModelMonitorSpec
    engine: MonitorSpec
    #: One request per policy, in spec order.
    requests: tuple[SignalRequest, ...]
    interval_seconds: float
    #: ``metadata.creationTimestamp``: the older of two monitors changing one workload acts (None when unknown).
    created: datetime | None = None
    #: Annotations carry approvals of pending actions (``modelmonitor.dev/approve``).
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def _request(namespace: str, name: str, spec: ModelMonitorSpec, index: int) -> SignalRequest:
    policy = spec.policies[index]
    return SignalRequest(
        namespace=namespace,
        monitor=name,
        policy=policy.name,
        model=spec.model.name,
        window=policy.window,
        signal=policy.signal,
        query=policy.query,
        version=spec.model.version,
        labels=tuple(spec.model.labels.items()),
        auto_threshold=bool(policy.condition.auto_threshold),
        false_alarm_rate=policy.condition.false_alarm_rate,
        drift_method=policy.method or "psi",
        # Groups and features with fewer samples are left out of the fairness and drift signals, so a tiny
        # `__other__` group neither blocks nor decides the signal.
        min_samples=policy.min_samples,
        label_delay=policy.label_delay,
    )


def _created(meta: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_time(str(meta.get("creationTimestamp") or ""))
    except ValueError:
        return None


#: Equal spec parts, validated once, by their type and JSON: monitors generated from one template share their
#: policies (each with its rule), Prometheus connection, registry, `combine` and actions instead of holding copies
#: (at 10,000 monitors with three policies each, the policies alone were about 50 MiB of the operator's memory).
#: All are frozen. Emptied when it reaches `SHARED_MAX`.
_shared: dict[tuple[str, str], Any] = {}
SHARED_MAX = 4096
PartT = TypeVar("PartT")
ModelT = TypeVar("ModelT", bound=ApiModel)


def _shared_as(part: ApiModel, make: Callable[[], PartT]) -> PartT:
    """The shared object for ``part``: ``make()``'s, the first time an equal part is seen."""
    key = (type(part).__qualname__, part.model_dump_json())
    known = _shared.get(key)
    if known is None:
        if len(_shared) >= SHARED_MAX:
            _shared.clear()
        known = _shared[key] = make()
    return cast(PartT, known)


def _shared_policy(policy: Policy) -> tuple[Policy, Rule]:
    return _shared_as(policy, lambda: (policy, rule_from_policy(policy)))


def _shared_part(part: ModelT) -> ModelT:
    return _shared_as(part, lambda: part)


def monitor_from_body(body: Mapping[str, Any]) -> Monitor:
    """The `Monitor` of a watched ModelMonitor object. Raises `SpecError` naming the field when the spec cannot
    be used (the API server's schema and CEL rules catch the same problems earlier, when the CRD is installed)."""
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    parsed = parse_monitor(body)
    shared = [_shared_policy(policy) for policy in parsed.policies]
    spec = parsed.model_copy(
        update={
            "policies": [policy for policy, _ in shared],
            "prometheus": _shared_part(parsed.prometheus),
            "combine": _shared_part(parsed.combine),
            "registry": _shared_part(parsed.registry) if parsed.registry is not None else None,
            "actions": {name: _shared_part(action) for name, action in parsed.actions.items()},
        }
    )
    return Monitor(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        spec=spec,
        engine=monitor_from_api(namespace, name, spec, tuple(rule for _, rule in shared)),
        requests=tuple(_request(namespace, name, spec, i) for i in range(len(spec.policies))),
        interval_seconds=duration_seconds(spec.interval),
        created=_created(meta),
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
    )


@dataclass(frozen=True)
class Reconciled:
    """One cycle of one monitor: the evaluation, and the statuses and Events that follow from it."""

    monitor: Monitor
    evaluation: Evaluation
    prior_status: Mapping[str, Any]
    #: The older monitor that changes the same workload, when this one must yield to it (no workload-changing
    #: action, a Conflict condition).
    conflict_with: str | None = None

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """What the actions layer is asked to do this cycle."""
        return self.evaluation.decisions

    @property
    def status(self) -> dict[str, Any]:
        """The status to write when no action ran this cycle."""
        return self.with_actions(self.prior_status, ())

    def with_pending(self, prior: Mapping[str, Any], records: Sequence[ActionRecord]) -> dict[str, Any]:
        """The status to persist before acting: this cycle's policy states (the episode's activeSince is part of
        every idempotency key) with ``records`` (Pending) replacing the Pending records of the same keys (a
        Pending record is re-recorded with a new reason, e.g. still awaiting approval)."""
        keys = {r.key for r in records}
        kept = [
            a
            for a in prior.get("actions") or []
            if not (a.get("key") in keys and a.get("result") == ActionResult.PENDING.value)
        ]
        return self.with_actions({**prior, "actions": kept}, records)

    def with_actions(
        self,
        prior: Mapping[str, Any],
        records: Sequence[ActionRecord],
        last_known_good: Mapping[str, Any] | None = None,
        registry: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The status after this cycle's actions: ``records`` merged into the history of ``prior`` (the prior
        status, or the one persisted by `with_pending`); ``registry`` replaces ``status.registry`` when given."""
        return render_status(
            self.monitor.engine,
            self.evaluation,
            prior_status=prior,
            observed_generation=self.monitor.generation,
            action_records=records,
            last_known_good=last_known_good,
            conflict_with=self.conflict_with,
            registry=registry,
        )

    @property
    def changed(self) -> bool:
        """Whether a policy changed state or something was decided (such monitors are written first)."""
        return self.evaluation.changed

    def events(self, records: Sequence[ActionRecord]) -> list[Event]:
        """The Events of this cycle: one per policy transition and one per action record."""
        signals = {p.name: p.signal or "query" for p in self.monitor.spec.policies}
        events = [
            Event(
                t.event_type,
                t.reason,
                f"policy {t.policy} ({signals.get(t.policy, '')}) {t.old.value} -> {t.new.value}: {t.message}",
            )
            for t in self.evaluation.transitions
        ]
        events.extend(
            Event(
                "Warning" if record.result in (ActionResult.FAILED, ActionResult.SKIPPED) else "Normal",
                f"Action{record.result.value}",
                f"{record.name} ({record.type}) for policy {record.policy}: {record.reason}",
            )
            for record in records
        )
        return events


def reconcile(
    monitor: Monitor,
    measurements: Mapping[str, Measurement],
    prior_status: Mapping[str, Any],
    now: datetime,
    *,
    conflict_with: str | None = None,
) -> Reconciled:
    """Evaluate every policy of ``monitor`` on this cycle's ``measurements`` (by policy name; a policy without
    one counts as an Error and holds) against the ``prior_status``, at ``now``. ``conflict_with`` names the older
    monitor changing the same workload (`modelmonitor.policy.conflicts`), when there is one."""
    evaluation = evaluate(monitor.engine, prior_status, measurements, now)
    return Reconciled(monitor, evaluation, prior_status, conflict_with)


_VOLATILE_POLICY_FIELDS = frozenset({"value", "samples", "message", "threshold"})


def _material(status: Mapping[str, Any]) -> Any:
    """A status without what changes every cycle while nothing happens (evaluation time, measured values)."""
    policies = [{k: v for k, v in p.items() if k not in _VOLATILE_POLICY_FIELDS} for p in status.get("policies") or []]
    rest = {k: v for k, v in status.items() if k not in ("lastEvaluationTime", "policies", "message")}
    return rest, policies


class StatusWrite(Enum):
    """Whether a monitor's new status is written, and how (`status_write`)."""

    #: Nothing but measured values changed and no heartbeat instant passed: not written.
    NONE = "none"
    #: Nothing but measured values changed, and a heartbeat instant passed: written after the cycle.
    HEARTBEAT = "heartbeat"
    #: A state, condition, action or anything else besides the measured values changed: written in the cycle.
    CHANGE = "change"


def status_write(
    prior: Mapping[str, Any],
    status: Mapping[str, Any],
    now: datetime,
    heartbeat_seconds: float,
    phase: float = 0.0,
) -> StatusWrite:
    """How ``status`` is written over ``prior``: a change when something besides the measured values changed;
    else a heartbeat when a heartbeat instant of this monitor has passed since half a period after the last write,
    or always without a heartbeat period (``heartbeat_seconds`` <= 0); else not at all.
    The instants are ``phase`` (in [0, 1)) of a period apart from the epoch's multiples of the period, so monitors
    with different phases are rewritten in different cycles; at most one heartbeat write per period.

    The half period: a status just written (a change, or every monitor's first status after a start) needs no
    heartbeat at the next instant. Without it, the monitors a start writes over its first minutes each came due
    again at their instant in those minutes, thousands at once at 10,000 monitors, waiting behind the start's
    own writes. So a status is at most one and a half periods old, one period when nothing changes."""
    if _material(prior) != _material(status):
        return StatusWrite.CHANGE
    if heartbeat_seconds <= 0:
        return StatusWrite.HEARTBEAT
    try:
        last = parse_time(str(prior.get("lastEvaluationTime", "")))
    except ValueError:
        return StatusWrite.CHANGE
    offset = phase * heartbeat_seconds
    due = math.floor((now.timestamp() - offset) / heartbeat_seconds) > math.floor(
        (last.timestamp() + heartbeat_seconds / 2 - offset) / heartbeat_seconds
    )
    return StatusWrite.HEARTBEAT if due else StatusWrite.NONE
