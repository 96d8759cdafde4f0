"""From the policy steps of one monitor to decisions: which actions to take, and which alerts to resolve.

Rules:
- Only a policy whose state this cycle is Firing (backed by a fresh Breach) yields action decisions. NoData,
  Error, Invalid, Pending and Resolving never do; a Firing episode held by an Error yields nothing until a
  measurement confirms it again.
- While a policy is Firing, its decisions are repeated every cycle with the same idempotency key
  ``<namespace>/<monitor>/<policy>/<activeSince>/<action>``. The actions layer acts once per key (or per its
  cooldown for repeatable actions such as scale steps and alert re-sends); ``first`` marks the cycle the
  episode started firing. A new episode has a new ``activeSince`` and so new keys.
- ``combine: allOf``: no action until every policy is Firing; then each action named by the policies is
  decided once, under the key of the first policy (in spec order) that names it.
- When a policy that fired returns to Inactive, its alert actions get a "resolved" decision carrying the key
  of the episode that ended.
- ``paused``: no decisions at all. ``dryRun`` (monitor or policy): decisions are marked dry-run, so the
  actions layer records "would have done X" instead of doing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from modelmonitor.policy.model import Combine, MonitorSpec, Severity
from modelmonitor.policy.state import PolicyStep, State
from modelmonitor.policy.timefmt import format_time

ALERT_ACTION_TYPE = "alert"


class DecisionKind(StrEnum):
    """What a decision asks of the actions layer."""

    ACT = "act"  # take the action for a firing policy
    RESOLVED = "resolved"  # the episode ended: resolve what was raised (alerts)


@dataclass(frozen=True)
class Decision:
    """One thing the actions layer should do, with the evidence to put in its record, Event or alert."""

    kind: DecisionKind
    policy: str
    action: str
    action_type: str | None
    key: str
    active_since: datetime
    dry_run: bool
    first: bool
    severity: Severity
    value: float | None
    threshold: float | None
    window: str
    query: str
    reason: str


def idempotency_key(namespace: str, monitor: str, policy: str, active_since: datetime, action: str) -> str:
    """``<namespace>/<monitor>/<policy>/<activeSince>/<action>``: the same for every cycle of one episode."""
    return f"{namespace}/{monitor}/{policy}/{format_time(active_since)}/{action}"


def _decision(spec: MonitorSpec, step: PolicyStep, action: str, kind: DecisionKind, active_since: datetime) -> Decision:
    rule = step.rule
    state = step.state
    if kind is DecisionKind.ACT:
        reason = f"policy {rule.name} firing: {state.message}"
    else:
        reason = f"policy {rule.name} resolved: {state.message}"
    return Decision(
        kind=kind,
        policy=rule.name,
        action=action,
        action_type=spec.action_types.get(action),
        key=idempotency_key(spec.namespace, spec.name, rule.name, active_since, action),
        active_since=active_since,
        dry_run=spec.dry_run or rule.dry_run,
        first=step.started_firing,
        severity=rule.severity,
        value=state.value,
        threshold=state.threshold,
        window=rule.window,
        query=rule.query,
        reason=reason,
    )


def decide(spec: MonitorSpec, steps: Sequence[PolicyStep]) -> tuple[Decision, ...]:
    """The decisions of one monitor's cycle, in spec order of the policies. Pure."""
    if spec.paused:
        return ()
    firing = [s for s in steps if s.state.state is State.FIRING]
    decisions: list[Decision] = []
    if spec.combine is Combine.ALL_OF:
        if steps and len(firing) == len(steps):
            seen: set[str] = set()
            for step in firing:
                assert step.state.active_since is not None
                for action in step.rule.actions:
                    if action in seen:
                        continue
                    seen.add(action)
                    decisions.append(_decision(spec, step, action, DecisionKind.ACT, step.state.active_since))
    else:
        for step in firing:
            assert step.state.active_since is not None
            for action in dict.fromkeys(step.rule.actions):
                decisions.append(_decision(spec, step, action, DecisionKind.ACT, step.state.active_since))

    for step in steps:
        if step.ended_episode is None:
            continue
        for action in dict.fromkeys(step.rule.actions):
            action_type = spec.action_types.get(action)
            # Without declared types every action is told; the actions layer ignores "resolved" for the rest.
            if action_type is None or action_type == ALERT_ACTION_TYPE:
                decisions.append(_decision(spec, step, action, DecisionKind.RESOLVED, step.ended_episode))
    return tuple(decisions)
