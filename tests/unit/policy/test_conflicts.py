"""Which monitor yields when two change the same workload: the older one acts, every later one yields to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelmonitor.api import parse_spec
from modelmonitor.policy.conflicts import WorkloadClaim, changing_actions, claim_of, workload_conflicts

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
DEPLOY = "apps/Deployment/fraud"


def claim(
    name: str,
    minutes: float | None = 0,
    *,
    workload: str = DEPLOY,
    changes: bool = True,
    namespace: str = "ml",
) -> WorkloadClaim:
    created = None if minutes is None else T0 + timedelta(minutes=minutes)
    return WorkloadClaim(namespace, name, created, workload, changes)


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        pytest.param([claim("a")], {}, id="alone"),
        pytest.param([claim("a", 0), claim("b", 5)], {"b": "a"}, id="the later one yields"),
        pytest.param([claim("b", 5), claim("a", 0)], {"b": "a"}, id="whatever the order of the registry"),
        pytest.param([claim("z", 0), claim("a", 5)], {"a": "z"}, id="age decides before the name"),
        pytest.param([claim("b", 0), claim("a", 0)], {"b": "a"}, id="same second: the name decides"),
        pytest.param(
            [claim("a", 0), claim("b", 5), claim("c", 9)], {"b": "a", "c": "a"}, id="three: both yield to the oldest"
        ),
        pytest.param([claim("a", None), claim("b", 5)], {"a": "b"}, id="unknown creation time counts as youngest"),
        pytest.param([claim("a", 0, changes=False), claim("b", 5)], {}, id="the older one only alerts"),
        pytest.param([claim("a", 0), claim("b", 5, changes=False)], {}, id="the later one only alerts"),
        pytest.param(
            [claim("a", 0, changes=False), claim("b", 5), claim("c", 9)],
            {"c": "b"},
            id="an alerting monitor does not take part",
        ),
        pytest.param([claim("a", 0), claim("b", 5, workload="apps/Deployment/other")], {}, id="different workloads"),
        pytest.param(
            [claim("a", 0), claim("b", 5, workload="apps/StatefulSet/fraud")], {}, id="same name, another kind"
        ),
        pytest.param([claim("a", 0), claim("b", 5, namespace="other")], {}, id="another namespace"),
    ],
)
def test_the_oldest_monitor_changing_a_workload_keeps_it(claims: list[WorkloadClaim], expected: dict[str, str]) -> None:
    found = workload_conflicts(claims)
    assert {name: other for (_ns, name), other in found.items()} == expected


def test_a_second_namespace_keeps_its_own_owner() -> None:
    found = workload_conflicts([claim("a", 9, namespace="x"), claim("b", 5, namespace="x"), claim("c", 0)])
    assert found == {("x", "a"): "b"}


def spec(actions: dict[str, Any], *, policy_actions: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "target": {"name": "fraud"},
        "model": {"name": "fraud"},
        "policies": [
            {
                "name": "accuracy-drop",
                "signal": "accuracy",
                "condition": {"op": "<", "threshold": 0.8},
                "actions": list(actions) if policy_actions is None else policy_actions,
            }
        ],
        "actions": actions,
        **extra,
    }


SCALE = {"type": "scale", "step": 1, "maxReplicas": 5}
ROLLBACK = {"type": "rollback"}
PAGE = {"type": "alert"}
JOB = {
    "serviceAccountName": "trainer",
    "jobTemplate": {
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "t"}]}}}
    },
}
PROMOTE = {
    "from": "annotation",
    "key": "modelmonitor.dev/version",
    "to": {"env": {"container": "model", "name": "MODEL_VERSION"}},
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(spec({"up": SCALE}), ["up"], id="scale"),
        pytest.param(spec({"back": ROLLBACK}), ["back"], id="rollback"),
        pytest.param(spec({"page": PAGE}), [], id="alert"),
        pytest.param(spec({"train": {"type": "retrain", **JOB}}), [], id="retrain without promote"),
        pytest.param(spec({"train": {"type": "retrain", **JOB, "promote": PROMOTE}}), ["train"], id="promote"),
        pytest.param(spec({"up": {**SCALE, "dryRun": True}}), [], id="a dry-run action"),
        pytest.param(spec({"up": SCALE}, dryRun=True), [], id="a dry-run monitor"),
        pytest.param(spec({"up": SCALE}, paused=True), [], id="a paused monitor"),
        pytest.param(spec({"up": SCALE, "page": PAGE}, policy_actions=["page"]), [], id="named by no policy"),
    ],
)
def test_which_actions_change_the_workload(raw: dict[str, Any], expected: list[str]) -> None:
    assert changing_actions(parse_spec(raw)) == expected


def test_only_dry_run_policies_name_it() -> None:
    raw = spec({"up": SCALE})
    raw["policies"][0]["dryRun"] = True
    assert changing_actions(parse_spec(raw)) == []


def test_a_claim_names_the_workload_by_group_kind_and_name() -> None:
    made = claim_of("ml", "fraud", T0, parse_spec(spec({"up": SCALE})))
    assert made == WorkloadClaim("ml", "fraud", T0, DEPLOY, True)
    custom = spec({"up": SCALE})
    custom["target"] = {"kind": "InferenceService", "apiVersion": "serving.kserve.io/v1beta1", "name": "fraud"}
    assert claim_of("ml", "fraud", T0, parse_spec(custom)).workload == "serving.kserve.io/InferenceService/fraud"
