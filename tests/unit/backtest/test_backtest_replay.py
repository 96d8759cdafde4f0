"""The replay: tables of measurements at injected times through the operator's own reconcile path, read back as
episodes, counts and the actions that would have run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelmonitor.backtest.replay import Episode, Replay, replay
from modelmonitor.policy import ActionResult, Measurement
from modelmonitor.reconcile import monitor_from_body

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
MINUTE = 60
NO = "no data"
ERR = "error"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def body(
    policy: Mapping[str, Any] | None = None, actions: Mapping[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ml", "name": "fraud"},
        "spec": {
            "target": {"name": "fraud"},
            "model": {"name": "fraud"},
            "interval": "1m",
            "policies": [
                {
                    "name": "accuracy",
                    "signal": "accuracy",
                    "window": "10m",
                    "condition": {"op": "<", "threshold": 0.8},
                    "actions": list(actions or {}),
                    **(policy or {}),
                }
            ],
            "actions": dict(actions or {}),
            **spec,
        },
    }


def run(values: Sequence[float | str], policy: Mapping[str, Any] | None = None, **kwargs: Any) -> Replay:
    """Replay one value per minute from T0 (``NO``: NoData, ``ERR``: a failed query)."""
    monitor = monitor_from_body(body(policy, **kwargs))

    def measure_at(now: datetime) -> dict[str, Measurement]:
        value = values[round((now - T0).total_seconds() / MINUTE)]
        if value == NO:
            return {"accuracy": Measurement.no_data("the query returned no series")}
        if value == ERR:
            return {"accuracy": Measurement.error("connection refused")}
        assert isinstance(value, float)
        return {"accuracy": Measurement.value(value, 500)}

    return replay(monitor, [at(i) for i in range(len(values))], measure_at, total=len(values))


GOOD, BAD = 0.9, 0.7


@pytest.mark.parametrize(
    ("policy", "values", "episodes", "pending_only"),
    [
        # for: 0 fires at the first breach; keepFiringFor: 0 resolves at the first OK.
        ({}, [GOOD, BAD, BAD, GOOD, GOOD], [Episode(at(1), at(1), at(3), BAD)], 0),
        # for: 3m: Pending from minute 1, Firing at minute 4 (3 minutes later), resolved at the first OK.
        ({"for": "3m"}, [GOOD, BAD, BAD, BAD, 0.6, GOOD], [Episode(at(1), at(4), at(5), 0.6)], 0),
        # A breach shorter than `for` never fires: a pending-only episode.
        ({"for": "3m"}, [GOOD, BAD, BAD, GOOD, GOOD], [], 1),
        # keepFiringFor: 2m: OK for two minutes before it resolves; a breach in between keeps the episode.
        (
            {"keepFiringFor": "2m"},
            [BAD, GOOD, BAD, GOOD, GOOD, GOOD, GOOD],
            [Episode(at(0), at(0), at(5), BAD)],
            0,
        ),
        # Hysteresis: between threshold and clearThreshold a firing policy keeps firing.
        (
            {"condition": {"op": "<", "threshold": 0.8, "clearThreshold": 0.85}},
            [BAD, 0.82, 0.83, 0.9, 0.82],
            [Episode(at(0), at(0), at(3), BAD)],
            0,
        ),
        # NoData and Errors hold the episode: it neither resolves nor restarts.
        ({}, [BAD, NO, ERR, BAD, GOOD], [Episode(at(0), at(0), at(4), BAD)], 0),
        # Still firing at the end of the range: no resolvedAt.
        ({"for": "1m"}, [GOOD, BAD, 0.5, 0.6], [Episode(at(1), at(2), None, 0.5)], 0),
    ],
)
def test_episodes_follow_the_engine(
    policy: dict[str, Any], values: list[float | str], episodes: list[Episode], pending_only: int
) -> None:
    [result] = run(values, policy).policies
    assert result.episodes == episodes
    assert result.pending_only == pending_only


def test_counts_evaluations_breaches_no_data_and_errors() -> None:
    [result] = run([GOOD, BAD, NO, NO, ERR, GOOD]).policies
    assert (result.evaluations, result.breaches, result.no_data, result.errors) == (6, 1, 2, 1)
    assert [p.state.value for p in result.points] == ["Inactive", "Firing", "NoData", "NoData", "Error", "Inactive"]


def test_no_data_breach_policy_fires_on_missing_data() -> None:
    [result] = run([GOOD, NO, NO, GOOD], {"noData": "breach"}).policies
    assert [(e.firing_at, e.resolved_at) for e in result.episodes] == [(at(1), at(3))]


def test_peak_is_the_value_furthest_into_breach_for_either_direction() -> None:
    [low] = run([0.7, 0.5, 0.6, GOOD]).policies
    [high] = run([1.0, 3.0, 2.0, 0.1], {"condition": {"op": ">", "threshold": 0.5}}).policies
    assert (low.episodes[0].peak, high.episodes[0].peak) == (0.5, 3.0)


def test_the_status_is_carried_from_step_to_step() -> None:
    result = run([BAD, BAD, BAD], {"for": "2m"})
    [policy] = result.status["policies"]
    assert (policy["state"], policy["activeSince"]) == ("Firing", "2026-12-06T12:00:00Z")
    assert result.steps == 3 and (result.start, result.end) == (at(0), at(2))


PAGE = {"page": {"type": "alert", "webhook": {"url": "http://hooks.example/page"}}}


def ran(result: Replay) -> list[tuple[str, datetime]]:
    return [(a.name, a.at) for a in result.actions if a.result is ActionResult.SUCCEEDED]


def test_an_alert_runs_once_per_episode() -> None:
    result = run([BAD, BAD, GOOD, BAD, BAD], actions=PAGE)
    assert ran(result) == [("page", at(0)), ("page", at(3))]
    assert result.actions[0].key == "ml/fraud/accuracy/2026-12-06T12:00:00Z/page"


def test_a_cooldown_holds_the_next_episode_back_until_it_expires() -> None:
    rollback = {"rollback": {"type": "rollback", "cooldown": "3m"}}
    result = run([BAD, GOOD, BAD, BAD, BAD, BAD], actions=rollback)
    assert ran(result) == [("rollback", at(0)), ("rollback", at(3))]
    [skipped] = [a for a in result.actions if a.result is ActionResult.SKIPPED]
    assert skipped.at == at(2) and skipped.reason.startswith("cooldown 3m: last run at 2026-12-06T12:00:00Z")


def test_a_budget_caps_runs_per_window() -> None:
    rollback = {"rollback": {"type": "rollback", "cooldown": "0s", "budget": {"max": 2, "per": "1h"}}}
    result = run([BAD, GOOD, BAD, GOOD, BAD, GOOD], actions=rollback)
    assert ran(result) == [("rollback", at(0)), ("rollback", at(2))]
    [skipped] = [a for a in result.actions if a.result is ActionResult.SKIPPED]
    assert skipped.at == at(4) and skipped.reason.startswith("budget: 2 runs in the last 1h")


def test_scale_steps_every_cooldown_after_the_stabilization_window() -> None:
    scale = {"scaleUp": {"type": "scale", "step": 1, "maxReplicas": 9, "cooldown": "2m", "stabilizationWindow": "1m"}}
    result = run([BAD] * 6, actions=scale)
    assert ran(result) == [("scaleUp", at(1)), ("scaleUp", at(3)), ("scaleUp", at(5))]
    assert [a.key.rsplit("/", 1)[1] for a in result.actions if a.result is ActionResult.SUCCEEDED] == [
        "scaleUp",
        "scaleUp#2",
        "scaleUp#3",
    ]


@pytest.mark.parametrize(
    ("where", "result"),
    [
        ({"dryRun": True}, ActionResult.DRY_RUN),
        ({"requireApproval": True}, ActionResult.PENDING),
    ],
)
def test_dry_run_and_approval_run_nothing_and_say_so_once(where: dict[str, Any], result: ActionResult) -> None:
    rollback = {"rollback": {"type": "rollback", **where}}
    replayed = run([BAD, BAD, BAD], actions=rollback)
    assert [(a.result, a.at) for a in replayed.actions] == [(result, at(0))]


def test_a_dry_run_monitor_runs_nothing() -> None:
    replayed = run([BAD, BAD], actions=PAGE, dryRun=True)
    assert [a.result for a in replayed.actions] == [ActionResult.DRY_RUN]


def test_an_empty_range_is_refused() -> None:
    monitor = monitor_from_body(body())
    with pytest.raises(ValueError, match="no step"):
        replay(monitor, [], lambda now: {})
