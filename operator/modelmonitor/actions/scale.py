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

``scaleDown`` (opt-in, actions that scale up): once every policy naming the action has been measured clear for
its stabilization window, `ScaleHandler.give_back` steps back toward the counts recorded in the ledger before the
first step up (``origin``), one step per cooldown, never below ``minReplicas``, under the key ``<episode>/down``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
from modelmonitor.api import ActionType, ScaleAction, duration_seconds
from modelmonitor.policy import ActionRecord, ActionResult, Decision, OutcomeKind, PolicyStep, State, format_time

LEDGER_ANNOTATION = PREFIX + "scale-ledger"
GIVE_BACK_SUFFIX = "/down"
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


def _counts(replicas: int, hpa: Mapping[str, Any] | None) -> dict[str, int]:
    """What a scale action changes, as the ledger keeps it: the replicas, or the HPA's bounds."""
    if hpa is None:
        return {"replicas": replicas}
    spec = hpa.get("spec") or {}
    return {"minReplicas": int(spec.get("minReplicas") or 1), "maxReplicas": int(spec["maxReplicas"])}


def give_back_key(episode: str) -> str:
    """The key of a give-back (scale-down) after the episode ``episode`` scaled up: ``<episode>/down``; its n-th
    step is ``<episode>/down#<n>``. Its own key, so approving the steps up does not approve the steps down."""
    return f"{episode}{GIVE_BACK_SUFFIX}"


def give_back_action(key: str) -> str | None:
    """The action name of a give-back record key (``<ns>/<monitor>/<policy>/<since>/<action>/down#n``), or None
    when ``key`` is not one."""
    base = key.split("#", 1)[0]
    if not base.endswith(GIVE_BACK_SUFFIX):
        return None
    return base[: -len(GIVE_BACK_SUFFIX)].rsplit("/", 1)[-1]


def clear_for_give_back(steps: Sequence[PolicyStep]) -> bool | None:
    """Whether the policies naming a scale action are clear this cycle: True when every one is Inactive and
    measured OK now, False when every one is Inactive but some could not be measured (NoData, Error, or missing
    data turned into OK by ``noData: ok``), None when an episode is open (Pending, Firing, Resolving) or no
    policy names the action. Missing data is never clear."""
    if not steps or any(s.state.episode_state is not State.INACTIVE for s in steps):
        return None
    return all(
        s.state.state is State.INACTIVE and s.outcome.kind is OutcomeKind.OK and not s.outcome.no_data_substituted
        for s in steps
    )


@dataclass(frozen=True)
class _View:
    """What a scale action reads before it plans: the workload, its replicas, the HPA targeting it, the ledger."""

    workload: dict[str, Any]
    builtin: bool  # a Deployment or StatefulSet (replicas in its spec), not a /scale kind
    replicas: int
    hpa: dict[str, Any] | None
    holder: dict[str, Any]  # the object that carries the ledger: the HPA if there is one, else the workload
    ledger: dict[str, Any]
    entry: dict[str, Any]  # this action's ledger entry
    runs: dict[str, datetime]


class ScaleHandler:
    """Plans and takes scale steps."""

    type: ActionType = "scale"

    def __init__(self, workloads: Workloads) -> None:
        self.workloads = workloads

    def _view(self, ctx: MonitorContext, action_name: str) -> _View:
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
        found = ledger.get(_ledger_id(ctx, action_name))
        entry: dict[str, Any] = found if isinstance(found, dict) else {}
        runs = {
            str(r.get("key")): at
            for r in entry.get("runs") or []
            if isinstance(r, dict) and (at := timestamp(r.get("at"))) is not None
        }
        return _View(workload, builtin, replicas, hpa, holder, ledger, entry, runs)

    def plan(
        self, ctx: MonitorContext, decision: Decision, action: ScaleAction, now: datetime, firing_since: datetime
    ) -> Plan | Settled | None:
        kind, name = ctx.target, ctx.target_name
        view = self._view(ctx, decision.action)
        workload, builtin, replicas, hpa = view.workload, view.builtin, view.replicas, view.hpa
        ledger, entry, runs = view.ledger, view.entry, view.runs
        ledger_id = _ledger_id(ctx, decision.action)
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
        now_set = _counts(replicas, hpa)
        new_entry = {
            **entry,
            "episode": decision.key,
            "step": done + 1,
            "at": format_time(now),
            "from": replicas,
            "to": to,
            "what": what,
            "runs": [*kept, {"key": key, "at": format_time(now)}][-MAX_LEDGER_RUNS:],
        }
        if _direction(action) > 0:
            # What a later scale-down returns to: kept while the counts are still the ones this action set
            # (further steps up add to what is owed); otherwise what the workload has now is the new baseline.
            owed = isinstance(entry.get("origin"), dict) and entry.get("set") == now_set
            new_entry["origin"] = entry["origin"] if owed else now_set
            new_entry["set"] = (
                {"minReplicas": change["spec"]["minReplicas"], "maxReplicas": change["spec"]["maxReplicas"]}
                if hpa is not None
                else {"replicas": to}
            )
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

    def give_back(
        self, ctx: MonitorContext, name: str, action: ScaleAction, steps: Sequence[PolicyStep], now: datetime
    ) -> Plan | Settled | None:
        """Plan one step back down toward what the action ``name`` started from (``scaleDown``), or None.

        ``steps`` are this cycle's steps of the policies naming the action. The ledger says what is owed
        (``origin``: the counts before the first step up not yet given back; ``set``: the counts the action last
        wrote) and how far the give-back got (``down``). A NoData or Error on those policies is written into the
        ledger (``hold``), and the stabilization window then starts again from the first clear cycle after it
        (``clearFrom``), so neither missing data nor an operator restart counts as clear time.
        """
        settings = action.scale_down
        clear = clear_for_give_back(steps)
        if settings is None or not settings.enabled or clear is None:
            # Nothing to give back, or an episode is open: the steps up are in charge (a step down recorded
            # Pending before a restart is settled by `reconcile` then).
            return None
        view = self._view(ctx, name)
        entry = view.entry
        recorded = entry.get("down")
        down: dict[str, Any] | None = recorded if isinstance(recorded, dict) else None

        # The last step down is in the ledger but its record still says Pending: the operator stopped after acting.
        if down is not None:
            taken = step_key(str(down.get("key")), int(down.get("step") or 0))
            if has_record(ctx.history, taken, ActionResult.PENDING):
                to = (entry.get("set") or {}).get("replicas")
                return Plan(
                    key=taken,
                    what=str(down.get("what", "scale down")),
                    data={"confirm": True, "builtin": view.builtin or view.hpa is not None, "to": to,
                          "current": view.replicas},
                    runs=view.runs,
                    repeat=True,
                )  # fmt: skip

        origin = entry.get("origin")
        if not isinstance(origin, dict) or not entry.get("episode"):
            return None  # nothing owed
        if not clear:
            if not entry.get("hold"):
                self._bookkeep(ctx, view, name, {**entry, "hold": True})
            return None
        if entry.get("hold"):
            # Measured clear again after missing data: the window starts now.
            kept = {k: v for k, v in entry.items() if k != "hold"}
            self._bookkeep(ctx, view, name, {**kept, "clearFrom": format_time(now)})
            return None
        clear_since = max(s.state.since for s in steps)
        restarted = timestamp(entry.get("clearFrom"))
        if restarted is not None and restarted > clear_since:
            clear_since = restarted
        if (now - clear_since).total_seconds() < duration_seconds(settings.stabilization_window):
            return None

        base = give_back_key(str(entry["episode"]))
        done = int(down.get("step") or 0) if down is not None and down.get("key") == base else 0
        key = step_key(base, done + 1)
        current = _counts(view.replicas, view.hpa)
        if set(origin) != set(current):
            # An HPA appeared or went away since the steps up: what was raised is no longer where it was.
            self._bookkeep(ctx, view, name, _settled_entry(entry))
            return None
        if entry.get("set") is not None and entry.get("set") != current:
            holder_text = (
                ctx.target_text if view.hpa is None else f"HorizontalPodAutoscaler {view.hpa['metadata']['name']}"
            )
            return Settled(
                key,
                ActionResult.SKIPPED,
                f"not scaling down: {holder_text} has {_counts_text(current)} now, but action {name} last set "
                f"{_counts_text(entry['set'])}; someone else changed it since, so what {name} added is no longer "
                "known",
            )
        floor = max(int(origin["minReplicas"] if view.hpa is not None else origin["replicas"]), action.min_replicas)
        if view.hpa is not None:
            old_min, old_max = current["minReplicas"], current["maxReplicas"]
            new_min = max(floor, old_min - settings.step) if old_min > floor else old_min
            new_max = min(old_max, max(int(origin["maxReplicas"]), new_min))
            target = {"minReplicas": new_min, "maxReplicas": new_max}
            hpa_name = view.hpa["metadata"]["name"]
            what = (
                f"set HorizontalPodAutoscaler {hpa_name} minReplicas {old_min} -> {new_min}, maxReplicas {old_max} "
                f"-> {new_max}: giving back the bounds action {name} raised (they were minReplicas "
                f"{origin['minReplicas']}, maxReplicas {origin['maxReplicas']}); policies clear since "
                f"{format_time(clear_since)}"
            )
            target_kind, target_name = HPA, hpa_name
            resource_version = view.hpa["metadata"]["resourceVersion"]
            change: dict[str, Any] = {"spec": target}
            finished = new_min <= floor and new_max == max(int(origin["maxReplicas"]), new_min)
        else:
            to = max(floor, view.replicas - settings.step)
            target = {"replicas": to}
            what = (
                f"scale {ctx.target_text} from {view.replicas} to {to} replicas: giving back what action {name} "
                f"added (it started from {origin['replicas']}); policies clear since {format_time(clear_since)}"
            )
            target_kind, target_name = ctx.target, ctx.target_name
            resource_version = view.workload["metadata"]["resourceVersion"]
            change = {"spec": {"replicas": to}} if view.builtin else {}
            finished = to <= floor
        if target == current:
            self._bookkeep(ctx, view, name, _settled_entry(entry))  # nothing left to give back
            return None

        horizon = max(
            duration_seconds(action.cooldown),
            duration_seconds(action.budget.per) if action.budget is not None else 0.0,
            3600.0,
        )
        kept_runs = [
            {"key": k, "at": format_time(t)}
            for k, t in sorted(view.runs.items(), key=lambda kv: kv[1])
            if t > now - timedelta(seconds=horizon) and k != key
        ]
        new_entry = {
            **entry,
            "set": target,
            "down": {"key": base, "step": done + 1, "at": format_time(now), "what": what},
            "runs": [*kept_runs, {"key": key, "at": format_time(now)}][-MAX_LEDGER_RUNS:],
        }
        if view.hpa is None:
            new_entry["to"] = target["replicas"]
        if finished:
            new_entry = _settled_entry(new_entry)
        ledger = {
            **view.ledger,
            _ledger_id(ctx, name): new_entry,
            "last": {"direction": -1, "at": format_time(now), "by": _ledger_id(ctx, name)},
        }
        return Plan(
            key=key,
            what=what,
            data={
                "kind": target_kind,
                "name": target_name,
                "resourceVersion": resource_version,
                "change": change,
                "ledger": ledger,
                "scale": None if view.builtin or view.hpa is not None else target["replicas"],
            },
            runs=view.runs,
        )

    def _bookkeep(self, ctx: MonitorContext, view: _View, name: str, entry: dict[str, Any]) -> None:
        """Write this action's ledger entry alone (no change to the counts), conditional on what was read; a
        concurrent change leaves it for the next cycle."""
        kind = HPA if view.hpa is not None else ctx.target
        ledger = {**view.ledger, _ledger_id(ctx, name): entry}
        patch = {
            "metadata": {
                "resourceVersion": view.holder["metadata"]["resourceVersion"],
                "annotations": {LEDGER_ANNOTATION: json.dumps(ledger, separators=(",", ":"))},
            }
        }
        try:
            self.workloads.patch(kind, ctx.namespace, view.holder["metadata"]["name"], patch)
        except KubernetesError as exc:
            if exc.status != 409:
                raise

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
            found = ledger.get(_ledger_id(ctx, entry.name))
            step: dict[str, Any] = found if isinstance(found, dict) else {}
            if give_back_action(entry.key) is not None:
                recorded = step.get("down")
                down: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
                taken = step_key(str(down.get("key")), int(down.get("step") or 0)) == entry.key
                what = down.get("what")
                not_taken = "not scaled down: the policy fired again before the step was taken"
            else:
                taken = step_key(str(step.get("episode")), int(step.get("step") or 0)) == entry.key
                what = step.get("what")
                not_taken = "not scaled: the policy stopped firing before the step was taken"
            if taken:
                confirmed = f"{what} (confirmed after the operator restarted)"
                records.append(entry.settled(ActionResult.SUCCEEDED, confirmed, now))
            else:
                records.append(entry.settled(ActionResult.SKIPPED, not_taken, now))
        return records

    def _set_scale(self, ctx: MonitorContext, replicas: int) -> None:
        self.workloads.patch(
            ctx.target, ctx.namespace, ctx.target_name, {"spec": {"replicas": replicas}}, subresource="scale"
        )


def _settled_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger entry with nothing left to give back (``down`` stays, to confirm its last step after a restart)."""
    return {k: v for k, v in entry.items() if k not in ("origin", "hold", "clearFrom")}


def _counts_text(counts: Mapping[str, Any]) -> str:
    if "replicas" in counts:
        return f"{counts['replicas']} replicas"
    return f"minReplicas {counts.get('minReplicas')}, maxReplicas {counts.get('maxReplicas')}"
