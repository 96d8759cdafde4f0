"""The generated CRD on the real API server: accepted, serving the examples, refusing bad specs with messages that
name the field, explained by `kubectl explain`, and storing the status the operator writes without loss."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelmonitor.api import ModelMonitorStatus, PolicyStatus, status_to_dict
from modelmonitor.api.crd import CRD_NAME, CRD_PATH, render_crd_yaml
from support import Cluster, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples" / "monitors").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> str:
    """The CRD as committed, applied and Established."""
    committed = (ROOT / CRD_PATH).read_text(encoding="utf-8")
    assert committed == render_crd_yaml(), f"{CRD_PATH} is stale"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / CRD_PATH))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    return CRD_NAME


def monitor(name: str) -> dict[str, Any]:
    """A small valid ModelMonitor; each bad case breaks one thing in it."""
    return {
        "apiVersion": "modelmonitor.dev/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": name},
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


def test_crd_is_established_with_names_and_columns(cluster: Cluster, crd: str) -> None:
    stored = cluster.kubectl_json("get", "crd", crd)
    conditions = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NonStructuralSchema") is None  # a structural schema raises no such condition
    assert stored["status"]["acceptedNames"]["shortNames"] == ["mm"]
    assert stored["status"]["acceptedNames"]["categories"] == ["mlops"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted_and_defaulted(cluster: Cluster, crd: str, namespace: str, path: Path) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(path))
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    stored = cluster.kubectl_json("get", "modelmonitor", name, "-n", namespace)
    spec = stored["spec"]
    # Defaults are filled in by the API server, so `kubectl get -o yaml` shows what is in force.
    assert spec["degradedAfterErrors"] == 3
    assert spec["target"]["kind"] in ("Deployment", "StatefulSet")
    written = {p["name"]: p for p in yaml.safe_load(path.read_text())["spec"]["policies"]}
    for policy in spec["policies"]:
        assert policy["noData"] in ("hold", "ok", "breach")
        assert "for" in policy
        # No default for reduce: left out, the worst series decides in the direction of the comparison.
        assert policy.get("reduce") == written[policy["name"]].get("reduce")
    for action in spec.get("actions", {}).values():
        # A default of one action type is never written into another type's action.
        if action["type"] != "scale":
            assert "minReplicas" not in action and "stabilizationWindow" not in action


def test_short_name_and_category_list_monitors(cluster: Cluster, crd: str, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(monitor("listed")))
    for resource in ("mm", "mlops"):
        out = cluster.kubectl("get", resource, "-n", namespace).stdout
        header = out.splitlines()[0].split()
        assert header[:6] == ["NAME", "TARGET", "PHASE", "FIRING", "LAST", "ACTION"], out
        assert "listed" in out and "fraud-model" in out


Mutation = Callable[[dict[str, Any]], object]
_REGISTRY = {"mlflow": {"trackingUri": "http://mlflow:5000"}, "model": "fraud"}
_REGISTRY_RETRAIN = {
    "type": "retrain",
    "serviceAccountName": "trainer",
    "jobTemplate": {
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "t"}]}}}
    },
    "promote": {"from": "registry", "to": {"env": {"container": "model", "name": "MODEL_URI"}}},
}


def _policy(spec: dict[str, Any]) -> dict[str, Any]:
    policy: dict[str, Any] = spec["policies"][0]
    return policy


# (case, mutation of the spec, the field the server must name, words of its message)
BAD_SPECS: list[tuple[str, Mutation, str, str]] = [
    (
        "wrong op",
        lambda s: _policy(s)["condition"].update(op="=<"),
        "spec.policies[0].condition.op",
        "Unsupported value",
    ),
    (
        "clearThreshold on the wrong side",
        lambda s: _policy(s)["condition"].update(clearThreshold=0.80),
        "spec.policies[0].condition.clearThreshold",
        "safe side of threshold",
    ),
    (
        "clearThreshold on the wrong side (op >)",
        lambda s: _policy(s)["condition"].update(op=">", threshold=0.2, clearThreshold=0.25),
        "spec.policies[0].condition.clearThreshold",
        "safe side of threshold",
    ),
    (
        "an action name that does not exist",
        lambda s: _policy(s).update(actions=["page", "rollback"]),
        "spec.policies",
        "must be defined in spec.actions",
    ),
    (
        "both signal and query",
        lambda s: _policy(s).update(query="up"),
        "spec.policies[0]",
        "exactly one of signal or query",
    ),
    ("negative duration", lambda s: _policy(s).update(window="-5m"), "spec.policies[0].window", '"-5m"'),
    ("zero window", lambda s: _policy(s).update(window="0s"), "spec.policies[0].window", '"0s"'),
    (
        "auto threshold on accuracy",
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
        "drift method on accuracy",
        lambda s: _policy(s).update(method="hellinger"),
        "spec.policies[0].method",
        "dataDrift and predictionDrift",
    ),
    (
        "a drift method the fleet counts cannot compute",
        lambda s: _policy(s).update(signal="dataDrift", method="ks"),
        "spec.policies[0].method",
        "Unsupported value",
    ),
    (
        "sequential detection of accuracy without a reference level",
        lambda s: _policy(s).update(detection={"sequential": {"falseAlarmEvery": "30d"}}),
        "spec.policies[0].detection.sequential.referenceLevel",
        "required for signals other than dataDrift",
    ),
    (
        "a reference level without its standard deviation",
        lambda s: _policy(s).update(detection={"sequential": {"falseAlarmEvery": "30d", "referenceLevel": 0.9}}),
        "spec.policies[0].detection.sequential.standardDeviation",
        "both referenceLevel and standardDeviation",
    ),
    (
        "a false-alarm rate above 0.2",
        lambda s: _policy(s).update(
            signal="dataDrift", condition={"op": ">", "autoThreshold": True, "falseAlarmRate": 0.5}
        ),
        "spec.policies[0].condition.falseAlarmRate",
        "less than or equal to 0.2",
    ),
    (
        "a model label the signals group by",
        lambda s: s["model"].update(labels={"feature": "age"}),
        "spec.model.labels",
        "not be one of namespace, model, version",
    ),
    (
        "duplicate policy names",
        lambda s: s["policies"].append(copy.deepcopy(s["policies"][0])),
        "spec.policies[1]",
        "Duplicate value",
    ),
    (
        "minReplicas above maxReplicas",
        lambda s: s["actions"].update(up={"type": "scale", "step": 1, "minReplicas": 5, "maxReplicas": 2}),
        "spec.actions[up].minReplicas",
        "must not be greater than maxReplicas",
    ),
    (
        "step and percent",
        lambda s: s["actions"].update(up={"type": "scale", "step": 1, "percent": 10, "maxReplicas": 4}),
        "spec.actions[up].step",
        "exactly one of step or percent",
    ),
    (
        "a scale field on an alert",
        lambda s: s["actions"].update(page={"type": "alert", "maxReplicas": 3}),
        "spec.actions[page].maxReplicas",
        "applies only to actions of type scale",
    ),
    (
        "retrain without a service account",
        lambda s: s["actions"].update(train={"type": "retrain", "jobTemplate": {"spec": {}}}),
        "spec.actions[train].serviceAccountName",
        "required when type is retrain",
    ),
    (
        "credentials in a header",
        lambda s: s.update(prometheus={"headers": {"Authorization": "Bearer x"}}),
        "spec.prometheus.headers",
        "Authorization header",
    ),
    (
        "custom kind without apiVersion",
        lambda s: s["target"].update(kind="Rollout"),
        "spec.target.apiVersion",
        "apiVersion is required",
    ),
    (
        "registry promotion without spec.registry",
        lambda s: s["actions"].update(retrain=_REGISTRY_RETRAIN),
        "spec.registry",
        "promote.from: registry needs spec.registry",
    ),
    (
        "registry promotion into an image tag",
        lambda s: (
            s.update(registry=_REGISTRY)
            or s["actions"].update(
                retrain={**_REGISTRY_RETRAIN, "promote": {"from": "registry", "to": {"image": {"container": "model"}}}}
            )
        ),
        "spec.actions[retrain].promote.to",
        "no image tag",
    ),
    (
        "an alias MLflow refuses",
        lambda s: s.update(registry={**_REGISTRY, "alias": "v3"}),
        "spec.registry.alias",
        "MLflow refuses such aliases",
    ),
]


@pytest.mark.parametrize(("mutate", "field", "words"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_is_refused_naming_the_field(
    cluster: Cluster, crd: str, namespace: str, mutate: Mutation, field: str, words: str
) -> None:
    body = monitor("bad")
    mutate(body["spec"])
    result = cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0, f"the API server accepted a bad spec: {result.stdout}"
    assert f"{field}:" in result.stderr, result.stderr
    assert words in result.stderr, result.stderr
    # Nothing was stored.
    assert cluster.kubectl("get", "mm", "bad", "-n", namespace, check=False).returncode != 0


def test_kubectl_explain_reads_the_descriptions(cluster: Cluster, crd: str) -> None:
    # The API server publishes a new CRD's OpenAPI a moment after it is Established.
    out = wait_for(
        "kubectl explain to know ModelMonitor",
        lambda: (
            (r := cluster.kubectl("explain", "modelmonitor.spec.policies", check=False)).returncode == 0 and r.stdout
        ),
        timeout=60,
    )
    assert "The policies guarding the model" in out
    assert "clearThreshold" not in out  # explain shows one level: the condition is its own page
    for field in ("signal", "query", "window", "condition", "for", "keepFiringFor", "minSamples", "noData"):
        assert f"  {field}\t" in out, field
    assert "hold (keep the current state" in out
    condition = cluster.kubectl("explain", "modelmonitor.spec.policies.condition").stdout
    assert "safe side" in condition or "clears only" in condition


def test_status_written_by_the_operator_is_stored_without_loss(cluster: Cluster, crd: str, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(monitor("with-status")))
    status = ModelMonitorStatus(
        phase="Firing",
        observed_generation=1,
        last_evaluation_time="2026-11-24T10:05:00Z",
        firing_policies="accuracy-drop",
        last_action="page Succeeded 2026-11-24T10:05:00Z",
        policies=[
            PolicyStatus(
                name="accuracy-drop",
                state="Error",
                value=0.81,
                threshold=0.85,
                samples=640,
                since="2026-11-24T10:06:00Z",
                last_transition_time="2026-11-24T10:06:00Z",
                active_since="2026-11-24T10:00:00Z",
                held_state="Firing",
                held_since="2026-11-24T10:05:00Z",
                error_streak=2,
                last_outcome="Error",
                message="query failed: timeout",
            )
        ],
    )
    body = {"status": status_to_dict(status)}
    cluster.kubectl(
        "patch", "mm", "with-status", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(body)
    )
    stored = cluster.kubectl_json("get", "mm", "with-status", "-n", namespace)["status"]
    # Every field the model writes is in the schema: nothing was pruned.
    assert stored == body["status"]
    row = cluster.kubectl("get", "mm", "with-status", "-n", namespace, "--no-headers").stdout.split()
    assert row[:4] == ["with-status", "fraud-model", "Firing", "accuracy-drop"]
