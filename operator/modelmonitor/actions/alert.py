"""The alert action: a Kubernetes Event always, plus Alertmanager (API v2) and a generic JSON webhook.

An episode's alert is one Alertmanager alert, identified by its labels (alertname ``ModelMonitorPolicyFiring``,
namespace, monitor, model, policy, severity and the action's own labels); the measured value, threshold,
window and query travel as annotations, since labels that change would make a new alert. While the policy
fires it is re-sent every ``resendInterval`` with ``endsAt`` pushed forward (four times the larger of
``resendInterval`` and the monitor's interval, as Prometheus does), so it resolves by itself if the operator
stops; when the policy clears it is sent once more with ``endsAt`` = now, which resolves it. Re-sends are
idempotent in Alertmanager, so after a restart the operator simply re-sends.

Status records one entry per episode for the first delivery (``<key>``) and one for the resolution
(``<key>#resolved``); re-sends add nothing unless they fail.

A monitor that cannot measure is reported the same way (`AlertHandler.degraded`): from the cycle it becomes
Degraded (``degradedAfterErrors`` failed measurements in a row) one alert ``MonitorDegraded`` naming the
failing policies, their queries and the last errors goes to every alert action of the monitor, re-sent while
it lasts and resolved when it recovers, with a Warning Event ``MonitorDegraded`` once per episode. The episode
is the Degraded condition's: its ``lastTransitionTime`` in status is the alert's ``startsAt``, so a restarted
operator carries on the same episode instead of opening a new one. The monitor's and its policies' ``dryRun``
do not hold it back (it reports the monitor's own health, not an action on the model); an alert action with
``dryRun`` sends nothing, as for every other alert.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from modelmonitor.actions.base import Done, Event, MonitorContext, Notice, Plan, evidence, has_record, record
from modelmonitor.adapters.alertmanager import AlertError, AlertSender
from modelmonitor.api import ActionType, AlertAction, duration_seconds
from modelmonitor.policy import (
    ActionRecord,
    ActionResult,
    Decision,
    Evaluation,
    PolicyState,
    condition_of,
    degraded_policies,
    format_time,
    parse_time,
)

ALERTNAME = "ModelMonitorPolicyFiring"
DEGRADED_ALERTNAME = "MonitorDegraded"
#: How long a one-off notice (a failed retraining) stays active in Alertmanager.
NOTICE_SECONDS = 3600.0


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def alert_labels(ctx: MonitorContext, decision: Decision, action: AlertAction) -> dict[str, str]:
    """The labels identifying the episode's alert (stable while it fires)."""
    return {
        **action.labels,
        "alertname": ALERTNAME,
        "namespace": ctx.namespace,
        "monitor": ctx.name,
        "model": ctx.spec.model.name,
        "policy": decision.policy,
        "severity": decision.severity.value,
    }


def alert_annotations(ctx: MonitorContext, decision: Decision) -> dict[str, str]:
    """The evidence: value, threshold, window and query, with a summary for people."""
    return {
        "summary": f"{ctx.namespace}/{ctx.name}: policy {decision.policy} is firing",
        "description": decision.reason,
        "value": _number(decision.value),
        "threshold": _number(decision.threshold),
        "window": decision.window,
        "query": decision.query,
        "key": decision.key,
    }


def ends_at(ctx: MonitorContext, action: AlertAction, now: datetime) -> datetime:
    """When a firing alert expires unless re-sent."""
    interval = max(duration_seconds(action.resend_interval), duration_seconds(ctx.spec.interval))
    return now + timedelta(seconds=4 * interval)


def alertmanager_alert(
    ctx: MonitorContext, decision: Decision, action: AlertAction, *, now: datetime, resolved: bool
) -> dict[str, Any]:
    """One Alertmanager API v2 alert object for the episode (``endsAt`` now when ``resolved``)."""
    return {
        "labels": alert_labels(ctx, decision, action),
        "annotations": alert_annotations(ctx, decision),
        "startsAt": format_time(decision.active_since),
        "endsAt": format_time(now if resolved else ends_at(ctx, action, now)),
    }


def webhook_payload(
    ctx: MonitorContext, decision: Decision, action: AlertAction, *, now: datetime, resolved: bool
) -> dict[str, Any]:
    """The JSON a generic webhook receives: the alert's fields flat, plus labels and annotations."""
    alert = alertmanager_alert(ctx, decision, action, now=now, resolved=resolved)
    return {
        "status": "resolved" if resolved else "firing",
        "namespace": ctx.namespace,
        "monitor": ctx.name,
        "model": ctx.spec.model.name,
        "policy": decision.policy,
        "action": decision.action,
        "severity": decision.severity.value,
        "value": decision.value,
        "threshold": decision.threshold,
        "window": decision.window,
        "query": decision.query,
        "key": decision.key,
        "message": decision.reason,
        **alert,
    }


def degraded_notice(ctx: MonitorContext, evaluation: Evaluation, failing: Sequence[PolicyState]) -> Notice:
    """The MonitorDegraded alert's text: the failing policies, their queries and the last errors."""
    queries = {step.rule.name: step.rule.query for step in evaluation.steps}
    errors = list(dict.fromkeys(s.message for s in failing if s.message))
    names = ", ".join(s.name for s in failing)
    return Notice(
        alertname=DEGRADED_ALERTNAME,
        policy="",
        summary=(
            f"{ctx.namespace}/{ctx.name} is Degraded: {names} failed to measure "
            f"{ctx.spec.degraded_after_errors} or more times in a row (degradedAfterErrors)"
        ),
        description="; ".join(
            f"policy {s.name}: {s.error_streak} errors in a row, query: {queries.get(s.name) or 'unknown'}"
            for s in failing
        )
        + (f"; last error: {' | '.join(errors)}" if errors else ""),
        annotations={
            "queries": "\n".join(f"{s.name}: {queries.get(s.name, '')}" for s in failing),
            "lastError": " | ".join(errors),
        },
    )


def notice_alert(
    ctx: MonitorContext, action: AlertAction, notice: Notice, *, starts: datetime, ends: datetime
) -> dict[str, Any]:
    """One Alertmanager API v2 alert for ``notice`` through ``action`` (labels stable for its whole life)."""
    labels = {
        **action.labels,
        "alertname": notice.alertname,
        "namespace": ctx.namespace,
        "monitor": ctx.name,
        "model": ctx.spec.model.name,
        "severity": notice.severity,
    }
    if notice.policy:
        labels["policy"] = notice.policy
    return {
        "labels": labels,
        "annotations": {"summary": notice.summary, "description": notice.description, **notice.annotations},
        "startsAt": format_time(starts),
        "endsAt": format_time(ends),
    }


class AlertHandler:
    """Sends, re-sends and resolves alerts. Thread-safe (monitors are evaluated in parallel)."""

    type: ActionType = "alert"

    def __init__(self, sender: AlertSender, clock: Callable[[], float] = time.monotonic) -> None:
        self.sender = sender
        self.clock = clock
        self._sent: dict[str, float] = {}  # episode key -> when last delivered (this process)
        self._failed: dict[str, str] = {}  # degraded episode and action -> the delivery error last reported
        self._lock = threading.Lock()

    def plan(
        self, ctx: MonitorContext, decision: Decision, action: AlertAction, now: datetime, firing_since: datetime
    ) -> Plan | None:
        with self._lock:
            last = self._sent.get(decision.key)
        delivered = last is not None or has_record(ctx.history, decision.key, ActionResult.SUCCEEDED)
        if delivered:
            if last is not None and self.clock() - last < duration_seconds(action.resend_interval):
                return None
            return Plan(decision.key, "re-send the alert", data=(decision, action), checkpoint=False, repeat=True)
        return Plan(decision.key, f"alert: {evidence(decision)}", data=(decision, action), checkpoint=False)

    def act(self, ctx: MonitorContext, plan: Plan, now: datetime) -> Done:
        decision, action = plan.data
        errors, where = self._deliver(ctx, decision, action, now, resolved=False)
        if errors:
            return Done(
                ActionResult.FAILED, f"alert not delivered ({'; '.join(errors)}); Event posted: {decision.reason}"
            )
        with self._lock:
            self._sent[decision.key] = self.clock()
        return Done(ActionResult.SUCCEEDED, f"alert sent ({', '.join(['Event', *where])}): {decision.reason}")

    def resolve(
        self, ctx: MonitorContext, decision: Decision, action: AlertAction, now: datetime
    ) -> ActionRecord | None:
        """Resolve the episode's alert; the record of it, or None when nothing was raised."""
        key = f"{decision.key}#resolved"
        with self._lock:
            raised = self._sent.pop(decision.key, None) is not None
        raised = raised or has_record(ctx.history, decision.key, ActionResult.SUCCEEDED, ActionResult.FAILED)
        if not raised or decision.dry_run or action.dry_run or has_record(ctx.history, key):
            return None
        errors, where = self._deliver(ctx, decision, action, now, resolved=True)
        if errors:
            reason = f"resolution not delivered ({'; '.join(errors)}); the alert expires at its endsAt"
            return record(decision, result=ActionResult.FAILED, at=now, reason=reason, key=key)
        return record(
            decision,
            result=ActionResult.SUCCEEDED,
            at=now,
            reason=f"alert resolved ({', '.join(['Event', *where])}): {decision.reason}",
            key=key,
        )

    def _deliver(
        self, ctx: MonitorContext, decision: Decision, action: AlertAction, now: datetime, *, resolved: bool
    ) -> tuple[list[str], list[str]]:
        errors: list[str] = []
        where: list[str] = []
        if action.alertmanager is not None:
            try:
                alert = alertmanager_alert(ctx, decision, action, now=now, resolved=resolved)
                self.sender.post_alerts(action.alertmanager.url, [alert])
                where.append(f"Alertmanager {action.alertmanager.url}")
            except AlertError as exc:
                errors.append(str(exc))
        if action.webhook is not None:
            try:
                self.sender.post_webhook(
                    action.webhook.url, webhook_payload(ctx, decision, action, now=now, resolved=resolved)
                )
                where.append(f"webhook {action.webhook.url}")
            except AlertError as exc:
                errors.append(str(exc))
        return errors, where

    def notify(self, ctx: MonitorContext, notice: Notice, now: datetime) -> list[str]:
        """Tell every alert action of the monitor about ``notice``; the delivery errors."""
        errors: list[str] = []
        seen: set[str] = set()
        for action in ctx.spec.actions.values():
            if not isinstance(action, AlertAction) or action.dry_run:
                continue
            body = notice_alert(ctx, action, notice, starts=now, ends=now + timedelta(seconds=NOTICE_SECONDS))
            try:
                if action.alertmanager is not None and action.alertmanager.url not in seen:
                    seen.add(action.alertmanager.url)
                    self.sender.post_alerts(action.alertmanager.url, [body])
                if action.webhook is not None and action.webhook.url not in seen:
                    seen.add(action.webhook.url)
                    self.sender.post_webhook(action.webhook.url, {"status": "firing", **body})
            except AlertError as exc:
                errors.append(str(exc))
        return errors

    def degraded(self, ctx: MonitorContext, evaluation: Evaluation, now: datetime) -> list[Event]:
        """The MonitorDegraded Event and alerts for this cycle (see the module docstring).

        Whether the monitor was Degraded, and since when, comes from the prior status (the Degraded
        condition); whether it is now, from this cycle's policy states, exactly as the status will render it.
        """
        failing = degraded_policies(evaluation.states, ctx.spec.degraded_after_errors)
        prior = condition_of(ctx.status, "Degraded") or {}
        was_degraded = prior.get("status") == "True"
        since = now
        # An unreadable time: the episode starts now, as a new one would.
        with contextlib.suppress(ValueError):
            if was_degraded:
                since = parse_time(str(prior.get("lastTransitionTime")))
        if not failing and not was_degraded:
            return []
        episode = f"{ctx.namespace}/{ctx.name}/degraded/{format_time(since)}"
        actions = {n: a for n, a in ctx.spec.actions.items() if isinstance(a, AlertAction) and not a.dry_run}
        if failing:
            notice = degraded_notice(ctx, evaluation, failing)
        else:
            notice = Notice(
                alertname=DEGRADED_ALERTNAME,
                policy="",
                summary=f"{ctx.namespace}/{ctx.name} recovered: every policy measured again",
                description=f"Degraded since {format_time(since)}",
            )
        events: list[Event] = []
        where: list[str] = []
        for name, action in actions.items():
            slot = f"{episode}/{name}"
            with self._lock:
                last = self._sent.get(slot)
            if failing and last is not None and self.clock() - last < duration_seconds(action.resend_interval):
                continue
            try:
                self._post_notice(ctx, action, notice, starts=since, now=now, resolved=not failing)
            except AlertError as exc:
                with self._lock:
                    repeated = self._failed.get(slot) == str(exc)
                    self._failed[slot] = str(exc)
                if not repeated:
                    events.append(Event("Warning", "AlertNotDelivered", f"{DEGRADED_ALERTNAME} via {name}: {exc}"))
                continue
            with self._lock:
                self._failed.pop(slot, None)
                if failing:
                    self._sent[slot] = self.clock()
                else:
                    self._sent.pop(slot, None)
            where.append(name)
        sent = f"; alert {DEGRADED_ALERTNAME} sent via {', '.join(where)}" if where else ""
        if failing and not was_degraded:
            told = sent or ("; no alert action to send it through" if not actions else "")
            events.insert(0, Event("Warning", "MonitorDegraded", f"{notice.summary}. {notice.description}{told}"))
        elif not failing:
            events.insert(0, Event("Normal", "MonitorRecovered", f"{notice.summary} ({notice.description}){sent}"))
        return events

    def _post_notice(
        self,
        ctx: MonitorContext,
        action: AlertAction,
        notice: Notice,
        *,
        starts: datetime,
        now: datetime,
        resolved: bool,
    ) -> None:
        """Send ``notice`` through one alert action: endsAt ahead while it lasts, now when ``resolved``."""
        body = notice_alert(ctx, action, notice, starts=starts, ends=now if resolved else ends_at(ctx, action, now))
        if action.alertmanager is not None:
            self.sender.post_alerts(action.alertmanager.url, [body])
        if action.webhook is not None:
            self.sender.post_webhook(action.webhook.url, {"status": "resolved" if resolved else "firing", **body})
