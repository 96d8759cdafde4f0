"""Kills at injected points: the operator exits (``os._exit``, like SIGKILL) at the n-th time it reaches a point
of an action (a Pending record written, a workload changed, a Job created, an alert sent, a version promoted),
round after round, while four monitors act; every action happens exactly once (kills_rig.py says what is
counted)."""

from __future__ import annotations

import pytest
from actions_rig import Rig, crd_fixture, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures
from kills_rig import Kills, run_scenario

pytestmark = pytest.mark.cluster

# Each round arms one point. The points of one-time actions come first (which of them a round reaches depends on
# the order the monitors act in); the alert's re-sends, every 2 s while the policy fires, reach theirs every round.
POINTS = [
    "before-act:scale",
    "after-act:scale",
    "before-act:rollback",
    "after-act:rollback",
    "before-act:retrain",
    "after-act:retrain",
    "after-promote:retrain",
    "after-act:scale@2",
    "before-act:alert",
    "after-act:alert",
    "before-act:alert@2",
    "after-act:alert@2",
]
ROUNDS, HEALED_ROUNDS = 20, 3


def test_kills_at_injected_points(rig: Rig) -> None:
    kills = Kills(POINTS + ["after-act:alert"] * (ROUNDS - len(POINTS)))
    at_points = run_scenario(rig, kills, ROUNDS, HEALED_ROUNDS)
    print("\n".join(kills.log))
    assert len(kills.log) == ROUNDS + HEALED_ROUNDS
    # Every round ends in a kill. Which points a round reaches depends on timing; the alert's re-sends make sure
    # that a good share of the rounds end at their point (not all: on a busy machine a re-send may come late).
    assert at_points >= ROUNDS // 4, kills.log
