"""Kills at random moments: SIGKILL of the real operator process at a seeded random time after its start
(during imports, the first watch, a cycle, a status write or an action), round after round, while four monitors
act; every action happens exactly once (kills_rig.py says what is counted)."""

from __future__ import annotations

import pytest
from actions_rig import Rig, crd_fixture, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures
from kills_rig import Kills, run_scenario

pytestmark = pytest.mark.cluster

ROUNDS, HEALED_ROUNDS = 24, 3


def test_kills_at_random_moments(rig: Rig) -> None:
    kills = Kills([None], seed=2026)
    run_scenario(rig, kills, ROUNDS, HEALED_ROUNDS)
    print("\n".join(kills.log))
    assert len(kills.log) == ROUNDS + HEALED_ROUNDS
