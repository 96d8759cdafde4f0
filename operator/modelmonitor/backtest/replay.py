"""Replaying a monitor's policies over past steps with the operator's own path; pure (no I/O, no clock).

Each step does what one cycle of the evaluation loop does for this monitor, with the step's time as ``now``:
``reconcile(monitor, measurements, prior status, now)`` (the policy engine: `for`, `keepFiringFor`, hysteresis,
NoData and Error holds, combine, dry run), then the actions the decisions would run (`modelmonitor.backtest.
actions`: cooldowns, budgets, approval), then ``reconciled.with_actions(...)``, the status the loop would write,
which is the prior status of the next step. Only the measurements come from elsewhere (``measure_at``), so the
unit tests replay tables of measurements with an injected clock and the command replays Prometheus history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelmonitor.backtest.actions import would_run
from modelmonitor.policy import ActionRecord, Measurement, Op, OutcomeKind, PolicyStep, State
from modelmonitor.reconcile import Monitor, reconcile

#: ``(steps done, steps in all, the step's time)``.
Progress = Callable[[int, int, datetime], None]


@dataclass(frozen=True)
class Episode:
    """One time a policy fired: ``active_since`` (its Pending start), ``firing_at``, ``resolved_at`` (None: still
    firing, or held, at the end of the range) and ``peak``, its value furthest into breach while active."""

    active_since: datetime
    firing_at: datetime
    resolved_at: datetime | None
    peak: float | None


@dataclass(frozen=True)
class Point:
    """One policy at one step, for the timeline: the measured value and threshold, and the state after."""

    at: datetime
    value: float | None
    threshold: float | None
    state: State


@dataclass
class PolicyReplay:
    """What one policy did over the range."""

    name: str
    signal: str
    op: Op
    evaluations: int = 0
    breaches: int = 0
    no_data: int = 0
    errors: int = 0
    #: Episodes that went Pending and ended without firing (`for` filtered them out).
    pending_only: int = 0
    episodes: list[Episode] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    _open: tuple[datetime, datetime | None, float | None] | None = None  # (activeSince, firingAt, peak)

    def firing_seconds(self, end: datetime) -> float:
        """Seconds spent firing (Firing or Resolving) within the range; an open episode counts up to ``end``."""
        return sum(((e.resolved_at or end) - e.firing_at).total_seconds() for e in self.episodes)

    def observe(self, step: PolicyStep, now: datetime) -> None:
        self.evaluations += 1
        outcome = step.outcome
        if outcome.kind is OutcomeKind.BREACH:
            self.breaches += 1
        elif outcome.kind is OutcomeKind.NO_DATA:
            self.no_data += 1
        elif outcome.kind in (OutcomeKind.ERROR, OutcomeKind.INVALID):
            self.errors += 1
        state = step.state
        self.points.append(Point(now, outcome.value, outcome.threshold, state.state))

        active = state.active_since
        if self._open is not None and self._open[0] != active:
            self._close(now)
        if active is None:
            return
        since, firing_at, peak = self._open if self._open is not None else (active, None, None)
        if outcome.is_judgement and outcome.value is not None:
            peak = outcome.value if peak is None else self._worse(peak, outcome.value)
        if step.started_firing:
            firing_at = now
        self._open = (since, firing_at, peak)

    def finish(self) -> None:
        """Keep an episode still open at the end of the range (it has no ``resolved_at``)."""
        if self._open is not None and self._open[1] is not None:
            self.episodes.append(Episode(self._open[0], self._open[1], None, self._open[2]))
        elif self._open is not None:
            self.pending_only += 1
        self._open = None

    def _close(self, now: datetime) -> None:
        assert self._open is not None
        since, firing_at, peak = self._open
        if firing_at is None:
            self.pending_only += 1
        else:
            self.episodes.append(Episode(since, firing_at, now, peak))
        self._open = None

    def _worse(self, a: float, b: float) -> float:
        """The value further into breach: the larger for ``>``/``>=``, the smaller for ``<``/``<=``."""
        return max(a, b) if self.op in (Op.GT, Op.GE) else min(a, b)


@dataclass
class Replay:
    """The outcome of a replay: per policy, the actions that would have run, the final status."""

    monitor: Monitor
    start: datetime
    end: datetime
    policies: list[PolicyReplay]
    actions: list[ActionRecord]
    status: Mapping[str, Any]
    steps: int


def replay(
    monitor: Monitor,
    times: Iterable[datetime],
    measure_at: Callable[[datetime], Mapping[str, Measurement]],
    *,
    total: int = 0,
    progress: Progress | None = None,
) -> Replay:
    """Replay ``monitor`` at each of ``times`` (ascending), with ``measure_at(t)`` the measurements by policy
    name at ``t``. The first step starts from an empty status, as a newly applied monitor does."""
    policies = {
        p.name: PolicyReplay(p.name, p.signal or "query", rule.op)
        for p, rule in zip(monitor.spec.policies, monitor.engine.policies, strict=True)
    }
    status: Mapping[str, Any] = {}
    actions: list[ActionRecord] = []
    first: datetime | None = None
    last: datetime | None = None
    done = 0
    for now in times:
        first = first or now
        last = now
        reconciled = reconcile(monitor, measure_at(now), status, now)
        evaluation = reconciled.evaluation
        for step in evaluation.steps:
            policies[step.rule.name].observe(step, evaluation.now)
        records = would_run(monitor, evaluation, actions)
        actions.extend(records)
        status = reconciled.with_actions(status, records)
        done += 1
        if progress is not None:
            progress(done, total, now)
    if first is None or last is None:
        raise ValueError("nothing to replay: the range holds no step")
    for policy in policies.values():
        policy.finish()
    return Replay(monitor, first, last, list(policies.values()), actions, status, done)
