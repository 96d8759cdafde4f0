"""The API models as the operator uses them: reading specs (good and bad) and writing status."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelmonitor.api import (
    ModelMonitorStatus,
    PolicyStatus,
    RetrainAction,
    ScaleAction,
    SpecError,
    parse_monitor,
    parse_spec,
    status_from_dict,
    status_to_dict,
)

EXAMPLES = sorted((Path(__file__).parents[3] / "examples" / "monitors").glob("*.yaml"))


def minimal() -> dict[str, Any]:
    """A small valid ModelMonitor object; each bad case below breaks one thing in it."""
    return {
        "apiVersion": "modelmonitor.dev/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {
            "target": {"name": "fraud-model"},
            "model": {"name": "fraud"},
            "policies": [
                {
                    "name": "accuracy-drop",
                    "signal": "accuracy",
                    "window": "10m",
                    "condition": {"op": "<", "threshold": 0.85, "clearThreshold": 0.88},
                    "actions": ["page"],
                }
            ],
            "actions": {"page": {"type": "alert"}},
        },
    }


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_a_valid_monitor(path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    assert body["apiVersion"] == "modelmonitor.dev/v1alpha1"
    assert body["kind"] == "ModelMonitor"
    spec = parse_monitor(body)
    assert spec.policies
    # A policy only names actions that exist (the example would be refused by the API server otherwise).
    for policy in spec.policies:
        assert set(policy.actions) <= set(spec.actions)


def test_defaults_are_filled_in_as_documented() -> None:
    spec = parse_monitor(minimal())
    assert spec.target.kind == "Deployment"
    assert spec.target.resolved_api_version == "apps/v1"
    assert spec.interval == "30s"
    assert spec.degraded_after_errors == 3
    assert spec.combine.mode == "anyOf"
    assert spec.prometheus.url is None  # the operator's setting applies
    assert spec.prometheus.timeout == "10s"
    policy = spec.policies[0]
    assert (policy.for_, policy.keep_firing_for, policy.min_samples) == ("0s", "0s", 0)
    assert (policy.no_data, policy.reduce, policy.severity, policy.dry_run) == ("hold", None, "warning", False)
    assert policy.condition.threshold_setting == 0.85


def test_each_action_type_gets_its_own_cooldown_default() -> None:
    body = minimal()
    body["spec"]["actions"] = {
        "up": {"type": "scale", "step": 1, "maxReplicas": 5},
        "back": {"type": "rollback"},
        "page": {"type": "alert"},
        "train": {
            "type": "retrain",
            "serviceAccountName": "trainer",
            "jobTemplate": {
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "i"}]}}}
            },
        },
    }
    actions = parse_monitor(body).actions
    assert {name: a.cooldown for name, a in actions.items()} == {
        "up": "5m",
        "back": "30m",
        "page": "0s",
        "train": "6h",
    }
    assert isinstance(actions["up"], ScaleAction) and actions["up"].min_replicas == 1
    assert isinstance(actions["train"], RetrainAction) and actions["train"].concurrency == 1


def test_auto_threshold_reaches_the_engine_as_auto() -> None:
    body = minimal()
    body["spec"]["policies"][0] |= {"signal": "dataDrift", "condition": {"op": ">", "autoThreshold": True}}
    assert parse_monitor(body).policies[0].condition.threshold_setting == "auto"


@pytest.mark.parametrize("signal", ["labelCoverage", "accuracy", "f1", "macroF1", "rmse"])
def test_label_delay_reaches_the_signal_request(signal: str) -> None:
    from modelmonitor.reconcile import monitor_from_body

    body = minimal()
    body["metadata"].setdefault("namespace", "ml")
    body["spec"]["policies"][0] |= {"signal": signal, "labelDelay": "2h"}
    assert parse_monitor(body).policies[0].label_delay == "2h"
    assert monitor_from_body(body).requests[0].label_delay == "2h"


def test_snake_case_names_are_not_accepted_from_users() -> None:
    body = minimal()
    body["spec"]["dry_run"] = True
    with pytest.raises(SpecError) as err:
        parse_monitor(body)
    assert err.value.path == "spec.dry_run"
    assert "not a field" in err.value.reason


Mutation = Callable[[dict[str, Any]], object]
_JOB = {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "train", "image": "t:1"}]}}}}


def _policy(spec: dict[str, Any]) -> dict[str, Any]:
    policy: dict[str, Any] = spec["policies"][0]
    return policy


# (case, mutation of the spec, expected path, words the reason must contain)
BAD_SPECS: list[tuple[str, Mutation, str, str]] = [
    ("missing target", lambda s: s.pop("target"), "spec.target", "required"),
    (
        "wrong op",
        lambda s: _policy(s)["condition"].update(op="=<"),
        "spec.policies[0].condition.op",
        "must be '<', '<=', '>' or '>='",
    ),
    (
        "clearThreshold on the breaching side (op <)",
        lambda s: _policy(s)["condition"].update(clearThreshold=0.80),
        "spec.policies[0].condition.clearThreshold",
        "must be >= threshold",
    ),
    (
        "clearThreshold on the breaching side (op >)",
        lambda s: _policy(s)["condition"].update(op=">", threshold=0.2, clearThreshold=0.3),
        "spec.policies[0].condition.clearThreshold",
        "must be <= threshold",
    ),
    (
        "no threshold at all",
        lambda s: _policy(s).update(condition={"op": "<"}),
        "spec.policies[0].condition.threshold",
        "exactly one of threshold",
    ),
    (
        "auto threshold on a non-drift signal",
        lambda s: _policy(s).update(condition={"op": "<", "autoThreshold": True}),
        "spec.policies[0].condition.autoThreshold",
        "dataDrift and predictionDrift",
    ),
    (
        "a label delay on a signal not judged on labels",
        lambda s: _policy(s).update(signal="errorRate", labelDelay="1h"),
        "spec.policies[0].labelDelay",
        "only available for the labelCoverage, accuracy, precision, recall, f1, multiclassAccuracy, macroF1, mae, "
        "rmse, equalOpportunityGap signals",
    ),
    (
        "a label delay that is not a duration",
        lambda s: _policy(s).update(signal="labelCoverage", labelDelay="soon"),
        "spec.policies[0].labelDelay",
        "duration",
    ),
    (
        "drift method on a non-drift signal",
        lambda s: _policy(s).update(method="hellinger"),
        "spec.policies[0].method",
        "dataDrift and predictionDrift",
    ),
    (
        "a drift method the fleet counts cannot compute",
        lambda s: _policy(s).update(signal="dataDrift", method="ks"),
        "spec.policies[0].method",
        "psi",
    ),
    (
        "a model label the signals group by",
        lambda s: s["model"].update(labels={"feature": "age"}),
        "spec.model.labels",
        "cannot narrow the built-in signals",
    ),
    (
        "undefined action",
        lambda s: _policy(s).update(actions=["page", "rollback"]),
        "spec.policies[0].actions",
        "not defined in spec.actions: rollback",
    ),
    (
        "signal and query",
        lambda s: _policy(s).update(query="up"),
        "spec.policies[0].signal",
        "exactly one of signal or query",
    ),
    (
        "neither signal nor query",
        lambda s: _policy(s).pop("signal"),
        "spec.policies[0].signal",
        "exactly one of signal or query",
    ),
    ("negative duration", lambda s: _policy(s).update(window="-5m"), "spec.policies[0].window", "not a duration"),
    ("zero window", lambda s: _policy(s).update(window="0s"), "spec.policies[0].window", "longer than zero"),
    ("unknown signal", lambda s: _policy(s).update(signal="vibes"), "spec.policies[0].signal", "accuracy"),
    (
        "duplicate policy names",
        lambda s: s["policies"].append(copy.deepcopy(s["policies"][0])),
        "spec.policies[1].name",
        "more than one policy",
    ),
    (
        "unknown query placeholder",
        lambda s: _policy(s).update(signal=None, query="up{job={{ job }}}"),
        "spec.policies[0].query",
        "unknown placeholder",
    ),
    (
        "minReplicas above maxReplicas",
        lambda s: s["actions"].update(up={"type": "scale", "step": 1, "minReplicas": 5, "maxReplicas": 2}),
        "spec.actions[up].minReplicas",
        "greater than maxReplicas",
    ),
    (
        "step and percent",
        lambda s: s["actions"].update(up={"type": "scale", "step": 1, "percent": 10, "maxReplicas": 2}),
        "spec.actions[up].step",
        "exactly one of step or percent",
    ),
    (
        "a scale field on an alert",
        lambda s: s["actions"].update(page={"type": "alert", "maxReplicas": 3}),
        "spec.actions[page].maxReplicas",
        "not a field of an action of type alert",
    ),
    (
        "unknown action type",
        lambda s: s["actions"].update(page={"type": "reboot"}),
        "spec.actions[page].type",
        "'reboot' is not one of 'scale', 'rollback', 'retrain', 'alert'",
    ),
    (
        "retrain without a service account",
        lambda s: s["actions"].update(t={"type": "retrain", "jobTemplate": _JOB}),
        "spec.actions[t].serviceAccountName",
        "required",
    ),
    (
        "retrain Job without containers",
        lambda s: s["actions"].update(
            t={"type": "retrain", "serviceAccountName": "sa", "jobTemplate": {"spec": {"template": {"spec": {}}}}}
        ),
        "spec.actions[t].jobTemplate.spec.template.spec.containers",
        "at least one container",
    ),
    (
        "retrain Job running as another account",
        lambda s: s["actions"].update(
            t={
                "type": "retrain",
                "serviceAccountName": "trainer",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "serviceAccountName": "modelmonitor-operator",
                                "containers": [{"name": "t", "image": "i"}],
                            }
                        }
                    }
                },
            }
        ),
        "spec.actions[t].jobTemplate.spec.template.spec.serviceAccountName",
        "differs from serviceAccountName",
    ),
    (
        "promotion from an annotation without its key",
        lambda s: s["actions"].update(
            t={
                "type": "retrain",
                "serviceAccountName": "sa",
                "jobTemplate": _JOB,
                "promote": {"from": "annotation", "to": {"image": {"container": "model"}}},
            }
        ),
        "spec.actions[t].promote.key",
        "required when from is annotation",
    ),
    (
        "promotion to two places",
        lambda s: s["actions"].update(
            t={
                "type": "retrain",
                "serviceAccountName": "sa",
                "jobTemplate": _JOB,
                "promote": {
                    "from": "terminationMessage",
                    "to": {"image": {"container": "m"}, "annotation": {"key": "v"}},
                },
            }
        ),
        "spec.actions[t].promote.to",
        "exactly one of env, image or annotation",
    ),
    (
        "credentials in a header",
        lambda s: s.update(prometheus={"headers": {"Authorization": "Bearer x"}}),
        "spec.prometheus.headers",
        "not in an Authorization header",
    ),
    (
        "bearer and basic auth",
        lambda s: s.update(
            prometheus={"auth": {"bearerTokenSecretRef": {"name": "a"}, "basicAuthSecretRef": {"name": "b"}}}
        ),
        "spec.prometheus.auth.basicAuthSecretRef",
        "at most one",
    ),
    (
        "custom kind without apiVersion",
        lambda s: s["target"].update(kind="Rollout"),
        "spec.target.apiVersion",
        "required when kind is Rollout",
    ),
    (
        "model label spelled as a matcher",
        lambda s: s["model"].update(labels={"model": "x"}),
        "spec.model.labels",
        "model.model",
    ),
    ("interval below a second", lambda s: s.update(interval="500ms"), "spec.interval", "minimum of 1s"),
]


@pytest.mark.parametrize(("mutate", "path", "words"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_a_bad_spec_is_refused_with_the_field_and_the_reason(mutate: Mutation, path: str, words: str) -> None:
    body = minimal()
    mutate(body["spec"])
    with pytest.raises(SpecError) as err:
        parse_monitor(body)
    paths = [p.path for p in err.value.problems]
    assert path in paths, f"expected a problem at {path}, got {err.value}"
    problem = err.value.problems[paths.index(path)]
    assert words in problem.reason, problem
    assert path in str(err.value)


def test_all_problems_are_reported_at_once() -> None:
    body = minimal()
    body["spec"]["interval"] = "soon"
    _policy(body["spec"])["condition"]["op"] = "=="
    with pytest.raises(SpecError) as err:
        parse_monitor(body)
    assert {p.path for p in err.value.problems} >= {"spec.interval", "spec.policies[0].condition.op"}
    assert err.value.path == "spec.interval"


def test_a_monitor_without_spec_is_refused() -> None:
    with pytest.raises(SpecError) as err:
        parse_monitor({"metadata": {"name": "m"}})
    assert (err.value.path, err.value.reason) == ("spec", "is required")


def test_parse_spec_takes_the_spec_alone() -> None:
    assert parse_spec(minimal()["spec"]).model.name == "fraud"


def test_status_dumps_camel_case_and_leaves_out_what_is_unknown() -> None:
    status = ModelMonitorStatus(
        phase="Pending",
        observed_generation=4,
        last_evaluation_time="2026-11-24T10:00:30Z",
        policies=[
            PolicyStatus(
                name="accuracy-drop",
                state="Pending",
                value=0.81,
                threshold=0.85,
                samples=420,
                since="2026-11-24T10:00:00Z",
                last_transition_time="2026-11-24T10:00:00Z",
                active_since="2026-11-24T10:00:00Z",
                last_outcome="Breach",
                message="accuracy 0.81 < 0.85 over 10m",
            ),
            PolicyStatus(
                name="error-rate",
                state="NoData",
                since="2026-11-24T09:00:00Z",
                last_transition_time="2026-11-24T09:00:00Z",
                last_outcome="NoData",
            ),
        ],
    )
    out = status_to_dict(status)
    assert out["phase"] == "Pending"
    assert out["observedGeneration"] == 4
    assert out["firingPolicies"] == ""  # `kubectl get mm` shows an empty column, not <none>
    first, second = out["policies"]
    assert first["activeSince"] == "2026-11-24T10:00:00Z"
    assert first["lastOutcome"] == "Breach"
    assert "value" not in second and "activeSince" not in second and "threshold" not in second
    assert "lastKnownGood" not in out
    # What the operator wrote, it reads back unchanged (timers survive a restart).
    assert status_from_dict(out) == status


def test_status_reading_tolerates_fields_a_newer_operator_wrote() -> None:
    status = status_from_dict({"phase": "Healthy", "someFutureField": 1})
    assert status.phase == "Healthy"
    assert status_from_dict(None) == ModelMonitorStatus()


def test_status_refuses_a_time_without_zone() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        status_from_dict({"lastEvaluationTime": "2026-11-24T10:00:00"})
