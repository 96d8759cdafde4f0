"""render_status(): phase, conditions, firingPolicies, lastAction, bounded action history."""

from __future__ import annotations

import pytest
from policy_support import EMPTY, ERR, JUNK, Operator, accuracy_rule, at, bad, monitor, ok

from modelmonitor.policy import (
    MAX_ACTION_HISTORY,
    ActionRecord,
    ActionResult,
    Measurement,
    Rule,
    evaluate,
    format_time,
    merge_actions,
    render_invalid_status,
    render_status,
)


def drift_rule() -> Rule:
    return Rule("drift", ">", 0.2, for_seconds=60, window="1h", actions=("retrain",))


def conditions(status: dict[str, object]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in status["conditions"]}  # type: ignore[attr-defined, index]


@pytest.mark.parametrize(
    ("script", "phase", "message_part"),
    [
        ([ok()], "Healthy", "all 2 policies OK"),
        ([bad()], "Firing", "firing: accuracy-drop"),
        ([EMPTY], "NoData", "no data to judge: accuracy-drop"),
        ([ERR], "Healthy", "1 of 3 errors before Degraded"),
        ([ERR, ERR, ERR], "Degraded", "3 consecutive measurement errors"),
        ([bad(), ERR, ERR, ERR], "Degraded", "degradedAfterErrors 3"),
        ([bad(), ERR], "Firing", "firing: accuracy-drop"),  # a hiccup does not hide a firing policy
        ([JUNK], "Invalid", "unusable answer"),
        ([bad(), ok()], "Healthy", "OK"),
    ],
)
def test_phase(script: list[Measurement], phase: str, message_part: str) -> None:
    op = Operator(monitor(accuracy_rule(), drift_rule()))
    for i, m in enumerate(script):
        op.cycle(30 * i, {"accuracy-drop": m, "drift": Measurement.value(0.05, 1000)})
    assert op.status["phase"] == phase
    assert message_part in op.status["message"]


def test_pending_phase_and_firing_policies_column() -> None:
    op = Operator(monitor(accuracy_rule(keep_firing_for_seconds=60), drift_rule()))
    op.cycle(0, {"accuracy-drop": bad(), "drift": Measurement.value(0.5, 1000)})
    assert op.status["phase"] == "Firing"
    assert op.status["firingPolicies"] == "accuracy-drop"
    op.cycle(30, {"accuracy-drop": ok(), "drift": Measurement.value(0.5, 1000)})  # Resolving still fires
    assert op.status["firingPolicies"] == "accuracy-drop"
    op.cycle(90, {"accuracy-drop": ok(), "drift": Measurement.value(0.5, 1000)})
    assert op.status["firingPolicies"] == "drift"
    op.cycle(95, {"accuracy-drop": ok(), "drift": Measurement.value(0.1, 1000)})
    assert op.status["phase"] == "Healthy" and op.status["firingPolicies"] == ""


def test_pending_alone() -> None:
    op = Operator(monitor(drift_rule()))
    op.cycle(0, Measurement.value(0.5, 10))
    assert op.status["phase"] == "Pending"
    assert op.status["message"] == "pending: drift"


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    op = Operator(monitor(accuracy_rule()))
    op.cycle(0, ok())
    op.cycle(30, ok())
    c = conditions(op.status)
    assert c["Ready"]["status"] == "True" and c["Ready"]["lastTransitionTime"] == format_time(at(0))
    assert c["Evaluating"]["status"] == "True"
    for t in (60, 90, 120):
        op.cycle(t, ERR)
    c = conditions(op.status)
    assert c["Degraded"] == {
        "type": "Degraded",
        "status": "True",
        "reason": "ConsecutiveErrors",
        "message": "policy accuracy-drop: 3 consecutive errors",
        "lastTransitionTime": format_time(at(120)),
    }
    assert c["Evaluating"]["status"] == "False" and c["Evaluating"]["lastTransitionTime"] == format_time(at(60))
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "Degraded"
    op.cycle(150, ok())
    c = conditions(op.status)
    assert c["Degraded"]["status"] == "False" and c["Degraded"]["lastTransitionTime"] == format_time(at(150))
    assert [x["type"] for x in op.status["conditions"]] == [
        "Ready",
        "Evaluating",
        "Degraded",
        "ActionInProgress",
        "Conflict",
    ]


def test_the_conflict_condition_names_the_older_monitor_and_clears_when_it_is_gone() -> None:
    spec = monitor(accuracy_rule())
    first = evaluate(spec, None, {"accuracy-drop": ok()}, at(0))
    status = render_status(spec, first, conflict_with="fraud-old")
    c = conditions(status)["Conflict"]
    assert (c["status"], c["reason"]) == ("True", "WorkloadConflict")
    assert "ModelMonitor fraud-old is older" in c["message"] and c["lastTransitionTime"] == format_time(at(0))
    assert status["phase"] == "Healthy", "a conflict holds actions back; it does not change what the model is"
    second = evaluate(spec, status, {"accuracy-drop": ok()}, at(30))
    again = render_status(spec, second, prior_status=status, conflict_with="fraud-old")
    assert conditions(again)["Conflict"]["lastTransitionTime"] == format_time(at(0))
    cleared = render_status(spec, evaluate(spec, again, {"accuracy-drop": ok()}, at(60)), prior_status=again)
    c = conditions(cleared)["Conflict"]
    assert (c["status"], c["reason"], c["lastTransitionTime"]) == ("False", "NoConflict", format_time(at(60)))


def test_action_records_last_action_and_acting_phase() -> None:
    spec = monitor(accuracy_rule())
    result = evaluate(spec, None, {"accuracy-drop": bad()}, at(0))
    rollback = next(d for d in result.decisions if d.action == "rollback")
    status = render_status(
        spec,
        result,
        action_records=[ActionRecord.for_decision(rollback, result=ActionResult.PENDING, at=at(0))],
        observed_generation=4,
    )
    assert status["phase"] == "Acting"
    assert conditions(status)["ActionInProgress"]["status"] == "True"
    assert status["lastAction"] == "rollback Pending 2026-11-24T10:00:00Z"
    assert status["observedGeneration"] == 4
    assert status["actions"][0] == {
        "name": "rollback",
        "type": "rollback",
        "policy": "accuracy-drop",
        "at": "2026-11-24T10:00:00Z",
        "result": "Pending",
        "reason": rollback.reason,
        "key": "ml/fraud/accuracy-drop/2026-11-24T10:00:00Z/rollback",
    }
    later = evaluate(spec, status, {"accuracy-drop": bad()}, at(30))
    done = ActionRecord.for_decision(
        later.decisions[0], result=ActionResult.SUCCEEDED, at=at(30), reason="rolled back to revision 7"
    )
    status = render_status(spec, later, prior_status=status, action_records=[done])
    assert [a["result"] for a in status["actions"]] == ["Succeeded"]  # the Pending record was completed
    assert status["phase"] == "Firing"
    assert status["lastAction"] == "rollback Succeeded 2026-11-24T10:00:30Z"


def test_repeated_records_of_one_episode_do_not_flood_the_history() -> None:
    spec = monitor(accuracy_rule(), dry_run=True)
    status: dict[str, object] = {}
    for t in range(0, 300, 30):
        result = evaluate(spec, status, {"accuracy-drop": bad()}, at(t))
        records = [ActionRecord.for_decision(d, result=ActionResult.DRY_RUN, at=at(t)) for d in result.decisions]
        status = render_status(spec, result, prior_status=status, action_records=records)
    assert [(a["name"], a["at"]) for a in status["actions"]] == [  # type: ignore[index]
        ("rollback", "2026-11-24T10:00:00Z"),
        ("page", "2026-11-24T10:00:00Z"),
    ]


def scale_record(key: str, result: ActionResult = ActionResult.SUCCEEDED, seconds: int = 0) -> ActionRecord:
    return ActionRecord("scaleUp", "scale", "latency", at(seconds), result, "scaled", key)


def test_history_is_bounded_newest_last() -> None:
    records = [scale_record(f"k{i}", seconds=i) for i in range(30)]
    merged = merge_actions(records[:15], records[15:])
    assert len(merged) == MAX_ACTION_HISTORY
    assert [r.key for r in merged] == [f"k{i}" for i in range(10, 30)]


def test_a_finished_action_replaces_its_pending_record_and_repeats_are_dropped() -> None:
    pending = scale_record("k1", ActionResult.PENDING)
    other = scale_record("k2")
    done = scale_record("k1", ActionResult.SUCCEEDED, seconds=30)
    merged = merge_actions([pending, other], [done, done, scale_record("k2", seconds=60)])
    assert [(r.key, r.result) for r in merged] == [("k2", ActionResult.SUCCEEDED), ("k1", ActionResult.SUCCEEDED)]
    assert merged[0].at == at(0), "a repeat of a kept key and result does not replace it"


def test_action_record_rejects_unknown_results() -> None:
    spec = monitor(accuracy_rule())
    decision = evaluate(spec, None, {"accuracy-drop": bad()}, at(0)).decisions[0]
    with pytest.raises(ValueError, match="action result must be one of"):
        ActionRecord.for_decision(decision, result="Done", at=at(0))  # type: ignore[arg-type]


def test_a_record_round_trips_through_the_status_json_with_the_keys_it_always_had() -> None:
    record = scale_record("ml/fraud/latency/2026-11-24T10:00:00Z/scaleUp#2", ActionResult.SKIPPED, seconds=90)
    entry = record.to_status()
    assert entry == {
        "name": "scaleUp",
        "type": "scale",
        "policy": "latency",
        "at": "2026-11-24T10:01:30Z",
        "result": "Skipped",
        "reason": "scaled",
        "key": "ml/fraud/latency/2026-11-24T10:00:00Z/scaleUp#2",
    }
    assert ActionRecord.from_status(entry) == record


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"result": "Done"}, "result"),
        ({"type": "resize"}, "type"),
        ({"key": None}, "key"),
        ({"at": "yesterday"}, "at"),
        ({"reason": 3}, "reason"),
    ],
)
def test_an_unreadable_history_entry_names_its_field(change: dict[str, object], field: str) -> None:
    entry = {**scale_record("k").to_status(), **change}
    with pytest.raises(ValueError, match=rf"status\.actions\[0\]\.{field}"):
        render_status(
            monitor(accuracy_rule()),
            evaluate(monitor(accuracy_rule()), None, {"accuracy-drop": ok()}, at(0)),
            prior_status={"actions": [entry]},
        )


def test_a_long_reason_is_cut_to_what_the_status_schema_accepts() -> None:
    record = ActionRecord("scaleUp", "scale", "latency", at(0), ActionResult.FAILED, "x" * 5000, "k")
    assert len(record.reason) == 4096


def test_last_known_good_is_kept_or_replaced() -> None:
    spec = monitor(accuracy_rule())
    lkg = {"revision": "7", "templateHash": "abc", "since": "2026-11-24T09:00:00Z"}
    first = render_status(spec, evaluate(spec, None, {"accuracy-drop": ok()}, at(0)), last_known_good=lkg)
    second = render_status(spec, evaluate(spec, first, {"accuracy-drop": ok()}, at(30)), prior_status=first)
    assert second["lastKnownGood"] == lkg


def test_invalid_spec_status_keeps_what_was_there() -> None:
    op = Operator(monitor(accuracy_rule()))
    op.cycle(0, bad())
    status = render_invalid_status(
        "spec.policies[0].condition.op: must be one of '<', '<=', '>', '>=', got '=<'",
        now=at(30),
        prior_status=op.status,
        observed_generation=2,
    )
    assert status["phase"] == "Invalid"
    assert "spec.policies[0].condition.op" in status["message"]
    assert status["policies"] == op.status["policies"]
    assert status["firingPolicies"] == "accuracy-drop"
    assert conditions(status)["Ready"]["reason"] == "Invalid"
    assert status["observedGeneration"] == 2


def test_status_timestamps_are_whole_seconds() -> None:
    spec = monitor(accuracy_rule())
    result = evaluate(spec, None, {"accuracy-drop": bad()}, at(0.75))
    status = render_status(spec, result)
    assert status["lastEvaluationTime"] == "2026-11-24T10:00:00Z"
    assert status["policies"][0]["activeSince"] == "2026-11-24T10:00:00Z"


def test_naive_now_is_refused() -> None:
    from datetime import datetime

    with pytest.raises(ValueError, match="no timezone"):
        evaluate(monitor(accuracy_rule()), None, {}, datetime(2026, 11, 24, 10, 0))


def test_a_pending_record_is_settled_even_when_its_key_had_that_result_before() -> None:
    # A step skipped by its cooldown, then recorded Pending, then interrupted and skipped for good.
    history = [scale_record("k", ActionResult.SKIPPED), scale_record("k", ActionResult.PENDING, seconds=30)]
    merged = merge_actions(history, [scale_record("k", ActionResult.SKIPPED, seconds=60)])
    assert [(r.result, r.at) for r in merged] == [(ActionResult.SKIPPED, at(60))]
