"""The one place that renders a ModelMonitor's ``status``: phase, message, per-policy states, conditions,
the bounded action history, ``firingPolicies`` and ``lastAction``.

Phase (first match wins, most urgent for the user first):

=========  ==========================================================================================
Paused     ``spec.paused``: nothing is evaluated or decided
Invalid    the spec cannot be evaluated, or a policy's answer has an unusable shape
Degraded   a policy failed to measure ``degradedAfterErrors`` times in a row
Acting     an action is in progress (a record with result Pending)
Firing     a policy is Firing or Resolving (``allOf``: every policy is)
Pending    a policy is Pending (``allOf``: or some, not all, are firing)
NoData     a policy has no data to judge
Healthy    everything else
=========  ==========================================================================================

A policy held by NoData/Error counts with its held episode state (a Firing policy whose query just failed is
still firing), so the phase does not flap with Prometheus hiccups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from modelmonitor.policy.engine import Evaluation
from modelmonitor.policy.model import Combine, MonitorSpec
from modelmonitor.policy.outcome import OutcomeKind
from modelmonitor.policy.records import ActionRecord, ActionResult, records_from_status
from modelmonitor.policy.state import FIRING_STATES, PolicyState, State
from modelmonitor.policy.timefmt import format_time, require_aware

MAX_ACTION_HISTORY = 20


class Phase(StrEnum):
    """The monitor's phase (``status.phase``, shown by ``kubectl get mm``)."""

    HEALTHY = "Healthy"
    PENDING = "Pending"
    FIRING = "Firing"
    ACTING = "Acting"
    NO_DATA = "NoData"
    DEGRADED = "Degraded"
    PAUSED = "Paused"
    INVALID = "Invalid"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def firing_policies(states: Sequence[PolicyState]) -> list[str]:
    """Names of the policies whose episode is Firing or Resolving (also while held by NoData/Error)."""
    return [s.name for s in states if s.episode_state in FIRING_STATES]


def degraded_policies(states: Sequence[PolicyState], degraded_after_errors: int) -> list[PolicyState]:
    """Policies that failed to measure at least ``degradedAfterErrors`` times in a row: while there is one,
    the monitor is Degraded (the condition, the phase unless Paused or Invalid, and the MonitorDegraded alert)."""
    return [s for s in states if s.error_streak >= degraded_after_errors]


def conflict_message(other: str) -> str:
    """The ``Conflict`` condition's message while ``other`` (an older ModelMonitor) changes the same workload."""
    return (
        f"ModelMonitor {other} is older and changes the same workload: this monitor takes no workload-changing "
        f"action (scale, rollback, promotion) until {other} is deleted or retargeted; its alerts still go out"
    )


def condition_of(status: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    """The condition of type ``kind`` in a written status, or None."""
    return _prior_conditions(status).get(kind)


def _in_progress(actions: Sequence[ActionRecord]) -> list[ActionRecord]:
    return [a for a in actions if a.result is ActionResult.PENDING]


def monitor_phase(
    spec: MonitorSpec, states: Sequence[PolicyState], actions: Sequence[ActionRecord] = ()
) -> tuple[Phase, str]:
    """The phase of a monitor and the message saying why."""
    if spec.paused:
        return Phase.PAUSED, "monitoring is paused (spec.paused); policy states and timers are kept"
    invalid = [s for s in states if s.last_outcome is OutcomeKind.INVALID]
    if invalid:
        return Phase.INVALID, "; ".join(f"policy {s.name}: {s.message}" for s in invalid)
    degraded = degraded_policies(states, spec.degraded_after_errors)
    if degraded:
        return Phase.DEGRADED, "; ".join(
            f"policy {s.name}: {s.error_streak} consecutive measurement errors "
            f"(degradedAfterErrors {spec.degraded_after_errors}): {s.message}"
            for s in degraded
        )
    running = _in_progress(actions)
    if running:
        return Phase.ACTING, "; ".join(f"action {a.name} for policy {a.policy} in progress" for a in running)
    firing = firing_policies(states)
    if firing and (spec.combine is Combine.ANY_OF or len(firing) == len(states)):
        return Phase.FIRING, "firing: " + ", ".join(firing)
    pending = [s.name for s in states if s.episode_state is State.PENDING]
    if pending or firing:
        parts = []
        if pending:
            parts.append("pending: " + ", ".join(pending))
        if firing:
            parts.append(f"firing: {', '.join(firing)} (allOf: waiting for every policy)")
        return Phase.PENDING, "; ".join(parts)
    no_data = [s.name for s in states if s.state is State.NO_DATA]
    if no_data:
        return Phase.NO_DATA, "no data to judge: " + ", ".join(no_data)
    errors = [s for s in states if s.state is State.ERROR]
    if errors:
        return Phase.HEALTHY, "; ".join(
            f"policy {s.name} could not be measured ({s.error_streak} of {spec.degraded_after_errors} "
            "errors before Degraded)"
            for s in errors
        )
    return Phase.HEALTHY, (f"all {_count(len(states), 'policy', 'policies')} OK" if states else "no policies")


def _condition(
    prior: Mapping[str, Mapping[str, Any]],
    kind: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
) -> dict[str, Any]:
    """A condition; ``lastTransitionTime`` moves only when ``status`` changes (Kubernetes convention)."""
    old = prior.get(kind)
    since = format_time(now)
    if old is not None and old.get("status") == status and isinstance(old.get("lastTransitionTime"), str):
        since = old["lastTransitionTime"]
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": since}


def _prior_conditions(prior_status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    if not prior_status:
        return {}
    return {
        c["type"]: c
        for c in prior_status.get("conditions") or []
        if isinstance(c, Mapping) and isinstance(c.get("type"), str)
    }


def merge_actions(
    history: Sequence[ActionRecord],
    new: Sequence[ActionRecord],
    limit: int = MAX_ACTION_HISTORY,
) -> list[ActionRecord]:
    """The action history with ``new`` records added, newest last, at most ``limit`` long.

    A record repeating the key and result of one already kept is dropped (decisions repeat every cycle while a
    policy fires); a record whose key matches a Pending one replaces it and moves to the end (the action in
    flight has finished), also when an older record of that key has the same result (a step first skipped by
    its cooldown, then interrupted, then skipped for good).
    """
    merged = list(history)
    for record in new:
        settles = record.result is not ActionResult.PENDING and any(
            r.key == record.key and r.result is ActionResult.PENDING for r in merged
        )
        if not settles and any(r.key == record.key and r.result is record.result for r in merged):
            continue
        merged = [r for r in merged if not (r.key == record.key and r.result in (ActionResult.PENDING, record.result))]
        merged.append(record)
    return merged[-limit:] if limit > 0 else []


def last_action_text(actions: Sequence[ActionRecord]) -> str:
    """``"rollback Succeeded 2026-11-24T10:00:00Z"`` for the newest record, or ``""``."""
    if not actions:
        return ""
    newest = actions[-1]
    return f"{newest.name} {newest.result.value} {format_time(newest.at)}"


def render_status(
    spec: MonitorSpec,
    evaluation: Evaluation,
    *,
    prior_status: Mapping[str, Any] | None = None,
    observed_generation: int | None = None,
    action_records: Sequence[ActionRecord] = (),
    last_known_good: Mapping[str, Any] | None = None,
    conflict_with: str | None = None,
    registry: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole ``status`` of a monitor after ``evaluation``.

    ``action_records`` are this cycle's records, merged into the prior history (``status.actions``, read with
    `ActionRecord.from_status`; ValueError names an entry that cannot be read).
    ``last_known_good`` replaces the prior one when given, otherwise the prior one is kept.
    ``conflict_with`` names the older monitor changing the same workload (the ``Conflict`` condition).
    ``registry`` (``status.registry``) replaces the prior one when given; with one, the ``RegistrySynced``
    condition says whether an alias move waits for the registry.
    """
    prior_status = prior_status or {}
    now = evaluation.now
    states = evaluation.states
    actions = merge_actions(records_from_status(prior_status), action_records)
    phase, message = monitor_phase(spec, states, actions)
    conditions = _render_conditions(spec, states, actions, phase, message, prior_status, now, conflict_with)
    status: dict[str, Any] = {
        "phase": phase.value,
        "message": message,
        "lastEvaluationTime": format_time(now),
        "firingPolicies": ",".join(firing_policies(states)),
        "lastAction": last_action_text(actions),
        "policies": [s.to_status() for s in states],
        "actions": [a.to_status() for a in actions],
        "conditions": conditions,
    }
    if observed_generation is not None:
        status["observedGeneration"] = observed_generation
    lkg = last_known_good if last_known_good is not None else prior_status.get("lastKnownGood")
    if lkg:
        status["lastKnownGood"] = dict(lkg)
    held = registry if registry is not None else prior_status.get("registry")
    if held:
        status["registry"] = dict(held)
        conditions.append(_registry_condition(held, _prior_conditions(prior_status), now))
    elif registry is not None and prior_status.get("registry"):
        status["registry"] = None  # spec.registry was removed; the status is a merge patch, where null deletes
    return status


def _registry_condition(registry: Mapping[str, Any], prior: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """``RegistrySynced``: False while an alias move waits for the registry, saying which and why."""
    pending = registry.get("pending")
    if pending:
        message = (
            f"{pending.get('kind')} ({pending.get('why')}) pending since {pending.get('since')}, "
            f"{pending.get('attempts', 0)} attempts"
        )
        if pending.get("lastError"):
            message += f"; last error: {pending['lastError']}"
        return _condition(prior, "RegistrySynced", "False", "AliasMovePending", message, now)
    served = registry.get("servedVersion") or "unknown"
    aliased = registry.get("aliasVersion") or "none"
    message = f"serving version {served}; the alias points at version {aliased}"
    return _condition(prior, "RegistrySynced", "True", "InSync", message, now)


def _render_conditions(
    spec: MonitorSpec,
    states: Sequence[PolicyState],
    actions: Sequence[ActionRecord],
    phase: Phase,
    message: str,
    prior_status: Mapping[str, Any],
    now: datetime,
    conflict_with: str | None,
) -> list[dict[str, Any]]:
    prior = _prior_conditions(prior_status)
    if phase in (Phase.INVALID, Phase.DEGRADED, Phase.PAUSED):
        ready = _condition(prior, "Ready", "False", phase.value, message, now)
    else:
        ready = _condition(prior, "Ready", "True", "Evaluated", message, now)

    failing = [s for s in states if s.state is State.ERROR]
    if spec.paused:
        evaluating = _condition(prior, "Evaluating", "False", "Paused", "monitoring is paused", now)
    elif failing:
        evaluating = _condition(
            prior,
            "Evaluating",
            "False",
            "MeasurementFailed",
            "; ".join(f"policy {s.name}: {s.message}" for s in failing),
            now,
        )
    else:
        evaluating = _condition(
            prior,
            "Evaluating",
            "True",
            "Measured",
            f"{_count(len(states), 'policy', 'policies')} measured this cycle",
            now,
        )

    degraded = degraded_policies(states, spec.degraded_after_errors)
    if degraded:
        degraded_condition = _condition(
            prior,
            "Degraded",
            "True",
            "ConsecutiveErrors",
            "; ".join(f"policy {s.name}: {s.error_streak} consecutive errors" for s in degraded),
            now,
        )
    else:
        degraded_condition = _condition(
            prior,
            "Degraded",
            "False",
            "BelowErrorLimit",
            f"no policy failed {spec.degraded_after_errors} times in a row",
            now,
        )

    running = _in_progress(actions)
    if running:
        acting = _condition(
            prior,
            "ActionInProgress",
            "True",
            "ActionPending",
            "; ".join(f"{a.name} ({a.key})" for a in running),
            now,
        )
    else:
        acting = _condition(prior, "ActionInProgress", "False", "Idle", "no action in progress", now)
    if conflict_with is not None:
        conflict = _condition(prior, "Conflict", "True", "WorkloadConflict", conflict_message(conflict_with), now)
    else:
        conflict = _condition(
            prior, "Conflict", "False", "NoConflict", "no older ModelMonitor changes the same workload", now
        )
    return [ready, evaluating, degraded_condition, acting, conflict]


def _entry_firing(entry: Mapping[str, Any]) -> bool:
    """Whether a raw ``status.policies[]`` entry's episode is Firing or Resolving (held or not)."""
    state = entry.get("state")
    if state in (State.NO_DATA.value, State.ERROR.value):
        state = entry.get("heldState")
    return state in (State.FIRING.value, State.RESOLVING.value)


def render_invalid_status(
    reason: str,
    *,
    now: datetime,
    prior_status: Mapping[str, Any] | None = None,
    observed_generation: int | None = None,
) -> dict[str, Any]:
    """The status of a monitor whose spec the operator cannot evaluate (``phase: Invalid``, ``reason`` said).

    The prior policy states, action history and lastKnownGood are kept unchanged, so fixing the spec resumes
    where the monitor was.
    """
    now = require_aware(now, field="now").replace(microsecond=0)
    prior_status = prior_status or {}
    prior = _prior_conditions(prior_status)
    actions = records_from_status(prior_status)
    policies = [dict(p) for p in prior_status.get("policies") or []]
    status: dict[str, Any] = {
        "phase": Phase.INVALID.value,
        "message": reason,
        "lastEvaluationTime": format_time(now),
        "firingPolicies": ",".join(str(p.get("name")) for p in policies if _entry_firing(p)),
        "lastAction": last_action_text(actions),
        "policies": policies,
        "actions": [a.to_status() for a in actions],
        "conditions": [
            _condition(prior, "Ready", "False", "Invalid", reason, now),
            _condition(prior, "Evaluating", "False", "Invalid", "the spec cannot be evaluated", now),
            _condition(prior, "Degraded", "Unknown", "Invalid", "not evaluated while the spec is invalid", now),
            _condition(
                prior,
                "ActionInProgress",
                "True" if _in_progress(actions) else "False",
                "ActionPending" if _in_progress(actions) else "Idle",
                "",
                now,
            ),
            _condition(prior, "Conflict", "Unknown", "Invalid", "not evaluated while the spec is invalid", now),
        ],
    }
    if observed_generation is not None:
        status["observedGeneration"] = observed_generation
    if prior_status.get("lastKnownGood"):
        status["lastKnownGood"] = dict(prior_status["lastKnownGood"])
    if prior_status.get("registry"):
        status["registry"] = dict(prior_status["registry"])
    return status
