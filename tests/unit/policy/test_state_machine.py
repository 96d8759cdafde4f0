"""The per-policy state machine, driven through the operator loop (status round-trips every cycle)."""

from __future__ import annotations

import pytest
from policy_support import EMPTY, ERR, JUNK, Operator, accuracy_rule, at, bad, monitor, ok, restarted

from modelmonitor.policy import Measurement, PolicyState, State, format_time

# Each case: rule overrides, then (seconds, measurement, expected state) per cycle.
CASES: dict[str, tuple[dict[str, object], list[tuple[float, Measurement, str]]]] = {
    "for 0 fires at once": ({}, [(0, bad(), "Firing"), (30, bad(), "Firing")]),
    "for 5m fires at the deadline, not before": (
        {"for_seconds": 300},
        [(0, bad(), "Pending"), (150, bad(), "Pending"), (299, bad(), "Pending"), (300, bad(), "Firing")],
    ),
    "an OK resets Pending; the next episode waits its own for": (
        {"for_seconds": 300},
        [
            (0, bad(), "Pending"),
            (100, ok(), "Inactive"),
            (200, bad(), "Pending"),
            (450, bad(), "Pending"),  # would have fired at 300 had the first episode counted
            (500, bad(), "Firing"),
        ],
    ),
    "keepFiringFor holds Firing until the clear lasted long enough": (
        {"keep_firing_for_seconds": 120},
        [
            (0, bad(), "Firing"),
            (30, ok(), "Resolving"),
            (149, ok(), "Resolving"),
            (150, ok(), "Inactive"),
        ],
    ),
    "a breach while Resolving goes back to Firing and restarts keepFiringFor": (
        {"keep_firing_for_seconds": 120},
        [
            (0, bad(), "Firing"),
            (30, ok(), "Resolving"),
            (60, bad(), "Firing"),
            (90, ok(), "Resolving"),
            (180, ok(), "Resolving"),  # 150 after the first clear, but only 90 after the second
            (210, ok(), "Inactive"),
        ],
    ),
    "keepFiringFor 0 clears at once": ({}, [(0, bad(), "Firing"), (30, ok(), "Inactive")]),
    "hysteresis: between threshold and clearThreshold stays Firing": (
        {"clear_threshold": 0.88},
        [
            (0, bad(0.80), "Firing"),
            (30, ok(0.86), "Firing"),  # above 0.85 but below 0.88
            (60, ok(0.88), "Inactive"),
            (90, ok(0.86), "Inactive"),  # no longer firing: 0.85 decides again
        ],
    ),
    "an error during Pending holds; it neither resets nor fires": (
        {"for_seconds": 300},
        [
            (0, bad(), "Pending"),
            (60, ERR, "Error"),
            (310, ERR, "Error"),  # the deadline passed during the outage: still no decision
            (320, bad(), "Firing"),  # the first breach after the deadline fires (the for clock kept running)
        ],
    ),
    "an error during Pending before the deadline: the original deadline stays": (
        {"for_seconds": 300},
        [
            (0, bad(), "Pending"),
            (60, ERR, "Error"),
            (120, bad(), "Pending"),
            (299, bad(), "Pending"),
            (300, bad(), "Firing"),
        ],
    ),
    "an OK after an error resets Pending": (
        {"for_seconds": 300},
        [(0, bad(), "Pending"), (60, ERR, "Error"), (120, ok(), "Inactive"), (320, bad(), "Pending")],
    ),
    "NoData holds Firing; data back decides": (
        {},
        [
            (0, bad(), "Firing"),
            (30, EMPTY, "NoData"),
            (60, EMPTY, "NoData"),
            (90, bad(), "Firing"),
            (120, ok(), "Inactive"),
        ],
    ),
    "NoData during Resolving keeps the keepFiringFor clock": (
        {"keep_firing_for_seconds": 120},
        [
            (0, bad(), "Firing"),
            (30, ok(), "Resolving"),
            (60, EMPTY, "NoData"),
            (200, EMPTY, "NoData"),
            (210, ok(), "Inactive"),  # 180 s since the clear began
        ],
    ),
    "NoData while Inactive, then data": ({}, [(0, EMPTY, "NoData"), (30, ok(), "Inactive"), (60, EMPTY, "NoData")]),
    "switching between NoData and Error": (
        {"for_seconds": 300},
        [
            (0, bad(), "Pending"),
            (30, EMPTY, "NoData"),
            (60, ERR, "Error"),
            (90, EMPTY, "NoData"),
            (300, bad(), "Firing"),
        ],
    ),
    "noData ok: missing data resets Pending": (
        {"for_seconds": 300, "no_data": "ok"},
        [(0, bad(), "Pending"), (60, EMPTY, "Inactive"), (400, bad(), "Pending")],
    ),
    "noData breach: missing data counts towards for": (
        {"for_seconds": 60, "no_data": "breach"},
        [(0, EMPTY, "Pending"), (30, EMPTY, "Pending"), (60, EMPTY, "Firing")],
    ),
    "minSamples: thin windows never breach": (
        {"min_samples": 200},
        [(0, bad(samples=150), "NoData"), (30, bad(samples=250), "Firing")],
    ),
    "an invalid answer holds like an error": (
        {"for_seconds": 60},
        [(0, bad(), "Pending"), (30, JUNK, "Error"), (90, bad(), "Firing")],
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_transition_table(case: str) -> None:
    overrides, script = CASES[case]
    op = Operator(monitor(accuracy_rule(**overrides)))
    seen = []
    for seconds, measurement, _expected in script:
        op.cycle(seconds, measurement)
        seen.append(op.state())
    assert seen == [expected for _, _, expected in script]


def test_active_since_marks_the_episode_and_survives_holds() -> None:
    op = Operator(monitor(accuracy_rule(for_seconds=300, keep_firing_for_seconds=60)))
    op.run([(0, ok()), (30, bad()), (60, ERR), (90, EMPTY), (330, bad()), (360, ok())])
    entry = op.status["policies"][0]
    assert entry["state"] == "Resolving"
    assert entry["activeSince"] == format_time(at(30))
    op.cycle(420, ok())
    assert "activeSince" not in op.status["policies"][0]


def test_error_streak_counts_consecutive_errors_only() -> None:
    op = Operator(monitor(accuracy_rule()))
    streaks = []
    for i, m in enumerate([ERR, ERR, ERR, EMPTY, ERR, JUNK, ERR, ok()]):
        op.cycle(30 * i, m)
        streaks.append(op.status["policies"][0]["errorStreak"])
    assert streaks == [1, 2, 3, 0, 1, 0, 1, 0]


def test_last_outcome_and_kept_last_value() -> None:
    op = Operator(monitor(accuracy_rule()))
    op.cycle(0, ok(0.91, 320))
    op.cycle(30, ERR)
    entry = op.status["policies"][0]
    assert entry["lastOutcome"] == "Error"
    assert entry["value"] == 0.91 and entry["samples"] == 320 and entry["threshold"] == 0.85
    assert "connection refused" in entry["message"]
    assert "holding Inactive" in entry["message"]
    op.cycle(60, JUNK)
    assert op.status["policies"][0]["lastOutcome"] == "Invalid"


def test_since_is_the_entry_time_of_the_state() -> None:
    op = Operator(monitor(accuracy_rule(for_seconds=300)))
    op.run([(0, ok()), (30, ok()), (60, bad()), (90, bad())])
    entry = op.status["policies"][0]
    assert entry["since"] == entry["lastTransitionTime"] == format_time(at(60))
    op.cycle(120, ERR)
    entry = op.status["policies"][0]
    assert entry["since"] == format_time(at(120))
    assert entry["heldState"] == "Pending" and entry["heldSince"] == format_time(at(60))


def test_transitions_carry_value_threshold_window_and_query() -> None:
    op = Operator(monitor(accuracy_rule(for_seconds=60, keep_firing_for_seconds=30)))
    script = [(0, bad(0.8)), (30, bad(0.8)), (60, bad(0.7)), (90, ok(0.9)), (120, ok(0.9)), (150, ERR)]
    transitions = [t for e in op.run(script) for t in e.transitions]
    assert [(t.old.value, t.new.value) for t in transitions] == [
        ("Inactive", "Pending"),
        ("Pending", "Firing"),
        ("Firing", "Resolving"),
        ("Resolving", "Inactive"),
        ("Inactive", "Error"),
    ]
    fired = transitions[1]
    assert fired.value == 0.7 and fired.threshold == 0.85 and fired.window == "10m"
    assert fired.query == 'modelmonitor:accuracy{model="fraud"}'
    assert fired.reason == "PolicyFiring" and fired.event_type == "Warning"
    assert "0.7 < 0.85" in fired.message and "window 10m" in fired.message and "query:" in fired.message
    assert transitions[3].event_type == "Normal"


# ---- restart: only the status survives --------------------------------------------------------------


def test_restart_mid_pending_fires_at_the_original_deadline_once() -> None:
    rule = accuracy_rule(for_seconds=300)
    first = Operator(monitor(rule))
    first.run([(0, bad()), (60, bad()), (120, bad())])
    assert first.state() == "Pending"

    second = restarted(first)
    states = []
    for t in (150, 240, 299, 300, 330, 360):
        second.cycle(t, bad())
        states.append(second.state())
    assert states == ["Pending", "Pending", "Pending", "Firing", "Firing", "Firing"]

    all_cycles = first.history + second.history
    fired = [e.now for e in all_cycles for s in e.steps if s.started_firing]
    assert fired == [at(300)]  # not later than the original deadline, and only once
    firsts = [d for d in second.acts() if d.first]
    assert {d.action for d in firsts} == {"rollback", "page"}
    assert {d.key for d in second.acts()} == {
        f"ml/fraud/accuracy-drop/{format_time(at(0))}/rollback",
        f"ml/fraud/accuracy-drop/{format_time(at(0))}/page",
    }


def test_restart_while_firing_does_not_fire_again() -> None:
    first = Operator(monitor(accuracy_rule()))
    first.run([(0, bad()), (30, bad())])
    keys_before = {d.key for d in first.acts()}
    second = restarted(first)
    second.run([(60, bad()), (90, bad())])
    assert not any(s.started_firing for e in second.history for s in e.steps)
    assert {d.key for d in second.acts()} == keys_before


def test_restart_mid_resolving_resolves_at_the_original_deadline() -> None:
    first = Operator(monitor(accuracy_rule(keep_firing_for_seconds=120)))
    first.run([(0, bad()), (30, ok()), (90, ok())])
    second = restarted(first)
    second.cycle(149, ok())
    assert second.state() == "Resolving"
    result = second.cycle(150, ok())
    assert second.state() == "Inactive"
    assert [d.kind.value for d in result.decisions] == ["resolved"]


def test_restart_while_an_error_holds_pending() -> None:
    first = Operator(monitor(accuracy_rule(for_seconds=300)))
    first.run([(0, bad()), (60, ERR)])
    second = restarted(first)
    second.cycle(200, ERR)
    second.cycle(301, bad())
    assert second.state() == "Firing"
    assert second.acts()[0].key.startswith(f"ml/fraud/accuracy-drop/{format_time(at(0))}/")


@pytest.mark.parametrize(
    ("entry", "held"),
    [
        ({"state": "Error", "activeSince": "2026-11-24T10:00:00Z"}, State.PENDING),
        ({"state": "NoData"}, State.INACTIVE),
    ],
)
def test_status_without_held_state_falls_back_to_the_safe_guess(entry: dict[str, str], held: State) -> None:
    state = PolicyState.from_status({"name": "p", "since": "2026-11-24T10:01:00Z", **entry})
    assert state.held_state is held


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"state": "Exploding", "since": "2026-11-24T10:00:00Z"}, r"status.policies\[p\].state: 'Exploding'"),
        ({"state": "Inactive"}, r"status.policies\[p\].since: missing"),
        ({"state": "Inactive", "since": "yesterday"}, "not an RFC 3339 timestamp"),
        ({"state": "Inactive", "since": "2026-11-24T10:00:00"}, "has no timezone"),
        ({"state": "Pending", "since": "2026-11-24T10:00:00Z"}, "needs activeSince"),
        ({"state": "Inactive", "since": "2026-11-24T10:00:00Z", "errorStreak": "2"}, "errorStreak"),
        ({"state": "Inactive", "since": "2026-11-24T10:00:00Z", "value": "0.3"}, r"\.value: expected a number"),
    ],
)
def test_a_status_we_could_not_have_written_is_refused(entry: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicyState.from_status({"name": "p", **entry})
