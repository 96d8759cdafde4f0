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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from modelmonitor.actions.base import Done, MonitorContext, Notice, Plan, evidence, has_record, record
from modelmonitor.adapters.alertmanager import AlertError, AlertSender
from modelmonitor.api import ActionType, AlertAction, duration_seconds
from modelmonitor.policy import ActionRecord, ActionResult, Decision, format_time

ALERTNAME = "ModelMonitorPolicyFiring"
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


class AlertHandler:
    """Sends, re-sends and resolves alerts. Thread-safe (monitors are evaluated in parallel)."""

    type: ActionType = "alert"

    def __init__(self, sender: AlertSender, clock: Callable[[], float] = time.monotonic) -> None:
        self.sender = sender
        self.clock = clock
        self._sent: dict[str, float] = {}  # episode key -> when last delivered (this process)
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
            labels = {
                **action.labels,
                "alertname": notice.alertname,
                "namespace": ctx.namespace,
                "monitor": ctx.name,
                "model": ctx.spec.model.name,
                "policy": notice.policy,
                "severity": notice.severity,
            }
            body: Mapping[str, Any] = {
                "labels": labels,
                "annotations": {"summary": notice.summary, "description": notice.description},
                "startsAt": format_time(now),
                "endsAt": format_time(now + timedelta(seconds=NOTICE_SECONDS)),
            }
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
