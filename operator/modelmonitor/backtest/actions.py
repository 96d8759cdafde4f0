"""The actions a replayed cycle would have run: the engine's decisions behind the operator's own rails.

Nothing is executed and no cluster is read, so what only the cluster knows is left out; everything the
ModelMonitor and its history decide is applied as the remediator (`modelmonitor.actions.remediator`) applies it,
in the same order, with the same pure rails (`modelmonitor.actions.rails`) and the same records:

- one run per idempotency key (per episode and action); a scale action takes a new step (``<key>#2``, ...)
  each cycle its rails allow while the policy fires, after the action's ``stabilizationWindow``;
- **dry run** (monitor, policy or action): recorded DryRun, never a run;
- **approval** (``requireApproval``): recorded Pending ("awaiting approval"); nobody approves in a replay;
- **cooldown** and **budget**: recorded Skipped with the next allowed time; the decision is retried every cycle
  of the episode, as live, and runs once the rails allow.

Not replayed (the cluster's side, not in Prometheus): replica bounds (``minReplicas``/``maxReplicas``) and
HorizontalPodAutoscalers, the workload's revisions (rollback preconditions, last-known-good), how long a
retraining Job runs, alert re-sends and resolutions, scale-down after the policies clear.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from modelmonitor.actions import rails
from modelmonitor.actions.base import AWAITING_APPROVAL, has_record
from modelmonitor.actions.scale import step_key
from modelmonitor.api import ScaleAction, duration_seconds
from modelmonitor.policy import ActionRecord, ActionResult, Decision, DecisionKind, Evaluation, State
from modelmonitor.reconcile import Monitor

#: The result of a record that stands for a run: what the remediator records once the change is made.
RAN = ActionResult.SUCCEEDED


def _key(monitor: Monitor, evaluation: Evaluation, decision: Decision, history: Sequence[ActionRecord]) -> str | None:
    """The record key of the run this decision asks for now, or None when it needs no run."""
    action = monitor.spec.actions[decision.action]
    if not isinstance(action, ScaleAction):
        return None if has_record(history, decision.key, RAN) else decision.key
    window = duration_seconds(action.stabilization_window)
    state = next(s for s in evaluation.states if s.name == decision.policy)
    firing_since = state.since if state.state is State.FIRING else evaluation.now
    if window > 0 and evaluation.now - firing_since < timedelta(seconds=window):
        return None  # the recommendation has not stood for the whole window yet
    done = sum(1 for r in history if r.result is RAN and r.key.split("#", 1)[0] == decision.key)
    return step_key(decision.key, done + 1)


def would_run(monitor: Monitor, evaluation: Evaluation, history: Sequence[ActionRecord]) -> list[ActionRecord]:
    """The records this cycle's decisions would add, given every record of the replay so far (``history``,
    unbounded: the rails count runs the status' bounded history may have dropped, as the cluster's ledgers do)."""
    made: list[ActionRecord] = []
    now = evaluation.now
    for decision in evaluation.decisions:
        action = monitor.spec.actions.get(decision.action)
        if decision.kind is not DecisionKind.ACT or action is None:
            continue
        so_far = [*history, *made]
        key = _key(monitor, evaluation, decision, so_far)
        if key is None:
            continue
        what = f"{action.type} ({decision.action})"
        if decision.dry_run or action.dry_run:
            result, reason = ActionResult.DRY_RUN, f"dry run: would {what}"
        elif action.require_approval:
            result, reason = ActionResult.PENDING, f"{AWAITING_APPROVAL}: would {what}"
        else:
            blocked = rails.check(action, rails.runs_in_history(so_far, decision.action), now, exclude=key)
            if blocked is not None:
                result, reason = ActionResult.SKIPPED, f"{blocked.reason}: {what}"
            else:
                result, reason = RAN, f"would {what}: {decision.reason}"
        # One record per key and result, as the remediator keeps them.
        if not has_record(so_far, key, result):
            made.append(ActionRecord.for_decision(decision, result=result, at=now, reason=reason, key=key))
    return made
