"""Where decisions become changes to the cluster: the one place allowed to mutate workloads.

The evaluation loop hands every decision of a cycle to an `Actions` implementation together with the monitor's
prior action history, and writes the records it returns into status. Decisions repeat every cycle while a
policy fires; an implementation acts once per idempotency key and returns nothing for a key already done.

`RecordOnly` is the implementation while remediation is not enabled: it records, once per episode and action,
what would have been done, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from modelmonitor.api import ModelMonitorSpec
from modelmonitor.policy import Decision, DecisionKind, action_record


@dataclass(frozen=True)
class MonitorContext:
    """The monitor a decision belongs to."""

    namespace: str
    name: str
    uid: str
    spec: ModelMonitorSpec
    history: Sequence[Mapping[str, Any]]


class Actions(Protocol):
    """Carries out decisions; returns the ``status.actions`` records of what it did (or would have done)."""

    def execute(self, monitor: MonitorContext, decisions: Sequence[Decision], now: datetime) -> list[dict[str, Any]]:
        """Blocking: called from a worker thread."""
        ...


def already_recorded(history: Sequence[Mapping[str, Any]], key: str) -> bool:
    """Whether a decision with this idempotency key has a final (non-Pending) record in the history."""
    return any(r.get("key") == key and r.get("result") != "Pending" for r in history)


def _describe(decision: Decision) -> str:
    what = decision.action_type or "action"
    value = "no value" if decision.value is None else f"value {decision.value:g}"
    threshold = "" if decision.threshold is None else f", threshold {decision.threshold:g}"
    return f"{what} {decision.action!r} for policy {decision.policy} ({value}{threshold}, window {decision.window})"


class RecordOnly:
    """Records what would be done, once per idempotency key; touches nothing."""

    def execute(self, monitor: MonitorContext, decisions: Sequence[Decision], now: datetime) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for decision in decisions:
            if decision.kind is not DecisionKind.ACT or already_recorded(monitor.history, decision.key):
                continue
            if any(r["key"] == decision.key for r in records):
                continue
            if decision.dry_run:
                records.append(
                    action_record(decision, result="DryRun", at=now, reason=f"dry run: would run {_describe(decision)}")
                )
            else:
                records.append(
                    action_record(
                        decision,
                        result="Skipped",
                        at=now,
                        reason=f"would run {_describe(decision)}; remediation actions are not enabled in this operator",
                    )
                )
        return records
