"""One evaluation cycle of one monitor: classify each policy's measurement, step its state machine, decide.

`evaluate` is the engine's entry point for the operator shell:

    result = evaluate(spec, prior_status, measurements, now)
    # act on result.decisions, emit an Event per result.transitions,
    # then write render_status(spec, result, ...) (modelmonitor.policy.status).

It is pure: ``now`` is passed in (and floored to whole seconds, the resolution of status timestamps) and the
prior state comes from the previous status, so a restarted operator resumes the same timers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelmonitor.policy.decide import Decision, decide
from modelmonitor.policy.model import Measurement, MonitorSpec
from modelmonitor.policy.outcome import Outcome, OutcomeKind, classify
from modelmonitor.policy.sequential import sequential_measurement, sequential_rule
from modelmonitor.policy.state import PolicyState, PolicyStep, Transition, step
from modelmonitor.policy.timefmt import floor_to_second


@dataclass(frozen=True)
class Evaluation:
    """The result of one cycle for one monitor."""

    now: datetime
    paused: bool
    steps: tuple[PolicyStep, ...]
    transitions: tuple[Transition, ...]
    decisions: tuple[Decision, ...]

    @property
    def states(self) -> tuple[PolicyState, ...]:
        """The new state of every policy, in spec order."""
        return tuple(s.state for s in self.steps)

    @property
    def changed(self) -> bool:
        """Whether a policy changed state or something was decided."""
        return bool(self.transitions or self.decisions)


def prior_states(status: Mapping[str, Any] | None) -> dict[str, PolicyState]:
    """The policy states recorded in a monitor's status (``status.policies``), by policy name. Raises ValueError
    naming the first entry that cannot be read (`readable_prior_states` leaves such entries out instead)."""
    if not status:
        return {}
    states, unreadable = readable_prior_states(status)
    if unreadable:
        raise ValueError(unreadable[0])
    return states


def readable_prior_states(
    status: Mapping[str, Any], *, messages: bool = True
) -> tuple[dict[str, PolicyState], list[str]]:
    """The policy states recorded in a monitor's status, by policy name, and what was wrong with each entry that
    could not be read. Such an entry (one the operator could not have written: edited by hand, say) is left out,
    so its policy starts Inactive and its entry is written anew, instead of the monitor failing every cycle.

    Without ``messages`` the states' messages are left empty: `evaluate` gives every policy a new one unless the
    monitor is paused, and a cycle holds every due monitor's prior states at once."""
    entries = status.get("policies") or []
    if not isinstance(entries, list):
        return {}, [f"status.policies: expected a list, got {type(entries).__name__}"]
    states: dict[str, PolicyState] = {}
    unreadable: list[str] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            unreadable.append(f"status.policies[{i}]: expected an object, got {type(entry).__name__}")
            continue
        try:
            state = PolicyState.from_status(entry)
        except (ValueError, TypeError) as exc:
            # The entry's own checks name its field; the state's checks name the policy but not where it was read.
            problem = str(exc)
            unreadable.append(problem if problem.startswith("status.") else f"status.policies[{i}]: {problem}")
        else:
            if not messages:
                object.__setattr__(state, "message", "")
            states[state.name] = state
    return states, unreadable


def evaluate(
    spec: MonitorSpec,
    prior: Mapping[str, PolicyState] | Mapping[str, Any] | None,
    measurements: Mapping[str, Measurement],
    now: datetime,
) -> Evaluation:
    """Evaluate every policy of ``spec`` once.

    ``prior`` is either the previous status dict (with ``policies``) or a mapping of policy name to
    `PolicyState`. A policy without a prior state starts Inactive; a policy without a measurement in this
    cycle counts as an Error (the shell failed to measure it) and so holds. When the monitor is paused no
    measurement is needed: known states are kept as they are (timers hold), policies never evaluated are left
    out, nothing transitions, nothing is decided.
    """
    now = floor_to_second(now)
    known: dict[str, PolicyState]
    if prior and all(isinstance(v, PolicyState) for v in prior.values()):
        known = {name: state for name, state in prior.items() if isinstance(state, PolicyState)}
    else:
        known = prior_states(prior)  # a status dict (or nothing yet)

    steps: list[PolicyStep] = []
    for rule in spec.policies:
        if spec.paused:
            # Nothing is measured: known policies keep their state and timers; a policy never evaluated has
            # no state to show yet.
            kept = known.get(rule.name)
            if kept is not None:
                held = Outcome(OutcomeKind.NO_DATA, None, None, None, "monitor paused")
                steps.append(PolicyStep(rule, held, kept, None))
            continue
        before = known.get(rule.name) or PolicyState.initial(rule.name, now)
        measurement = measurements.get(rule.name)
        if measurement is None:
            measurement = Measurement.error("no measurement was taken for this policy in this cycle")
        cusum = before.cusum
        if rule.sequential is not None:
            measurement, cusum = sequential_measurement(rule, measurement, before.cusum, now)
            measured_rule = sequential_rule(rule, measurement)
        else:
            measured_rule = rule.for_measurement(measurement)
        outcome = classify(measured_rule, measurement, clearing=before.clearing)
        steps.append(step(measured_rule, before, outcome, now, cusum=cusum))

    transitions = tuple(s.transition for s in steps if s.transition is not None)
    return Evaluation(
        now=now,
        paused=spec.paused,
        steps=tuple(steps),
        transitions=transitions,
        decisions=decide(spec, steps),
    )
