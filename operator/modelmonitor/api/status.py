"""The observed state of a ModelMonitor, as the operator writes it into ``status``.

Every timer, streak and idempotency key lives here, so a restarted operator resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from modelmonitor.api.common import StatusModel, Timestamp, k8s

Phase = Literal["Healthy", "Pending", "Firing", "Acting", "NoData", "Degraded", "Paused", "Invalid"]
PolicyState = Literal["Inactive", "Pending", "Firing", "Resolving", "NoData", "Error"]
Outcome = Literal["OK", "Breach", "NoData", "Error", "Invalid"]
ConditionType = Literal["Ready", "Evaluating", "Degraded", "ActionInProgress", "Conflict", "RegistrySynced"]

MAX_ACTION_HISTORY = 20
MAX_REGISTRY_HISTORY = 20


class ActionResult(StrEnum):
    """How a decided action stands (``status.actions[].result``): the one vocabulary of the operator, its status
    schema and its Events (``Action<result>``). Defined here, the lowest layer, so that the CRD and the actions
    layer (through `modelmonitor.policy.records`) spell it from one place."""

    PENDING = "Pending"  # recorded before acting, awaiting approval, or in progress (a Job, a rollout)
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"  # a rail or a precondition stopped it; the reason says which
    DRY_RUN = "DryRun"  # what would have been done


class SequentialStatus(StatusModel):
    """The CUSUM of a policy with sequential detection."""

    statistic: float = Field(ge=0, description="The CUSUM statistic (the policy's value).")
    updated_at: Timestamp = Field(description="When the last window was folded in (one per policy window).")


class PolicyStatus(StatusModel):
    """Where one policy stands."""

    name: str = Field(max_length=63, description="Name of the policy.")
    state: PolicyState = Field(description="Inactive, Pending, Firing, Resolving, NoData or Error.")
    value: float | None = Field(default=None, description="The last measured value (absent when none).")
    threshold: float | None = Field(
        default=None, description="The threshold in force (the calibrated one when autoThreshold is set)."
    )
    samples: int | None = Field(default=None, description="Samples behind the last measurement.")
    since: Timestamp = Field(description="When the policy entered its current state.")
    last_transition_time: Timestamp = Field(description="Same as since; kept for Kubernetes condition conventions.")
    active_since: Timestamp | None = Field(
        default=None,
        description="Start of the current breach episode (Pending, Firing, Resolving); part of the idempotency key.",
    )
    held_state: Literal["Inactive", "Pending", "Firing", "Resolving"] | None = Field(
        default=None,
        description=(
            "While the state is NoData or Error: the episode state being held (Inactive, Pending, Firing or "
            "Resolving), resumed when measurements return."
        ),
    )
    held_since: Timestamp | None = Field(
        default=None, description="While the state is NoData or Error: when the held state was entered."
    )
    error_streak: int = Field(default=0, ge=0, description="Measurements in a row that were errors.")
    last_outcome: Outcome = Field(description="The last measurement: OK, Breach, NoData, Error or Invalid.")
    message: str = Field(
        default="", max_length=4096, description="The last measurement in words: value, threshold, window and query."
    )
    sequential: SequentialStatus | None = Field(
        default=None, description="With detection.sequential: the CUSUM kept across evaluations and restarts."
    )


class ActionRecord(StatusModel):
    """One decided action, recorded before acting and updated after."""

    name: str = Field(max_length=63, description="Name of the action in spec.actions.")
    type: Literal["scale", "rollback", "retrain", "alert"] = Field(description="The action's type.")
    policy: str = Field(max_length=63, description="The policy that triggered it.")
    at: Timestamp = Field(description="When the result was last updated.")
    result: ActionResult = Field(
        description=", ".join(r.value for r in list(ActionResult)[:-1]) + f" or {list(ActionResult)[-1].value}."
    )
    reason: str = Field(default="", max_length=4096, description="What was done, or why not.")
    key: str = Field(
        max_length=1024,
        description="Idempotency key <namespace>/<monitor>/<policy>/<activeSince>/<action>: at most one run per key.",
    )


class LastKnownGood(StatusModel):
    """The workload revision that was live while every policy stayed OK for the settle period."""

    revision: str = Field(max_length=64, description="The Deployment revision number at the time it was recorded.")
    template_hash: str = Field(
        max_length=64, description="Its pod-template-hash, which survives Kubernetes renumbering revisions."
    )
    since: Timestamp = Field(description="When it became last-known-good.")


class RegistryEntry(StatusModel):
    """One change of what is served or of where the alias points."""

    event: Literal["Served", "Promoted", "RolledBack"] = Field(
        description=(
            "Served: the workload started serving this version (a promotion pinned it, a rollback restored it, or "
            "someone changed it by hand). Promoted: the alias moved to this version once its revision became "
            "last-known-good. RolledBack: the alias moved back to this version after a rollback."
        )
    )
    version: str = Field(max_length=64, description="The registered model version.")
    source: str = Field(default="", max_length=2048, description="Its immutable source URI.")
    at: Timestamp = Field(description="When it happened.")
    why: str = Field(default="", max_length=1024, description="What caused it.")
    key: str = Field(default="", max_length=1024, description="What it was done for (an action's key, a revision).")


class RegistryMove(StatusModel):
    """An alias move decided and not done yet (the registry could not be reached): retried every cycle."""

    kind: Literal["Promote", "Rollback"] = Field(description="Promote or Rollback.")
    key: str = Field(max_length=1024, description="What it is done for: the rollback's key, or the revision's hash.")
    to_template_hash: str = Field(
        max_length=64, description="pod-template-hash of the revision whose version the alias moves to."
    )
    from_template_hash: str = Field(
        default="", max_length=64, description="For a rollback: pod-template-hash of the revision rolled back from."
    )
    why: str = Field(default="", max_length=1024, description="Why the alias moves.")
    since: Timestamp = Field(description="When the move was decided.")
    attempts: int = Field(default=0, ge=0, description="Attempts so far.")
    last_error: str = Field(default="", max_length=1024, description="Why the last attempt failed.")


class RegistryStatus(StatusModel):
    """The registered versions behind the workload (spec.registry)."""

    served_version: str = Field(
        default="", max_length=64, description="The registered version whose source URI the workload pins."
    )
    served_source: str = Field(default="", max_length=2048, description="The source URI the workload pins.")
    alias_version: str = Field(default="", max_length=64, description="The version spec.registry.alias points at.")
    pending: RegistryMove | None = Field(default=None, description="An alias move waiting for the registry.")
    decided: list[str] = Field(
        default_factory=list,
        max_length=MAX_REGISTRY_HISTORY,
        description=(
            f"Keys of the alias moves decided, newest last (at most {MAX_REGISTRY_HISTORY}, as many as the action "
            "history holds): a move is decided once per key, so nothing is done twice."
        ),
    )
    history: list[RegistryEntry] = Field(
        default_factory=list,
        max_length=MAX_REGISTRY_HISTORY,
        description=f"Versions served and alias moves, newest last (at most {MAX_REGISTRY_HISTORY}).",
    )


class MonitorCondition(StatusModel):
    """A Kubernetes-style condition."""

    type: ConditionType = Field(
        description="Ready, Evaluating, Degraded, ActionInProgress, Conflict or RegistrySynced."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", max_length=1024, description="A CamelCase reason.")
    message: str = Field(default="", max_length=32768, description="Details for people.")
    last_transition_time: Timestamp = Field(description="When status last changed.")


class ModelMonitorStatus(StatusModel):
    """What the operator last observed and did. Written once per evaluation cycle."""

    phase: Phase | None = Field(
        default=None,
        description="Healthy, Pending, Firing, Acting, NoData, Degraded, Paused or Invalid.",
    )
    message: str = Field(default="", max_length=32768, description="Why the phase is what it is.")
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation of the spec last evaluated."
    )
    last_evaluation_time: Timestamp | None = Field(default=None, description="When policies were last evaluated.")
    firing_policies: str = Field(
        default="", max_length=4096, description="Names of the firing policies, comma-separated."
    )
    last_action: str = Field(
        default="",
        max_length=1024,
        description='The last action and its result, e.g. "rollback Succeeded 2026-11-24T10:00:00Z".',
    )
    policies: list[PolicyStatus] = Field(
        default_factory=list,
        description="One entry per policy.",
        json_schema_extra=k8s(list_type="map", list_map_keys=["name"]),
    )
    actions: list[ActionRecord] = Field(
        default_factory=list,
        max_length=MAX_ACTION_HISTORY,
        description=f"The latest decided actions, newest last (at most {MAX_ACTION_HISTORY}).",
    )
    last_known_good: LastKnownGood | None = Field(default=None, description="The revision a rollback returns to.")
    registry: RegistryStatus | None = Field(
        default=None, description="With spec.registry: the version served, where the alias points, the history."
    )
    conditions: list[MonitorCondition] = Field(
        default_factory=list,
        description=(
            "Ready, Evaluating, Degraded (degradedAfterErrors failed measurements in a row), ActionInProgress, and "
            "Conflict (True while an older ModelMonitor changes the same workload: this one then takes no "
            "workload-changing action), and with spec.registry RegistrySynced (False while an alias move waits for "
            "the registry)."
        ),
        json_schema_extra=k8s(list_type="map", list_map_keys=["type"]),
    )


def status_to_dict(status: StatusModel) -> dict[str, Any]:
    """The JSON-ready ``status`` (or part of it) to patch: camelCase keys, absent values left out."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def status_from_dict(body: Mapping[str, Any] | None) -> ModelMonitorStatus:
    """Read the ``status`` stored on a ModelMonitor (an empty one when there is none yet)."""
    return ModelMonitorStatus.model_validate(dict(body or {}))
