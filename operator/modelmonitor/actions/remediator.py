"""The remediator: where a cycle's decisions become changes to the cluster, behind the rails.

For each decision (repeated every cycle while a policy fires, under the same idempotency key):

1. the handler of the action's type *plans* from what the cluster holds now; its own ledger (annotations on the
   objects it changed, the Jobs it created) tells whether this key was already done, so nothing depends on
   the bounded status history alone;
2. the rails, in order: **dry run** (record what would have been done), **approval** (record Pending until the
   ModelMonitor carries the approval annotation), **cooldown** and **budget** (record Skipped with the next
   allowed time);
3. the plan is recorded as **Pending in status before acting** (`Checkpoint`), then carried out, then the record
   is confirmed (Succeeded/Failed) or, for a Job or a rollout, left Pending and followed every cycle until it
   ends.

An operator killed between 2 and 3 finds the Pending record and the handler's ledger when it comes back, and
finishes what was started instead of starting it again: exactly one Job, one scale step, one rollback.
``paused`` stops everything: nothing is planned, tracked or sent while a monitor is paused.

A monitor in conflict (``MonitorContext.conflict_with``: an older ModelMonitor changes the same workload)
records its workload-changing decisions as Skipped, right after the dry-run rail; its alerts still go out.
Entering and leaving the conflict, and a Degraded episode, are told with Events (and, for Degraded, alerts).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from modelmonitor.actions import rails
from modelmonitor.actions.alert import AlertHandler
from modelmonitor.actions.base import (
    AWAITING_APPROVAL,
    ActionsOutcome,
    Checkpoint,
    Event,
    MonitorContext,
    Plan,
    Settled,
    has_record,
    is_awaiting_approval,
    record,
)
from modelmonitor.actions.registry import RegistryHandler
from modelmonitor.actions.retrain import RetrainHandler
from modelmonitor.actions.rollback import RollbackHandler
from modelmonitor.actions.scale import ScaleHandler, give_back_action
from modelmonitor.actions.testhooks import CrashHook
from modelmonitor.adapters.alertmanager import AlertSender
from modelmonitor.adapters.kubernetes import KubernetesError, Workloads
from modelmonitor.adapters.registry import RegistryConnections
from modelmonitor.api import Action, AlertAction, ScaleAction
from modelmonitor.policy import (
    ActionRecord,
    ActionResult,
    Decision,
    DecisionKind,
    Evaluation,
    State,
    condition_of,
    conflict_message,
    idempotency_key,
)
from modelmonitor.policy.conflicts import changes_workload

log = logging.getLogger("modelmonitor.actions")

_EPISODE_STATES = (State.PENDING, State.FIRING, State.RESOLVING)


def open_episodes(ctx: MonitorContext, evaluation: Evaluation) -> Callable[[str], bool]:
    """Whether a record key belongs to an episode that is still open (its policy Pending, Firing or Resolving,
    also while held by NoData/Error), so that a Prometheus hiccup does not end what an episode started."""
    prefixes = tuple(
        idempotency_key(ctx.namespace, ctx.name, s.name, s.active_since, "")
        for s in evaluation.states
        if s.active_since is not None and s.episode_state in _EPISODE_STATES
    )
    # A give-back (scale-down) stays open while no policy naming its action has an episode open.
    active = {s.name for s in evaluation.states if s.episode_state in _EPISODE_STATES}
    quiet = {
        name for name in ctx.spec.actions if not any(name in p.actions for p in ctx.spec.policies if p.name in active)
    }

    def is_open(key: str) -> bool:
        giving_back = give_back_action(key)
        if giving_back is not None:
            return giving_back in quiet
        return key.startswith(prefixes) if prefixes else False

    return is_open


def conflict_reason(monitor: MonitorContext, other: str) -> str:
    """Why a workload-changing action of ``monitor`` is not taken while ``other`` changes its workload."""
    return f"conflict: ModelMonitor {other} is older and also changes {monitor.target_text}"


def conflict_events(monitor: MonitorContext) -> list[Event]:
    """A Warning Event when the monitor enters a conflict (or yields to another monitor than before), a Normal
    one when it leaves it; nothing while it stays as it was. The prior ``Conflict`` condition says which."""
    prior = condition_of(monitor.status, "Conflict")
    was = prior is not None and prior.get("status") == "True"
    other = monitor.conflict_with
    if other is not None:
        if was and prior is not None and prior.get("message") == conflict_message(other):
            return []
        return [
            Event(
                "Warning",
                "WorkloadConflict",
                f"{conflict_reason(monitor, other)}: this monitor takes no workload-changing action until {other} "
                "is deleted or retargeted; its alerts still go out",
            )
        ]
    if was:
        return [
            Event(
                "Normal",
                "WorkloadConflictResolved",
                f"no older ModelMonitor changes {monitor.target_text} any more: workload-changing actions resume",
            )
        ]
    return []


class Remediator:
    """`Actions` for real: scale, rollback, retrain and alert, with their rails. Thread-safe."""

    def __init__(
        self,
        workloads: Workloads,
        alerts: AlertSender,
        *,
        crash: CrashHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        registries: RegistryConnections | None = None,
    ) -> None:
        self.scale = ScaleHandler(workloads)
        self.rollback = RollbackHandler(workloads)
        self.crash = crash or CrashHook()
        # Without registry connections (unit tests of other actions) monitors with spec.registry are told so.
        self.registry = RegistryHandler(registries, self.rollback) if registries is not None else None
        self.retrain = RetrainHandler(workloads, self.registry, self.crash)
        self.alert = AlertHandler(alerts, clock)
        self.handlers: Mapping[str, Any] = {
            "scale": self.scale,
            "rollback": self.rollback,
            "retrain": self.retrain,
            "alert": self.alert,
        }
        self._reported: dict[tuple[str, str, str], str] = {}  # (ns, monitor, what) -> last error reported
        self._lock = threading.Lock()

    def run(
        self, monitor: MonitorContext, evaluation: Evaluation, now: datetime, checkpoint: Checkpoint
    ) -> ActionsOutcome:
        """Track actions in flight, carry out this cycle's decisions, and track the last-known-good revision."""
        out = ActionsOutcome()
        if evaluation.paused or monitor.spec.paused or not monitor.owned():
            return out
        is_open = open_episodes(monitor, evaluation)

        def add(made: ActionRecord) -> None:
            # One record per key and result, as status keeps them: an Event per change, not per cycle; a record
            # that settles a Pending one always counts (see merge_actions).
            if any(r.key == made.key and r.result is made.result for r in out.records):
                return
            settles = made.result is not ActionResult.PENDING and any(
                r.key == made.key and r.result is ActionResult.PENDING for r in monitor.history
            )
            if settles or not any(r.key == made.key and r.result is made.result for r in monitor.history):
                out.records.append(made)

        def track_in_flight() -> None:
            for made in self.rollback.reconcile(monitor, now, is_open):
                add(made)
            for made in self.scale.reconcile(monitor, now, is_open):
                add(made)

        self._guarded(monitor, out, "tracking rollbacks and scale steps", track_in_flight)
        self._guarded(
            monitor, out, "tracking retraining Jobs", lambda: self._track_jobs(monitor, now, is_open, add, out)
        )
        for entry in monitor.history:
            if is_awaiting_approval(entry) and not is_open(entry.key):
                why = "fired again" if give_back_action(entry.key) is not None else "stopped firing"
                add(entry.settled(ActionResult.SKIPPED, f"not approved before the policy {why}", now))

        for decision in evaluation.decisions:
            try:
                self._decide(monitor, evaluation, decision, now, checkpoint, add)
            except KubernetesError as exc:
                log.warning("%s/%s: action %s: %s", monitor.namespace, monitor.name, decision.action, exc)
                add(
                    record(
                        decision, result=ActionResult.FAILED, at=now, reason=f"could not {decision.action_type}: {exc}"
                    )
                )

        self._guarded(
            monitor,
            out,
            "scaling back down",
            lambda: self._give_back(monitor, evaluation, now, checkpoint, add),
        )

        def track() -> None:
            lkg, events = self.rollback.track_last_known_good(monitor, evaluation, now)
            out.last_known_good = lkg
            out.events.extend(events)

        self._guarded(monitor, out, "tracking the last-known-good revision", track)

        def sync_registry() -> None:
            # After the rollback and the last-known-good: serving never waits for the registry.
            if self.registry is None:
                return
            out.registry, events = self.registry.sync(monitor, out.records, out.last_known_good, now)
            out.events.extend(events)

        self._guarded(monitor, out, "updating the model registry", sync_registry)
        out.events.extend(conflict_events(monitor))
        out.events.extend(self.alert.degraded(monitor, evaluation, now))
        return out

    # --- one decision ------------------------------------------------------------------------------------------

    def _decide(
        self,
        monitor: MonitorContext,
        evaluation: Evaluation,
        decision: Decision,
        now: datetime,
        checkpoint: Checkpoint,
        add: Callable[[ActionRecord], None],
    ) -> None:
        action = monitor.spec.actions.get(decision.action)
        if action is None:
            return  # the API server refuses policies naming unknown actions; nothing to do
        if decision.kind is DecisionKind.RESOLVED:
            if isinstance(action, AlertAction):
                resolved = self.alert.resolve(monitor, decision, action, now)
                if resolved is not None:
                    add(resolved)
            return
        handler = self.handlers[action.type]
        state = next((s for s in evaluation.states if s.name == decision.policy), None)
        firing_since = state.since if state is not None and state.state is State.FIRING else now
        plan = handler.plan(monitor, decision, action, now, firing_since)

        def made(result: ActionResult, reason: str, key: str) -> ActionRecord:
            return record(decision, result=result, at=now, reason=reason, key=key)

        self._carry_out(monitor, handler, decision.action, action, plan, made, decision.dry_run, now, checkpoint, add)

    def _give_back(
        self,
        monitor: MonitorContext,
        evaluation: Evaluation,
        now: datetime,
        checkpoint: Checkpoint,
        add: Callable[[ActionRecord], None],
    ) -> None:
        """Scale actions with ``scaleDown``: step back toward where they started, behind the same rails."""
        for name, action in monitor.spec.actions.items():
            if not isinstance(action, ScaleAction) or action.scale_down is None or not action.scale_down.enabled:
                continue
            naming = [p for p in monitor.spec.policies if name in p.actions]
            steps = [s for s in evaluation.steps if any(p.name == s.rule.name for p in naming)]
            plan = self.scale.give_back(monitor, name, action, steps, now)

            def made(result: ActionResult, reason: str, key: str, name: str = name) -> ActionRecord:
                # The policy of the episode whose steps up are given back (the key's third part).
                return ActionRecord(name, ScaleHandler.type, key.split("/")[2], now, result, reason, key)

            dry_run = monitor.spec.dry_run or any(p.dry_run for p in naming)
            self._carry_out(monitor, self.scale, name, action, plan, made, dry_run, now, checkpoint, add)

    def _carry_out(
        self,
        monitor: MonitorContext,
        handler: Any,
        name: str,
        action: Action,
        plan: Plan | Settled | None,
        made: Callable[[ActionResult, str, str], ActionRecord],
        dry_run: bool,
        now: datetime,
        checkpoint: Checkpoint,
        add: Callable[[ActionRecord], None],
    ) -> None:
        """Apply the rails to ``plan`` of the action ``name``, record it Pending, act, and record how it ended
        (``made`` builds the records)."""
        if plan is None:
            return
        if isinstance(plan, Settled):
            add(made(plan.result, plan.reason, plan.key))
            return
        if not plan.repeat:
            if dry_run or action.dry_run:
                add(made(ActionResult.DRY_RUN, f"dry run: would {plan.what}", plan.key))
                return
            if monitor.conflict_with is not None and changes_workload(action):
                reason = f"{conflict_reason(monitor, monitor.conflict_with)}: would {plan.what}"
                add(made(ActionResult.SKIPPED, reason, plan.key))
                return
            if action.require_approval and not monitor.approved(plan.key):
                reason = f"{AWAITING_APPROVAL}: would {plan.what}; approve with: {monitor.approve_command(plan.key)}"
                add(made(ActionResult.PENDING, reason, plan.key))
                return
            runs = rails.merge_runs(rails.runs_in_history(monitor.history, name), plan.runs)
            blocked = rails.check(action, runs, now, exclude=plan.key)
            if blocked is not None:
                add(made(ActionResult.SKIPPED, f"{blocked.reason}: {plan.what}", plan.key))
                return
        if plan.checkpoint:
            pending = made(ActionResult.PENDING, f"{plan.what} (in progress)", plan.key)
            try:
                checkpoint([pending])
            except Exception as exc:
                # Without the Pending record an interrupted action could be repeated: do not act this cycle.
                log.warning(
                    "%s/%s: not acting, the status could not be written: %s", monitor.namespace, monitor.name, exc
                )
                return
        self.crash("before-act", action.type)
        if not monitor.owned():
            log.warning("%s/%s: not acting, no longer this replica's monitor", monitor.namespace, monitor.name)
            return
        try:
            done = handler.act(monitor, plan, now)
        except KubernetesError as exc:
            if not (plan.checkpoint and exc.status == 0):
                raise
            # No answer (a reset, a timeout): the API server may have done the write. Recording Failed could be
            # false; the Pending record stays, and the next cycle finds out what happened, as after a restart.
            log.warning("%s/%s: %s: no answer, checked next cycle: %s", monitor.namespace, monitor.name, name, exc)
            return
        self.crash("after-act", action.type)
        if done.result is not None and not (plan.repeat and has_record(monitor.history, plan.key, done.result)):
            add(made(done.result, done.reason, plan.key))

    # --- in flight ---------------------------------------------------------------------------------------------

    def _track_jobs(
        self,
        monitor: MonitorContext,
        now: datetime,
        is_open: Callable[[str], bool],
        add: Callable[[ActionRecord], None],
        out: ActionsOutcome,
    ) -> None:
        records, notices = self.retrain.reconcile(monitor, now, is_open)
        for made in records:
            add(made)
        for notice in notices:
            out.events.append(Event("Warning", "RetrainFailed", f"{notice.summary}: {notice.description}"))
            for error in self.alert.notify(monitor, notice, now):
                out.events.append(Event("Warning", "AlertNotDelivered", error))

    def _guarded(self, monitor: MonitorContext, out: ActionsOutcome, what: str, step: Callable[[], Any]) -> None:
        """Run one tracking step; a Kubernetes error is logged and reported once per distinct message."""
        try:
            step()
        except KubernetesError as exc:
            log.warning("%s/%s: %s: %s", monitor.namespace, monitor.name, what, exc)
            slot = (monitor.namespace, monitor.name, what)
            with self._lock:
                repeated = self._reported.get(slot) == str(exc)
                self._reported[slot] = str(exc)
            if not repeated:
                out.events.append(Event("Warning", "ActionTrackingFailed", f"{what}: {exc}"))
        else:
            with self._lock:
                self._reported.pop((monitor.namespace, monitor.name, what), None)
