"""The rendered status fits the API's status model (the shape the CRD stores) and survives its round trip."""

from __future__ import annotations

import pytest
from policy_support import EMPTY, ERR, Operator, accuracy_rule, at, bad, monitor, ok

from modelmonitor.policy import ActionRecord, ActionResult, PolicyState, evaluate, render_status

api_status = pytest.importorskip("modelmonitor.api.status")


def _through_api(status: dict[str, object]) -> dict[str, object]:
    model = api_status.status_from_dict(status)
    return api_status.status_to_dict(model)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "script",
    [[ok()], [bad()], [EMPTY], [ERR, ERR, ERR], [bad(), ok()]],
    ids=["healthy", "firing", "nodata", "degraded", "resolved"],
)
def test_rendered_status_is_valid_for_the_api_model(script: list[object]) -> None:
    op = Operator(monitor(accuracy_rule(for_seconds=60)))
    for i, m in enumerate(script):
        op.cycle(30 * i, m)  # type: ignore[arg-type]
    stored = _through_api(op.status)
    for key in ("phase", "message", "firingPolicies", "lastAction", "conditions", "actions", "observedGeneration"):
        assert stored[key] == op.status[key]
    for ours, theirs in zip(op.status["policies"], stored["policies"], strict=True):  # type: ignore[call-overload]
        assert PolicyState.from_status(theirs).active_since == PolicyState.from_status(ours).active_since


def test_action_records_are_valid_for_the_api_model() -> None:
    spec = monitor(accuracy_rule())
    result = evaluate(spec, None, {"accuracy-drop": bad()}, at(0))
    records = [ActionRecord.for_decision(d, result=ActionResult.DRY_RUN, at=result.now) for d in result.decisions]
    status = render_status(spec, result, action_records=records)
    assert _through_api(status)["actions"] == status["actions"]


@pytest.mark.xfail(
    not hasattr(api_status.PolicyStatus, "model_fields") or "held_state" not in api_status.PolicyStatus.model_fields,
    reason="the API's PolicyStatus does not carry heldState/heldSince yet, so the status store drops them",
    strict=True,
)
def test_held_state_survives_the_api_model() -> None:
    """A NoData/Error entry needs heldState/heldSince to resume exactly; this fails while the API's policy
    status model drops them."""
    op = Operator(monitor(accuracy_rule(for_seconds=300)))
    op.cycle(0, bad())
    op.cycle(30, ERR)
    stored = _through_api(op.status)
    entry = stored["policies"][0]  # type: ignore[index]
    assert entry.get("heldState") == "Pending"
    assert entry.get("heldSince") == op.status["policies"][0]["heldSince"]
