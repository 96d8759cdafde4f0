"""The per-policy state machine and its serializable state.

States (``status.policies[].state``)::

    Inactive --Breach--> Pending --Breach for `for`--> Firing --OK--> Resolving --OK for `keepFiringFor`--> Inactive
       ^                   |                             ^               |
       +-------OK----------+                             +----Breach-----+
    (for: 0 goes Inactive -> Firing at once; keepFiringFor: 0 goes Firing -> Inactive at once)

    any state --NoData (noData: hold)--> NoData      any state --Error/Invalid--> Error

NoData and Error *hold* the episode: the state they interrupt (``heldState``), its entry time (``heldSince``)
and the episode start (``activeSince``) are kept unchanged, and no transition out of the held state happens
while they last. The `for` and `keepFiringFor` clocks are wall clocks measured from ``activeSince`` and from the
entry into Resolving; a hold neither resets them nor completes them. The first OK or Breach after the hold
decides, as if the hold had not happened: a held Pending whose `for` deadline passed during an outage fires on
the first Breach afterwards (Prometheus does the same: a failed rule evaluation leaves the pending alert and its
``ActiveAt`` alone), and is reset by an OK.

Everything needed to resume lives in `PolicyState`, which round-trips through the status dict, so a restarted
operator continues the same timers and does not fire an episode twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from modelmonitor.policy.cusum import CusumState
from modelmonitor.policy.model import Rule, Severity
from modelmonitor.policy.outcome import Outcome, OutcomeKind
from modelmonitor.policy.timefmt import (
    format_duration,
    format_time,
    parse_time,
    require_aware,
    seconds_between,
)


class State(StrEnum):
    """The state of one policy (``status.policies[].state``)."""

    INACTIVE = "Inactive"
    PENDING = "Pending"
    FIRING = "Firing"
    RESOLVING = "Resolving"
    NO_DATA = "NoData"
    ERROR = "Error"


#: Each enum a status entry names, by value: read for every policy of every monitor in every cycle, where looking a
#: member up by calling the enum costs as much as the rest of the entry.
_MEMBERS: dict[type[StrEnum], dict[str, StrEnum]] = {
    enum: {member.value: member for member in enum} for enum in (State, OutcomeKind)
}

EPISODE_STATES = frozenset({State.INACTIVE, State.PENDING, State.FIRING, State.RESOLVING})
HOLD_STATES = frozenset({State.NO_DATA, State.ERROR})
ACTIVE_STATES = frozenset({State.PENDING, State.FIRING, State.RESOLVING})
FIRING_STATES = frozenset({State.FIRING, State.RESOLVING})


@dataclass(frozen=True)
class PolicyState:
    """Everything the engine remembers about one policy between cycles.

    ``state``/``since``: what the policy shows and when it entered it. ``active_since``: start of the current
    breach episode (Pending/Firing/Resolving), part of every idempotency key of that episode. While
    ``state`` is NoData or Error, ``held_state``/``held_since`` are the episode state being held and its entry
    time. ``value``/``threshold``/``samples`` are the last measured ones.
    """

    name: str
    state: State
    since: datetime
    active_since: datetime | None = None
    held_state: State | None = None
    held_since: datetime | None = None
    error_streak: int = 0
    last_outcome: OutcomeKind | None = None
    value: float | None = None
    threshold: float | None = None
    samples: int | None = None
    message: str = ""
    #: The CUSUM of a policy with sequential detection (``status.policies[].sequential``), so a restart resumes it.
    cusum: CusumState | None = None

    def __post_init__(self) -> None:
        # Built for every policy of every monitor in every cycle: convert only what is not of its type yet.
        owner = f"policy {self.name!r}"
        if type(self.state) is not State:
            object.__setattr__(self, "state", State(self.state))
        if self.held_state is not None and type(self.held_state) is not State:
            object.__setattr__(self, "held_state", State(self.held_state))
        if self.last_outcome is not None and type(self.last_outcome) is not OutcomeKind:
            object.__setattr__(self, "last_outcome", OutcomeKind(self.last_outcome))
        for attr in ("since", "active_since", "held_since"):
            moment = getattr(self, attr)
            if moment is not None and moment.tzinfo is not UTC:
                object.__setattr__(self, attr, require_aware(moment, field=f"{owner}: {attr}"))
        if self.state in HOLD_STATES:
            if self.held_state not in EPISODE_STATES or self.held_since is None:
                raise ValueError(f"{owner}: state {self.state.value} needs heldState and heldSince")
        elif self.held_state is not None or self.held_since is not None:
            raise ValueError(f"{owner}: heldState is only meaningful in NoData or Error, not {self.state.value}")
        episode = self.episode_state
        if episode in ACTIVE_STATES and self.active_since is None:
            raise ValueError(f"{owner}: a {episode.value} policy needs activeSince (the start of its episode)")
        if episode is State.INACTIVE and self.active_since is not None:
            raise ValueError(f"{owner}: an Inactive policy has no activeSince")
        if isinstance(self.error_streak, bool) or not isinstance(self.error_streak, int) or self.error_streak < 0:
            raise ValueError(f"{owner}: errorStreak must be a non-negative integer, got {self.error_streak!r}")
        for attr in ("value", "threshold"):
            number = getattr(self, attr)
            if number is not None and not math.isfinite(number):
                raise ValueError(f"{owner}: {attr} must be finite, got {number!r}")

    @classmethod
    def initial(cls, name: str, now: datetime) -> PolicyState:
        """A policy never evaluated before: Inactive since ``now``."""
        return cls(name=name, state=State.INACTIVE, since=now)

    @property
    def holding(self) -> bool:
        """True while NoData or Error holds the episode."""
        return self.state in HOLD_STATES

    @property
    def episode_state(self) -> State:
        """The episode state: the held one during NoData/Error, otherwise ``state``."""
        if self.held_state is not None:
            return self.held_state
        return self.state

    @property
    def episode_since(self) -> datetime:
        """When the episode state was entered (``held_since`` during a hold)."""
        if self.held_since is not None:
            return self.held_since
        return self.since

    @property
    def clearing(self) -> bool:
        """True while the episode is Firing or Resolving: the clear threshold is in force."""
        return self.episode_state in FIRING_STATES

    def to_status(self) -> dict[str, Any]:
        """The ``status.policies[]`` entry. Absent values are omitted (the CRD schema has no null types)."""
        out: dict[str, Any] = {
            "name": self.name,
            "state": self.state.value,
            "since": format_time(self.since),
            "lastTransitionTime": format_time(self.since),
            "errorStreak": self.error_streak,
            "message": self.message,
        }
        if self.value is not None:
            out["value"] = self.value
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.samples is not None:
            out["samples"] = self.samples
        if self.active_since is not None:
            out["activeSince"] = format_time(self.active_since)
        if self.last_outcome is not None:
            out["lastOutcome"] = self.last_outcome.value
        if self.held_state is not None and self.held_since is not None:
            out["heldState"] = self.held_state.value
            out["heldSince"] = format_time(self.held_since)
        if self.cusum is not None:
            out["sequential"] = {"statistic": self.cusum.statistic, "updatedAt": format_time(self.cusum.updated_at)}
        return out

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> PolicyState:
        """Rebuild the state from a ``status.policies[]`` entry written by `to_status`.

        Raises ValueError naming the field when the entry is not one we could have written. If ``heldState`` is
        missing on a NoData/Error entry (a status written without it), the held state is taken to be Pending
        when an episode is open and Inactive otherwise: Pending is the safe guess, because it can only delay a
        decision, and a decision for an episode that already fired repeats its idempotency key.
        """
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("status.policies[]: entry without a name")
        where = f"status.policies[{name}]"

        def time_field(key: str) -> datetime | None:
            raw = entry.get(key)
            return None if raw is None else parse_time(raw, field=f"{where}.{key}")

        def number_field(key: str) -> float | None:
            raw = entry.get(key)
            if raw is None:
                return None
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ValueError(f"{where}.{key}: expected a number, got {raw!r}")
            return float(raw)

        def enum_field(key: str, enum: type[StrEnum]) -> Any:
            raw = entry.get(key)
            if raw is None:
                return None
            member = _MEMBERS[enum].get(raw) if isinstance(raw, str) else None
            if member is None:
                allowed = ", ".join(m.value for m in enum)
                raise ValueError(f"{where}.{key}: {raw!r} is not one of {allowed}")
            return member

        state = enum_field("state", State)
        if state is None:
            raise ValueError(f"{where}.state: missing")
        since = time_field("since") or time_field("lastTransitionTime")
        if since is None:
            raise ValueError(f"{where}.since: missing")
        active_since = time_field("activeSince")
        held_state = enum_field("heldState", State)
        held_since = time_field("heldSince")
        if state in HOLD_STATES and held_state is None:
            held_state = State.PENDING if active_since is not None else State.INACTIVE
            held_since = active_since or since
        streak = entry.get("errorStreak", 0)
        if isinstance(streak, bool) or not isinstance(streak, int):
            raise ValueError(f"{where}.errorStreak: expected an integer, got {streak!r}")
        samples = entry.get("samples")
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)):
            raise ValueError(f"{where}.samples: expected an integer, got {samples!r}")
        message = entry.get("message", "")
        cusum = None
        sequential = entry.get("sequential")
        if sequential is not None:
            if not isinstance(sequential, Mapping):
                raise ValueError(f"{where}.sequential: expected an object with statistic and updatedAt")
            statistic = sequential.get("statistic")
            if isinstance(statistic, bool) or not isinstance(statistic, int | float):
                raise ValueError(f"{where}.sequential.statistic: expected a number, got {statistic!r}")
            updated_at = parse_time(str(sequential.get("updatedAt", "")), field=f"{where}.sequential.updatedAt")
            cusum = CusumState(float(statistic), updated_at)
        return cls(
            name=name,
            state=state,
            since=since,
            active_since=active_since,
            held_state=held_state if state in HOLD_STATES else None,
            held_since=held_since if state in HOLD_STATES else None,
            error_streak=streak,
            last_outcome=enum_field("lastOutcome", OutcomeKind),
            value=number_field("value"),
            threshold=number_field("threshold"),
            samples=samples,
            message=message if isinstance(message, str) else str(message),
            cusum=cusum,
        )


@dataclass(frozen=True)
class Transition:
    """A change of a policy's state, for a Kubernetes Event (value, threshold, window and query included)."""

    policy: str
    old: State
    new: State
    at: datetime
    value: float | None
    threshold: float | None
    window: str
    query: str
    severity: Severity
    outcome: OutcomeKind
    message: str

    @property
    def reason(self) -> str:
        """The Event reason, e.g. ``PolicyFiring``."""
        return f"Policy{self.new.value}"

    @property
    def event_type(self) -> str:
        """``Warning`` when the policy starts firing or cannot be judged, ``Normal`` otherwise."""
        return "Warning" if self.new in (State.FIRING, State.ERROR, State.NO_DATA) else "Normal"


@dataclass(frozen=True)
class PolicyStep:
    """One policy's cycle: the rule as measured, the outcome, what it is now and the transition to it. (The state
    it was in is not kept: a cycle holds the steps of every monitor until their statuses are written.)

    ``started_firing`` is True in the one cycle an episode enters Firing from Inactive or Pending.
    ``ended_episode`` is the ``activeSince`` of an episode that fired and ended in this cycle (for "resolved").
    """

    rule: Rule
    outcome: Outcome
    state: PolicyState
    transition: Transition | None
    started_firing: bool = False
    ended_episode: datetime | None = None


def _advance(
    rule: Rule, prior: PolicyState, breach: bool, now: datetime
) -> tuple[State, datetime | None, bool, datetime | None]:
    """The episode state after an OK or Breach: (state, activeSince, started firing, ended episode)."""
    episode = prior.episode_state
    active = prior.active_since
    if episode is State.INACTIVE:
        if not breach:
            return State.INACTIVE, None, False, None
        if rule.for_seconds <= 0:
            return State.FIRING, now, True, None
        return State.PENDING, now, False, None
    assert active is not None  # guaranteed by PolicyState's invariants
    if episode is State.PENDING:
        if not breach:
            return State.INACTIVE, None, False, None
        if seconds_between(active, now) >= rule.for_seconds:
            return State.FIRING, active, True, None
        return State.PENDING, active, False, None
    if episode is State.FIRING:
        if breach:
            return State.FIRING, active, False, None
        if rule.keep_firing_for_seconds <= 0:
            return State.INACTIVE, None, False, active
        return State.RESOLVING, active, False, None
    # Resolving: a breach returns to Firing within the same episode (same key, no new actions).
    if breach:
        return State.FIRING, active, False, None
    if seconds_between(prior.episode_since, now) >= rule.keep_firing_for_seconds:
        return State.INACTIVE, None, False, active
    return State.RESOLVING, active, False, None


def _describe(rule: Rule, state: PolicyState, outcome: Outcome) -> str:
    """The human message of a policy's status entry: value, threshold, window, timers and query."""
    text = outcome.reason
    episode = state.episode_state
    since = state.episode_since
    if state.holding:
        what = "measurement errors" if state.state is State.ERROR else "no data"
        if state.state is State.ERROR:
            text += f"; {state.error_streak} consecutive error{'' if state.error_streak == 1 else 's'}"
        text += f"; holding {episode.value}"
        if state.active_since is not None:
            text += f" (episode since {format_time(state.active_since)})"
        text += f": timers kept, no action on {what}"
    elif episode is State.PENDING and state.active_since is not None:
        deadline = state.active_since + timedelta(seconds=rule.for_seconds)
        text += (
            f"; breaching since {format_time(state.active_since)}, fires at {format_time(deadline)} "
            f"if it persists (for {format_duration(rule.for_seconds)})"
        )
    elif episode is State.FIRING:
        text += f"; firing since {format_time(since)}"
    elif episode is State.RESOLVING:
        deadline = since + timedelta(seconds=rule.keep_firing_for_seconds)
        text += (
            f"; clear since {format_time(since)}, resolves at {format_time(deadline)} "
            f"if it stays clear (keepFiringFor {format_duration(rule.keep_firing_for_seconds)})"
        )
    if rule.query:
        text += f"; query: {rule.query}"
    return text


def step(
    rule: Rule, prior: PolicyState, outcome: Outcome, now: datetime, *, cusum: CusumState | None = None
) -> PolicyStep:
    """Advance one policy by one measurement outcome at ``now``. Pure.

    OK and Breach move the episode (see the module docstring); NoData holds it in state NoData; Error and
    Invalid hold it in state Error. ``errorStreak`` counts consecutive Error outcomes and is reset by any other
    outcome. ``cusum`` is the sequential statistic to keep (the prior one when not given).
    """
    now = require_aware(now, field="now")
    if prior.name != rule.name:
        raise ValueError(f"state of policy {prior.name!r} passed for policy {rule.name!r}")
    started = False
    ended: datetime | None = None
    if outcome.is_judgement:
        new_state, active, started, ended = _advance(rule, prior, outcome.kind is OutcomeKind.BREACH, now)
        # Staying in (or returning from a hold to) the same episode state keeps its entry time: the
        # keepFiringFor clock of Resolving runs from there.
        since = prior.episode_since if new_state is prior.episode_state else now
        held_state: State | None = None
        held_since: datetime | None = None
        streak = 0
    else:
        new_state = State.ERROR if outcome.kind in (OutcomeKind.ERROR, OutcomeKind.INVALID) else State.NO_DATA
        active = prior.active_since
        held_state = prior.episode_state
        held_since = prior.episode_since
        since = prior.since if prior.state is new_state else now
        streak = prior.error_streak + 1 if outcome.kind is OutcomeKind.ERROR else 0

    state = PolicyState(
        name=rule.name,
        state=new_state,
        since=since,
        active_since=active,
        held_state=held_state,
        held_since=held_since,
        error_streak=streak,
        last_outcome=outcome.kind,
        value=outcome.value if outcome.value is not None else prior.value,
        threshold=outcome.threshold if outcome.threshold is not None else prior.threshold,
        samples=outcome.samples if outcome.samples is not None else prior.samples,
        cusum=cusum if cusum is not None else prior.cusum,
    )
    # Set on the state just built, before anyone sees it (`replace` would check every field again).
    object.__setattr__(state, "message", _describe(rule, state, outcome))
    transition = None
    if state.state is not prior.state:
        transition = Transition(
            policy=rule.name,
            old=prior.state,
            new=state.state,
            at=now,
            value=outcome.value,
            threshold=outcome.threshold,
            window=rule.window,
            query=rule.query,
            severity=rule.severity,
            outcome=outcome.kind,
            message=state.message,
        )
    return PolicyStep(rule, outcome, state, transition, started, ended)
