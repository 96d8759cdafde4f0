"""The safety rails every action carries: cooldown and a budget per window (pure functions of past runs).

A *run* is one change the action made (or started) in the cluster: a scale step, a rollback, a retraining Job,
the first send of an alert in an episode. Runs are collected from two places, so that the rails do not depend
on the status history alone (it keeps the latest 20 records): the history's records, and what the action
itself left in the cluster (the scale ledger on the workload, the rollback ledger on the Deployment, the
retraining Jobs). Each source gives ``key -> time``; the same run seen in both counts once.

Dry run and approval are applied by the remediator before these; ``paused`` stops everything before that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from modelmonitor.actions.base import is_awaiting_approval
from modelmonitor.api import ActionRails, duration_seconds
from modelmonitor.policy import ActionRecord, ActionResult, format_time

#: Results that mean the action changed (or started changing) the cluster.
RAN = frozenset({ActionResult.SUCCEEDED, ActionResult.FAILED, ActionResult.PENDING})


@dataclass(frozen=True)
class Blocked:
    """A rail stops the action for now; ``reason`` says which and until when."""

    reason: str
    until: datetime


def runs_in_history(history: Iterable[ActionRecord], action: str) -> dict[str, datetime]:
    """Runs of ``action`` recorded in ``status.actions``: key -> earliest time. Records awaiting approval,
    skipped or dry-run ones are not runs; a resolved alert (``<key>#resolved``) is not a new run."""
    runs: dict[str, datetime] = {}
    for entry in history:
        key = entry.key
        if entry.name != action or entry.result not in RAN or is_awaiting_approval(entry):
            continue
        if key.endswith("#resolved"):
            continue
        if key not in runs or entry.at < runs[key]:
            runs[key] = entry.at
    return runs


def merge_runs(*sources: Mapping[str, datetime]) -> dict[str, datetime]:
    """Runs from several sources, one per key (the earliest time)."""
    merged: dict[str, datetime] = {}
    for source in sources:
        for key, at in source.items():
            if key not in merged or at < merged[key]:
                merged[key] = at
    return merged


def check(action: ActionRails, runs: Mapping[str, datetime], now: datetime, *, exclude: str = "") -> Blocked | None:
    """The first rail that blocks a new run of ``action`` at ``now``, or None when it may run.

    ``exclude`` is the key about to run: a run recorded under it (Pending, left by an operator that stopped
    between recording and acting) is this same run resumed, not an earlier one.
    """
    times = sorted(at for key, at in runs.items() if key != exclude and at <= now)
    cooldown = duration_seconds(action.cooldown)
    if times and cooldown > 0:
        last = times[-1]
        until = last + timedelta(seconds=cooldown)
        if now < until:
            return Blocked(
                f"cooldown {action.cooldown}: last run at {format_time(last)}, next allowed at {format_time(until)}",
                until,
            )
    if action.budget is not None:
        per = timedelta(seconds=duration_seconds(action.budget.per))
        window = [t for t in times if t > now - per]
        if len(window) >= action.budget.max:
            until = window[len(window) - action.budget.max] + per
            return Blocked(
                f"budget: {len(window)} runs in the last {action.budget.per} (max {action.budget.max}), "
                f"next allowed at {format_time(until)}",
                until,
            )
    return None
