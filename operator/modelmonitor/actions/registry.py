"""The model registry side of promotions and rollbacks (``spec.registry``, MLflow).

The workload always pins a registered version's immutable ``source`` URI, never an alias. The alias follows
the last-known-good revision, moved by the operator on two occasions only, so that it never fights a person
who moves it by hand in between:

* **promotion**: a new revision became last-known-good (it stayed OK for the settle period): the alias moves
  to the version that revision serves, and the version it leaves is tagged ``previousTag``;
* **rollback**: a rollback restored the last-known-good template: the alias moves back to the version that
  template serves, and the version rolled back from is tagged ``rolledBackTag``.

Serving never waits for the registry: the rollback itself is the rollback handler's, done before any of this.
An alias move is recorded in ``status.registry.pending`` (its key: the rollback's key, or the revision's
template hash) and attempted in the same cycle; while the registry cannot be reached it stays pending, is
retried every cycle, and the ``RegistrySynced`` condition and a ``RegistryUpdatePending`` Event say so. Moving
an alias to where it points already and setting a tag again change nothing, and a move whose key is in the
history is not decided again: nothing is done twice.

Which version the workload serves is found from its pod template: the registered version whose source URI is
the value of one of its environment variables, annotations or container arguments. So a version pinned by
hand is recognised too; ``status.registry`` records it (``servedVersion``) and each change in its history.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from modelmonitor.actions.base import (
    CHANGE_CAUSE_ANNOTATION,
    PROMOTED_ANNOTATION,
    Event,
    MonitorContext,
    annotations_of,
    is_awaiting_approval,
    read_json_annotation,
)
from modelmonitor.actions.rollback import LEDGER_ANNOTATION, RollbackHandler, template_hash
from modelmonitor.adapters.kubernetes import DEPLOYMENT, STATEFULSET, KubernetesError
from modelmonitor.adapters.registry import ModelRegistry, ModelVersion, RegistryConnections, RegistryError
from modelmonitor.api import MAX_REGISTRY_HISTORY, RegistryStatus, status_to_dict
from modelmonitor.api.registry import JOB_TAG, RegistrySpec
from modelmonitor.api.status import RegistryEntry, RegistryMove
from modelmonitor.policy import ActionRecord, ActionResult, format_time

log = logging.getLogger("modelmonitor.actions")

#: How often the served version and the alias are read while nothing happens (a hand change shows within this).
OBSERVE_SECONDS = 30.0


def pinned_values(template: Mapping[str, Any]) -> list[str]:
    """Every string of a pod template that could pin a source URI: env values, annotations, container args."""
    values = [str(v) for v in ((template.get("metadata") or {}).get("annotations") or {}).values()]
    spec = template.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        values += [str(e["value"]) for e in container.get("env") or [] if isinstance(e.get("value"), str)]
        values += [str(a) for a in [*(container.get("args") or []), *(container.get("command") or [])]]
    return values


def served_version(template: Mapping[str, Any], versions: Sequence[ModelVersion]) -> ModelVersion | None:
    """The registered version whose source the template pins (the newest, should two share a source)."""
    pinned = set(pinned_values(template))
    matching = [v for v in versions if v.source and v.source in pinned]
    return matching[-1] if matching else None


class RegistryHandler:
    """Finds the versions retraining Jobs registered, keeps ``status.registry``, and moves the alias."""

    def __init__(self, connections: RegistryConnections, rollback: RollbackHandler) -> None:
        self.connections = connections
        self.rollback = rollback
        self.workloads = rollback.workloads
        # When each monitor last read the registry: at rest, every OBSERVE_SECONDS (in memory: after a restart
        # the first cycle reads it).
        self._checked: dict[tuple[str, str], datetime] = {}
        # The last registry error each monitor reported with an Event (said once, not every read).
        self._failed: dict[tuple[str, str], str] = {}

    def client(self, ctx: MonitorContext, spec: RegistrySpec) -> ModelRegistry:
        return self.connections.client(ctx.namespace, ctx.name, spec.mlflow)

    # --- promotion: the version a Job registered --------------------------------------------------------------

    def job_version(self, ctx: MonitorContext, job: str) -> ModelVersion | None:
        """The version of ``spec.registry.model`` tagged ``modelmonitor.dev/job=<job>`` (the newest if several),
        or None. Raises `RegistryError`."""
        spec = ctx.spec.registry
        if spec is None:
            raise RegistryError("promote.from: registry needs spec.registry")
        tagged = self.client(ctx, spec).versions(spec.model, {JOB_TAG: job})
        return tagged[-1] if tagged else None

    # --- every cycle --------------------------------------------------------------------------------------------

    def sync(
        self,
        ctx: MonitorContext,
        records: Sequence[ActionRecord],
        last_known_good: Mapping[str, Any] | None,
        now: datetime,
    ) -> tuple[dict[str, Any] | None, list[Event]]:
        """The new ``status.registry`` (None: unchanged) and Events, after this cycle's ``records`` and the new
        ``last_known_good`` (None when it did not change)."""
        spec = ctx.spec.registry
        if spec is None:
            return ({} if ctx.status.get("registry") else None), []  # {}: spec.registry was removed
        prior = RegistryStatus.model_validate(dict(ctx.status.get("registry") or {}))
        state = prior.model_copy(deep=True)
        events: list[Event] = []
        decided = self._decide(ctx, state, records, last_known_good, now)
        slot = (ctx.namespace, ctx.name)
        last = self._checked.get(slot)
        due = (
            decided
            or state.pending is not None
            or last is None
            or (now - last).total_seconds() >= OBSERVE_SECONDS
            or any(r.type in ("rollback", "retrain") for r in records)
        )
        if due:
            self._checked[slot] = now
            try:
                client = self.client(ctx, spec)
                versions = client.versions(spec.model)
                if state.pending is not None:
                    events += self._move(ctx, spec, client, versions, state, now)
                self._observe(ctx, spec, client, versions, state, now)
            except RegistryError as exc:
                log.warning("%s/%s: registry: %s", ctx.namespace, ctx.name, exc)
                if state.pending is None and self._failed.get(slot) != str(exc):
                    events.append(
                        Event("Warning", "RegistryReadFailed", f"reading {spec.model} from the registry: {exc}")
                    )
                self._failed[slot] = str(exc)
                if state.pending is not None:
                    error = str(exc)[:1024]
                    first = state.pending.last_error != error
                    state.pending.attempts += 1
                    state.pending.last_error = error
                    if first:
                        events.append(
                            Event(
                                "Warning",
                                "RegistryUpdatePending",
                                f"moving alias {spec.alias} of {spec.model} ({state.pending.why}) is pending, retried "
                                f"every cycle: {exc}",
                            )
                        )
            else:
                self._failed.pop(slot, None)
        if state == prior:
            return None, events  # nothing to write: a monitor at rest costs no status write
        written = status_to_dict(state)
        # The status is written with a merge patch, which keeps a key left out: null removes a move that is done.
        written.setdefault("pending", None)
        return written, events

    # --- deciding alias moves -----------------------------------------------------------------------------------

    def _decide(
        self,
        ctx: MonitorContext,
        state: RegistryStatus,
        records: Sequence[ActionRecord],
        last_known_good: Mapping[str, Any] | None,
        now: datetime,
    ) -> bool:
        """Record a new alias move in ``state.pending`` when a rollback or a new last-known-good calls for one."""
        handled = set(state.decided)
        rollbacks = [
            r
            for r in [*ctx.history, *records]
            if r.type == "rollback"
            and r.result in (ActionResult.PENDING, ActionResult.SUCCEEDED)
            and not is_awaiting_approval(r)
            and r.key not in handled
        ]
        if rollbacks and ctx.target == DEPLOYMENT:
            move, superseded = self._rollback_move(ctx, rollbacks, now)
            # Finished rollbacks the Deployment's ledger no longer names (a later one replaced them): nothing to
            # move for them, and not read for again.
            state.decided = [*state.decided, *superseded][-MAX_REGISTRY_HISTORY:]
            if move is not None:
                self._pend(state, move)
                return True
        prior_lkg = ctx.last_known_good
        if (
            last_known_good is not None
            and prior_lkg is not None
            and last_known_good.get("templateHash") != prior_lkg.get("templateHash")
        ):
            good_hash = str(last_known_good.get("templateHash"))
            move = RegistryMove(
                kind="Promote",
                # One move per revision per time it became last-known-good.
                key=f"revision/{good_hash}/{last_known_good.get('since')}",
                to_template_hash=good_hash,
                why=f"revision {last_known_good.get('revision')} became last-known-good",
                since=format_time(now),
            )
            self._pend(state, move)
            return True
        return False

    def _rollback_move(
        self, ctx: MonitorContext, rollbacks: Sequence[ActionRecord], now: datetime
    ) -> tuple[RegistryMove | None, list[str]]:
        """The alias move after the rollback the Deployment's ledger names (None while it has not acted), and
        the keys of finished rollbacks it does not name."""
        deployment = self.workloads.get(DEPLOYMENT, ctx.namespace, ctx.target_name)
        ledger = read_json_annotation(deployment, LEDGER_ANNOTATION)
        superseded = [r.key for r in rollbacks if r.result is ActionResult.SUCCEEDED and r.key != ledger.get("key")]
        done = next((r for r in reversed(rollbacks) if r.key == ledger.get("key")), None)
        if done is None:
            return None, superseded  # not rolled back yet: nothing for the registry
        move = RegistryMove(
            kind="Rollback",
            key=done.key,
            to_template_hash=str(ledger.get("to", "")),
            from_template_hash=str(ledger.get("from", "")),
            why=f"rollback {done.name} for policy {done.policy}",
            since=format_time(now),
        )
        return move, superseded

    def _templates(self, ctx: MonitorContext) -> dict[str, Mapping[str, Any]]:
        """The pod templates of the Deployment's revisions, by pod-template-hash."""
        _deployment, owned = self.rollback.history(ctx)
        return {template_hash(rs): (rs.get("spec") or {}).get("template") or {} for rs in owned}

    # --- acting ---------------------------------------------------------------------------------------------

    def _move(
        self,
        ctx: MonitorContext,
        spec: RegistrySpec,
        client: ModelRegistry,
        versions: Sequence[ModelVersion],
        state: RegistryStatus,
        now: datetime,
    ) -> list[Event]:
        move = state.pending
        assert move is not None
        templates = self._templates(ctx)
        target = served_version(templates.get(move.to_template_hash) or {}, versions)
        if target is None:
            state.pending = None
            self._remember(
                state,
                RegistryEntry(
                    event="Promoted" if move.kind == "Promote" else "RolledBack",
                    version="",
                    at=format_time(now),
                    why=f"{move.why}; alias not moved: that revision pins no registered version of {spec.model}",
                    key=move.key,
                ),
            )
            return [
                Event(
                    "Warning",
                    "RegistryAliasNotMoved",
                    f"{move.why}, but that revision pins no registered version of {spec.model}: alias {spec.alias} "
                    "left where it is",
                )
            ]
        current = client.alias(spec.model, spec.alias)
        if current is None or current.version != target.version:
            client.set_alias(spec.model, spec.alias, target.version)
        stamp = format_time(now)
        if move.kind == "Promote":
            left = current if current is not None and current.version != target.version else None
            if left is not None:
                client.set_tag(
                    spec.model,
                    left.version,
                    spec.previous_tag,
                    f"{stamp}: {spec.alias} moved to version {target.version}",
                )
            event: Literal["Promoted", "RolledBack"] = "Promoted"
            why = f"{move.why}; {spec.alias} moved from version {left.version if left else '-'}"
        else:
            left = served_version(templates.get(move.from_template_hash) or {}, versions)
            if left is not None and left.version != target.version:
                client.set_tag(spec.model, left.version, spec.rolled_back_tag, f"{stamp}: {move.why}")
            event = "RolledBack"
            why = f"{move.why}; rolled back from version {left.version if left else 'unknown'}"
        state.pending = None
        state.alias_version = target.version
        self._remember(
            state,
            RegistryEntry(event=event, version=target.version, source=target.source, at=stamp, why=why, key=move.key),
        )
        return [
            Event(
                "Normal",
                "RegistryAliasMoved",
                f"alias {spec.alias} of {spec.model} now points at version {target.version} ({why})",
            )
        ]

    def _observe(
        self,
        ctx: MonitorContext,
        spec: RegistrySpec,
        client: ModelRegistry,
        versions: Sequence[ModelVersion],
        state: RegistryStatus,
        now: datetime,
    ) -> None:
        """Read which version the workload serves and where the alias points; a new served version is history."""
        if ctx.target not in (DEPLOYMENT, STATEFULSET):
            return
        try:
            workload = self.workloads.get(ctx.target, ctx.namespace, ctx.target_name)
        except KubernetesError as exc:
            log.warning("%s/%s: registry: reading %s: %s", ctx.namespace, ctx.name, ctx.target_text, exc)
            return
        aliased = client.alias(spec.model, spec.alias)
        state.alias_version = aliased.version if aliased is not None else ""
        served = served_version((workload.get("spec") or {}).get("template") or {}, versions)
        if served is None or served.source == state.served_source:
            if served is None:
                state.served_version, state.served_source = "", ""
            return
        state.served_version, state.served_source = served.version, served.source
        ledger = read_json_annotation(workload, PROMOTED_ANNOTATION)
        cause = annotations_of(workload).get(CHANGE_CAUSE_ANNOTATION, "")
        if ledger.get("version") == served.source:
            why = f"pinned by retraining Job {ledger.get('job')}"
        elif cause.startswith("modelmonitor rollback"):
            why = "restored by a rollback"
        else:
            why = "the workload was changed outside the operator"
        # A Served entry is an observation, not a decision: it has no key, so it never marks a move as handled.
        self._remember(
            state,
            RegistryEntry(event="Served", version=served.version, source=served.source, at=format_time(now), why=why),
        )

    @staticmethod
    def _pend(state: RegistryStatus, move: RegistryMove) -> None:
        """``move`` becomes the pending one (a newer decision supersedes one still waiting: the alias follows the
        latest last-known-good) and its key is never decided again."""
        state.pending = move
        state.decided = [*state.decided, move.key][-MAX_REGISTRY_HISTORY:]

    @staticmethod
    def _remember(state: RegistryStatus, entry: RegistryEntry) -> None:
        state.history = [*state.history, entry][-MAX_REGISTRY_HISTORY:]
