"""The scale action: change the workload's replicas one bounded step at a time, or the bounds of the HPA that owns
them.

Every step is written together with a ledger annotation (``modelmonitor.dev/scale-ledger``) on the object
changed, in one request made conditional on the object's ``resourceVersion``: the workload itself for
Deployments and StatefulSets, the HorizontalPodAutoscaler when one targets the workload. The ledger says which
episode took which step when, so a restarted operator neither repeats a step nor forgets a cooldown, whatever
the bounded status history still holds. Kinds reached only through their /scale subresource get the ledger
first and then the absolute replica count, which is safe to apply twice.

A step is ``step`` replicas or ``percent`` of the current count (rounded away from zero, at least one),
bounded by ``minReplicas``/``maxReplicas``. While a policy fires, one step is taken per ``cooldown``.
``stabilizationWindow``: a step is taken only once the policy has fired for the whole window, and never
reverses the direction of a step taken on the same workload within the window.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from modelmonitor.actions.base import (
    PREFIX,
    Done,
    MonitorContext,
    Plan,
    Settled,
    has_record,
    is_awaiting_approval,
    read_json_annotation,
    timestamp,
)
from modelmonitor.adapters.kubernetes import DEPLOYMENT, HPA, STATEFULSET, Kind, KubernetesError, Workloads
from modelmonitor.api import ScaleAction, duration_seconds
from modelmonitor.policy import ActionRecord, ActionResult, Decision, format_time

LEDGER_ANNOTATION = PREFIX + "scale-ledger"
#: How many past steps per action the ledger keeps (enough for any budget a person would set).
MAX_LEDGER_RUNS = 100


def step_key(key: str, step: int) -> str:
    """The record key of the ``step``-th step of an episode: the decision key, then ``<key>#2``, ``#3``..."""
    return key if step <= 1 else f"{key}#{step}"


def delta(current: int, action: ScaleAction) -> int:
    """Replicas to add (negative: remove) in one step from ``current``."""
    if action.step is not None:
        return action.step
    assert action.percent is not None
    magnitude = max(1, math.ceil(abs(current * action.percent) / 100))
    return magnitude if action.percent > 0 else -magnitude


def bounded(replicas: int, action: ScaleAction) -> int:
    return max(action.min_replicas, min(action.max_replicas, replicas))


def next_replicas(current: int, action: ScaleAction) -> int:
    """The replica count after one step from ``current``, within the action's bounds."""
    return bounded(current + delta(current, action), action)


def hpa_bounds(hpa_min: int, hpa_max: int, action: ScaleAction) -> tuple[int, int]:
    """New (minReplicas, maxReplicas) of an HPA for one step: up raises the floor, down lowers the ceiling,
    each within the action's bounds, and the other bound follows only as far as needed to stay consistent."""
    change = delta(hpa_min if _direction(action) > 0 else hpa_max, action)
    if change > 0:
        # Never lower the floor on a step up (the HPA's own floor may already be above the action's max).
        new_min = max(hpa_min, bounded(hpa_min + change, action))
        return new_min, max(hpa_max, new_min)
    new_max = max(1, min(hpa_max, bounded(hpa_max + change, action)))
    return min(hpa_min, new_max), new_max


def targets(hpa: Mapping[str, Any], kind: Kind, name: str) -> bool:
    """Whether ``hpa``'s scaleTargetRef is the workload ``kind``/``name``."""
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    if ref.get("kind") != kind.kind or ref.get("name") != name:
        return False
    group = str(ref.get("apiVersion") or "").rpartition("/")[0]
    return not ref.get("apiVersion") or group == kind.group


def _direction(action: ScaleAction) -> int:
    return 1 if (action.step or action.percent or 0) > 0 else -1


def _ledger_id(ctx: MonitorContext, action_name: str) -> str:
    return f"{ctx.name}/{action_name}"


class ScaleHandler:
    """Plans and takes scale steps."""

    type = "scale"

    def __init__(self, workloads: Workloads) -> None:
        self.workloads = workloads

    def plan(
        self, ctx: MonitorContext, decision: Decision, action: ScaleAction, now: datetime, firing_since: datetime
    ) -> Plan | Settled | None:
        kind, name = ctx.target, ctx.target_name
        workload = self.workloads.get(kind, ctx.namespace, name)
        builtin = kind in (DEPLOYMENT, STATEFULSET)
        if builtin:
            replicas = int((workload.get("spec") or {}).get("replicas", 1))
        else:
            scale = self.workloads.get(kind, ctx.namespace, name, subresource="scale")
            replicas = int((scale.get("spec") or {}).get("replicas") or 0)
        hpa = next((h for h in self.workloads.list(HPA, ctx.namespace) if targets(h, kind, name)), None)
        holder = hpa if hpa is not None else workload
        ledger = read_json_annotation(holder, LEDGER_ANNOTATION)
        ledger_id = _ledger_id(ctx, decision.action)
        found = ledger.get(ledger_id)
        entry: dict[str, Any] = found if isinstance(found, dict) else {}
        runs = {
            str(r.get("key")): at
            for r in entry.get("runs") or []
            if isinstance(r, dict) and (at := timestamp(r.get("at"))) is not None
        }
        done = int(entry.get("step") or 0) if entry.get("episode") == decision.key else 0

        # The last step is in the ledger but its record still says Pending: the operator stopped after acting.
        if done >= 1 and has_record(ctx.history, step_key(decision.key, done), ActionResult.PENDING):
            return Plan(
                key=step_key(decision.key, done),
                what=str(entry.get("what", "scale")),
                data={
                    "confirm": True,
                    "builtin": builtin or hpa is not None,
                    "to": entry.get("to"),
                    "current": replicas,
                },
                runs=runs,
                repeat=True,
            )

        window = duration_seconds(action.stabilization_window)
        if window > 0:
            if (now - firing_since).total_seconds() < window:
                return None  # the recommendation has not stood for the whole window yet
            recent = ledger.get("last")
            last: dict[str, Any] = recent if isinstance(recent, dict) else {}
            last_at = timestamp(last.get("at"))
            if (
                last_at is not None
                and last.get("direction") == -_direction(action)
                and (now - last_at).total_seconds() < window
            ):
                return None  # a step the other way was taken within the window: hold, as the HPA does

        key = step_key(decision.key, done + 1)
        if hpa is not None:
            spec = hpa.get("spec") or {}
            old_min, old_max = int(spec.get("minReplicas") or 1), int(spec["maxReplicas"])
            new_min, new_max = hpa_bounds(old_min, old_max, action)
            hpa_name = hpa["metadata"]["name"]
            if (new_min, new_max) == (old_min, old_max):
                return Settled(
                    key,
                    ActionResult.SKIPPED,
                    f"HorizontalPodAutoscaler {hpa_name} (targets {ctx.target_text}) is already at the action's "
                    f"bounds: minReplicas {old_min}, maxReplicas {old_max} (action minReplicas "
                    f"{action.min_replicas}, maxReplicas {action.max_replicas})",
                )
            what = (
                f"set HorizontalPodAutoscaler {hpa_name} minReplicas {old_min} -> {new_min}, maxReplicas "
                f"{old_max} -> {new_max}: it targets {ctx.target_text}, so its bounds change instead of the "
                "replicas (the autoscaler keeps control)"
            )
            target_kind, target_name, resource_version = HPA, hpa_name, hpa["metadata"]["resourceVersion"]
            change: dict[str, Any] = {"spec": {"minReplicas": new_min, "maxReplicas": new_max}}
            to = new_min if _direction(action) > 0 else new_max
        else:
            to = next_replicas(replicas, action)
            if to == replicas:
                bound = "maxReplicas" if _direction(action) > 0 else "minReplicas"
                return Settled(
                    key,
                    ActionResult.SKIPPED,
                    f"{ctx.target_text} already has {replicas} replicas, the action's {bound} "
                    f"({action.max_replicas if bound == 'maxReplicas' else action.min_replicas})",
                )
            what = f"scale {ctx.target_text} from {replicas} to {to} replicas"
            target_kind, target_name = kind, name
            resource_version = workload["metadata"]["resourceVersion"]
            change = {"spec": {"replicas": to}} if builtin else {}

        horizon = max(
            duration_seconds(action.cooldown),
            duration_seconds(action.budget.per) if action.budget is not None else 0.0,
            3600.0,
        )
        kept = [
            {"key": k, "at": format_time(t)}
            for k, t in sorted(runs.items(), key=lambda kv: kv[1])
            if t > now - timedelta(seconds=horizon) and k != key
        ]
        new_entry = {
            "episode": decision.key,
            "step": done + 1,
            "at": format_time(now),
            "from": replicas,
            "to": to,
            "what": what,
            "runs": [*kept, {"key": key, "at": format_time(now)}][-MAX_LEDGER_RUNS:],
        }
        new_ledger = {
            **ledger,
            ledger_id: new_entry,
            "last": {"direction": _direction(action), "at": format_time(now), "by": ledger_id},
        }
        return Plan(
            key=key,
            what=what,
            data={
                "kind": target_kind,
                "name": target_name,
                "resourceVersion": resource_version,
                "change": change,
                "ledger": new_ledger,
                "scale": None if builtin or hpa is not None else to,
            },
            runs=runs,
        )

    def act(self, ctx: MonitorContext, plan: Plan, now: datetime) -> Done:
        data = plan.data
        if data.get("confirm"):
            # The step was written before the operator stopped; /scale kinds may still need the replica count.
            if not data["builtin"] and data.get("to") is not None and data["current"] != data["to"]:
                self._set_scale(ctx, int(data["to"]))
            return Done(ActionResult.SUCCEEDED, f"{plan.what} (confirmed after the operator restarted)")
        patch = {
            "metadata": {
                "resourceVersion": data["resourceVersion"],
                "annotations": {LEDGER_ANNOTATION: json.dumps(data["ledger"], separators=(",", ":"))},
            },
            **data["change"],
        }
        try:
            self.workloads.patch(data["kind"], ctx.namespace, data["name"], patch)
        except KubernetesError as exc:
            if exc.status == 409:
                return Done(None, f"{data['kind'].kind} {data['name']} changed meanwhile; retrying next cycle")
            raise
        if data["scale"] is not None:
            self._set_scale(ctx, int(data["scale"]))
        return Done(ActionResult.SUCCEEDED, plan.what)

    def reconcile(self, ctx: MonitorContext, now: datetime, is_open: Callable[[str], bool]) -> list[ActionRecord]:
        """Settle scale steps recorded as Pending whose episode ended before the operator could confirm them:
        Succeeded if the ledger shows the step was taken, Skipped if it never was."""
        pending = [
            r
            for r in ctx.history
            if r.type == self.type
            and r.result is ActionResult.PENDING
            and not is_awaiting_approval(r)
            and not is_open(r.key)
        ]
        if not pending:
            return []
        kind, name = ctx.target, ctx.target_name
        hpa = next((h for h in self.workloads.list(HPA, ctx.namespace) if targets(h, kind, name)), None)
        holder = hpa if hpa is not None else self.workloads.get(kind, ctx.namespace, name)
        ledger = read_json_annotation(holder, LEDGER_ANNOTATION)
        records = []
        for entry in pending:
            step = ledger.get(_ledger_id(ctx, entry.name))
            taken = (
                isinstance(step, dict) and step_key(str(step.get("episode")), int(step.get("step") or 0)) == entry.key
            )
            if taken and isinstance(step, dict):
                records.append(
                    entry.settled(
                        ActionResult.SUCCEEDED, f"{step.get('what')} (confirmed after the operator restarted)", now
                    )
                )
            else:
                records.append(
                    entry.settled(
                        ActionResult.SKIPPED, "not scaled: the policy stopped firing before the step was taken", now
                    )
                )
        return records

    def _set_scale(self, ctx: MonitorContext, replicas: int) -> None:
        self.workloads.patch(
            ctx.target, ctx.namespace, ctx.target_name, {"spec": {"replicas": replicas}}, subresource="scale"
        )
