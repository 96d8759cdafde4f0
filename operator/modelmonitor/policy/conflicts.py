"""Which ModelMonitors may change a workload when several target the same one.

Two monitors whose actions change the same workload would fight over it as two HorizontalPodAutoscalers on
one Deployment do: each steps it within its own cooldown, each rolls it back to its own idea of last-known-good.
As Kubernetes does for HPAs, this is reported rather than arbitrated by timing: the **oldest** monitor
(``metadata.creationTimestamp``, then name) keeps acting, and every later one that would change the same
workload is in conflict with it: it gets the ``Conflict`` condition and a Warning Event naming the older
monitor, and takes no workload-changing action until that monitor is deleted, retargeted or no longer
changes the workload. Its alerts still go out.

Workload-changing actions are scale, rollback, and retrain with ``promote`` (a retraining Job alone changes
nothing that serves). An action that can never run does not claim the workload: one with ``dryRun``, one
named by no policy, or named only by dry-run policies, and every action of a monitor that is paused or in
``dryRun``. So a monitor being tried out in dry run never blocks the one in charge.

`workload_conflicts` is pure: the loop builds one `WorkloadClaim` per known monitor every cycle and hands the
result to the actions layer and the status rendering.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from modelmonitor.api import Action, ModelMonitorSpec, RetrainAction, RollbackAction, ScaleAction


@dataclass(frozen=True)
class WorkloadClaim:
    """One monitor as the conflict check sees it.

    ``workload`` identifies the target within the namespace (API group, kind and name, e.g.
    ``apps/Deployment/fraud``); ``created`` is the monitor's creationTimestamp (None when unknown: such a
    monitor counts as the youngest); ``changes_workload`` is whether any of its actions can change the target.
    """

    namespace: str
    name: str
    created: datetime | None
    workload: str
    changes_workload: bool

    @property
    def age_order(self) -> tuple[bool, datetime | None, str]:
        """Sorts oldest first: by creation time (unknown ones last), then by name."""
        return (self.created is None, self.created, self.name)


def workload_conflicts(claims: Iterable[WorkloadClaim]) -> dict[tuple[str, str], str]:
    """For every monitor that must yield, keyed by (namespace, name): the name of the monitor it yields to,
    the oldest one changing the same workload in the same namespace. Monitors not listed may act."""
    by_workload: dict[tuple[str, str], list[WorkloadClaim]] = {}
    for claim in claims:
        if claim.changes_workload:
            by_workload.setdefault((claim.namespace, claim.workload), []).append(claim)
    conflicts: dict[tuple[str, str], str] = {}
    for group in by_workload.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda c: c.age_order)
        owner = group[0]
        for later in group[1:]:
            conflicts[(later.namespace, later.name)] = owner.name
    return conflicts


def changes_workload(action: Action) -> bool:
    """Whether an action of this kind changes the target workload: scale, rollback, retrain with promote."""
    return isinstance(action, ScaleAction | RollbackAction) or (
        isinstance(action, RetrainAction) and action.promote is not None
    )


def changing_actions(spec: ModelMonitorSpec) -> list[str]:
    """Names of the actions of ``spec`` that can change its target workload (see the module docstring)."""
    if spec.paused or spec.dry_run:
        return []
    named = {name for policy in spec.policies if not policy.dry_run for name in policy.actions}
    return [
        name
        for name, action in spec.actions.items()
        if name in named and not action.dry_run and changes_workload(action)
    ]


def workload_id(spec: ModelMonitorSpec) -> str:
    """``<group>/<kind>/<name>`` of the target (``apps/Deployment/fraud``; the core group is empty)."""
    version = spec.target.resolved_api_version
    group = version.rsplit("/", 1)[0] if "/" in version else ""
    return f"{group}/{spec.target.kind}/{spec.target.name}"


def claim_of(namespace: str, name: str, created: datetime | None, spec: ModelMonitorSpec) -> WorkloadClaim:
    """The claim of one validated monitor."""
    return WorkloadClaim(namespace, name, created, workload_id(spec), bool(changing_actions(spec)))
