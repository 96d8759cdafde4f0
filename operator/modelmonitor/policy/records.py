"""The record of one decided action (``status.actions[]``), typed, with the one result vocabulary.

Every layer that makes or reads action records uses `ActionRecord`: the actions layer builds them, the status
renderer merges them into the bounded history, the loop turns them into Events and metrics. Only `to_status` and
`from_status` know the JSON shape stored in the ModelMonitor's status (the keys ``name``, ``type``, ``policy``,
``at``, ``result``, ``reason``, ``key``, unchanged since the first version, so existing statuses read back).

`ActionResult` is defined with the API's status schema (the lowest layer, so the CRD's enum is spelt from it)
and re-exported here for everything above.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from modelmonitor.api.actions import ACTION_TYPES, ActionType
from modelmonitor.api.status import ActionResult
from modelmonitor.policy.decide import Decision
from modelmonitor.policy.timefmt import format_time, parse_time, require_aware

#: The longest ``reason`` the status schema accepts; longer ones are cut.
MAX_REASON = 4096

__all__ = ["MAX_REASON", "ActionRecord", "ActionResult", "records_from_status"]


@dataclass(frozen=True)
class ActionRecord:
    """One decided action and how it stands.

    ``name`` is the action's name in ``spec.actions``, ``type`` its type (scale, rollback, retrain, alert),
    ``policy`` the policy it acts for, ``at`` when ``result`` was reached, ``reason`` what was done or why not,
    and ``key`` its idempotency key (the decision's, or one derived from it such as ``<key>#2``).
    """

    name: str
    type: ActionType
    policy: str
    at: datetime
    result: ActionResult
    reason: str
    key: str

    def __post_init__(self) -> None:
        # Coerce a result spelt as its string value; an unknown one is a bug in the caller.
        try:
            result = ActionResult(self.result)
        except ValueError:
            allowed = ", ".join(r.value for r in ActionResult)
            raise ValueError(f"action result must be one of {allowed}, got {self.result!r}") from None
        object.__setattr__(self, "result", result)
        if self.type not in ACTION_TYPES:
            raise ValueError(f"action type must be one of {', '.join(ACTION_TYPES)}, got {self.type!r}")
        object.__setattr__(self, "at", require_aware(self.at, field="at"))
        if len(self.reason) > MAX_REASON:
            object.__setattr__(self, "reason", self.reason[:MAX_REASON])

    @classmethod
    def for_decision(
        cls, decision: Decision, *, result: ActionResult, at: datetime, reason: str = "", key: str | None = None
    ) -> ActionRecord:
        """The record of ``decision`` under ``key`` (default: the decision's); ``reason`` defaults to the
        decision's evidence."""
        action_type = next((t for t in ACTION_TYPES if t == decision.action_type), None)
        if action_type is None:
            raise ValueError(
                f"action {decision.action!r} of policy {decision.policy!r} has no known type: {decision.action_type!r}"
            )
        return cls(
            name=decision.action,
            type=action_type,
            policy=decision.policy,
            at=at,
            result=result,
            reason=reason or decision.reason,
            key=decision.key if key is None else key,
        )

    def settled(self, result: ActionResult, reason: str, at: datetime) -> ActionRecord:
        """The same action under the same key with a new result (a Pending record that ended)."""
        return replace(self, result=result, reason=reason, at=at)

    def to_status(self) -> dict[str, Any]:
        """The ``status.actions[]`` entry."""
        return {
            "name": self.name,
            "type": self.type,
            "policy": self.policy,
            "at": format_time(self.at),
            "result": self.result.value,
            "reason": self.reason,
            "key": self.key,
        }

    @classmethod
    def from_status(cls, entry: Mapping[str, Any], *, where: str = "status.actions[]") -> ActionRecord:
        """Read a ``status.actions[]`` entry; ValueError names the field that is missing or wrong."""
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: not an object")
        texts: dict[str, str] = {}
        for field in ("name", "type", "policy", "at", "result", "key"):
            value = entry.get(field)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{where}.{field}: missing or not a string")
            texts[field] = value
        reason = entry.get("reason", "")
        if not isinstance(reason, str):
            raise ValueError(f"{where}.reason: not a string")
        action_type = next((t for t in ACTION_TYPES if t == texts["type"]), None)
        if action_type is None:
            raise ValueError(f"{where}.type: must be one of {', '.join(ACTION_TYPES)}, got {texts['type']!r}")
        try:
            result = ActionResult(texts["result"])
        except ValueError:
            allowed = ", ".join(r.value for r in ActionResult)
            raise ValueError(f"{where}.result: must be one of {allowed}, got {texts['result']!r}") from None
        return cls(
            name=texts["name"],
            type=action_type,
            policy=texts["policy"],
            at=parse_time(texts["at"], field=f"{where}.at"),
            result=result,
            reason=reason,
            key=texts["key"],
        )


def records_from_status(status: Mapping[str, Any] | None) -> list[ActionRecord]:
    """``status.actions`` as records, oldest first (ValueError names the entry that cannot be read)."""
    entries = (status or {}).get("actions") or []
    return [ActionRecord.from_status(e, where=f"status.actions[{i}]") for i, e in enumerate(entries)]
