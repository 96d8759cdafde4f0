"""The model registry side of promotion and rollback (spec.registry): the version a retraining Job registered is
pinned by its source URI and made champion once its revision became last-known-good; a rollback moves the alias
back; a registry that is down delays only the alias move, which is retried, said once, and done once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from fakes import FakeCluster, Scenario, deployment, finish_job, monitor_spec, roll_out

from modelmonitor.actions.registry import pinned_values, served_version
from modelmonitor.adapters.kubernetes import DEPLOYMENT, JOB
from modelmonitor.adapters.registry import ModelVersion, RegistryConnections, RegistryError, RegistrySettings
from modelmonitor.api import SpecError, parse_spec

BAD, GOOD = 0.5, 0.95
MODEL = "fraud-model"


def uri(n: int) -> str:
    return f"s3://models/fraud/{n}"


@dataclass
class FakeRegistry:
    """An in-memory registry: versions, aliases and tags as a registry stores them; ``down`` refuses every call."""

    versions_: list[ModelVersion] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    down: bool = False
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, source: str, tags: Mapping[str, str] | None = None) -> str:
        version = str(len(self.versions_) + 1)
        self.versions_.append(ModelVersion(MODEL, version, source, tags=dict(tags or {})))
        return version

    def tags(self, version: str) -> Mapping[str, str]:
        return next(v.tags for v in self.versions_ if v.version == version)

    def _up(self, *call: str) -> None:
        if self.down:
            raise RegistryError("cannot reach http://mlflow:5000: ConnectionError", unreachable=True)
        self.calls.append(call)

    def versions(self, model: str, tags: Mapping[str, str] | None = None) -> list[ModelVersion]:
        self._up("versions", model)
        return [v for v in self.versions_ if all(v.tags.get(k) == t for k, t in (tags or {}).items())]

    def version(self, model: str, version: str) -> ModelVersion:
        self._up("version", model, version)
        return next(v for v in self.versions_ if v.version == version)

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        self._up("alias", model, alias)
        wanted = self.aliases.get(alias)
        return next((v for v in self.versions_ if v.version == wanted), None)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self._up("set_alias", model, alias, version)
        self.aliases[alias] = version

    def set_tag(self, model: str, version: str, key: str, value: str) -> None:
        self._up("set_tag", model, version, key)
        self.versions_ = [
            ModelVersion(v.model, v.version, v.source, tags={**v.tags, key: value}) if v.version == version else v
            for v in self.versions_
        ]


class NoSecrets:
    def read_secret(self, namespace: str, name: str) -> Mapping[str, bytes]:
        return {"token": b"s3cret\n"}


def registry_spec() -> dict[str, Any]:
    return {"mlflow": {"trackingUri": "http://mlflow:5000"}, "model": MODEL}


def scenario(actions: dict[str, Any], policy_actions: list[str]) -> tuple[Scenario, FakeRegistry]:
    registry = FakeRegistry()
    v1 = registry.add(uri(1))
    registry.aliases["champion"] = v1
    cluster = FakeCluster()
    cluster.put(DEPLOYMENT, deployment(env={"MODEL_URI": uri(1)}))
    roll_out(cluster)
    connections = RegistryConnections(NoSecrets(), factory=lambda settings: registry)
    spec = monitor_spec(actions, policy_actions=policy_actions, registry=registry_spec())
    return Scenario(spec, cluster, registries=connections), registry


ROLLBACK = {"type": "rollback", "settlePeriod": "60s", "cooldown": "0s"}
RETRAIN = {
    "type": "retrain",
    "serviceAccountName": "trainer",
    "cooldown": "0s",
    "jobTemplate": {
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "t:1"}]}}}
    },
    "promote": {"from": "registry", "to": {"env": {"container": "model", "name": "MODEL_URI"}}},
}


def settle(s: Scenario, seconds: float = 80) -> None:
    for _ in range(int(seconds // 10)):
        s.cycle(GOOD)


def served(s: Scenario) -> str:
    env = s.cluster.obj(DEPLOYMENT, "fraud")["spec"]["template"]["spec"]["containers"][0]["env"]
    return str(next(e["value"] for e in env if e["name"] == "MODEL_URI"))


def events(s: Scenario, reason: str) -> list[str]:
    return [e.message for o in s.outcomes for e in o.events if e.reason == reason]


def condition(s: Scenario, kind: str) -> dict[str, Any]:
    return next(c for c in s.status["conditions"] if c["type"] == kind)


def test_the_served_version_is_found_from_the_uri_the_template_pins() -> None:
    versions = [ModelVersion(MODEL, "1", uri(1)), ModelVersion(MODEL, "2", uri(2))]
    template = deployment(env={"MODEL_URI": uri(2), "OTHER": "x"})["spec"]["template"]
    assert uri(2) in pinned_values(template)
    assert served_version(template, versions) == versions[1]
    annotated = {"metadata": {"annotations": {"model": uri(1)}}, "spec": {"containers": [{"name": "m"}]}}
    assert served_version(annotated, versions) == versions[0]
    assert served_version({"spec": {"containers": [{"args": ["--model", uri(3)]}]}}, versions) is None


def test_a_retrained_version_is_pinned_by_its_source_then_made_champion_once_it_proved_itself() -> None:
    s, registry = scenario({"retrain": RETRAIN, "rollback": ROLLBACK}, ["retrain"])
    settle(s)
    assert s.status["registry"]["servedVersion"] == "1" and s.status["registry"]["aliasVersion"] == "1"
    s.cycle(BAD)
    [job] = [o for (k, _ns, _n), o in s.cluster.objects.items() if k == JOB]
    name = job["metadata"]["name"]
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELMONITOR_JOB"] == name
    v2 = registry.add(uri(2), {"modelmonitor.dev/job": name})
    registry.add(uri(3), {"modelmonitor.dev/job": "another-job"})
    finish_job(s.cluster, name)
    s.cycle(BAD)
    assert served(s) == uri(2), "the immutable source, not the alias"
    assert s.results("retrain") == [("retrain", "Succeeded")]
    assert f"registered version {v2} of {MODEL}" in s.records("retrain")[0]["reason"]
    roll_out(s.cluster)
    s.cycle(GOOD, after=40)  # the registry is read again (every 30 s) and sees version 2 served
    assert s.status["registry"]["servedVersion"] == v2 and registry.aliases["champion"] == "1"
    assert s.status["registry"]["history"][-1]["why"] == f"pinned by retraining Job {name}"
    settle(s)
    assert registry.aliases["champion"] == v2
    assert "previous-champion" in registry.tags("1") and "previous-champion" not in registry.tags(v2)
    promoted = [e for e in s.status["registry"]["history"] if e["event"] == "Promoted"]
    assert [(e["version"], e["source"]) for e in promoted] == [(v2, uri(2))]
    assert events(s, "RegistryAliasMoved")
    moves = [c for c in registry.calls if c[0] == "set_alias"]
    settle(s, 200)
    assert [c for c in registry.calls if c[0] == "set_alias"] == moves, "moved once"


def test_a_missing_version_fails_the_promotion_after_the_grace_period_and_pins_nothing() -> None:
    s, _registry = scenario({"retrain": RETRAIN}, ["retrain"])
    s.cycle(BAD)
    [job] = [o for (k, _ns, _n), o in s.cluster.objects.items() if k == JOB]
    finish_job(s.cluster, job["metadata"]["name"])
    s.cycle(BAD)
    assert s.results("retrain") == [("retrain", "Pending")]
    s.cycle(BAD, after=70)
    assert s.results("retrain") == [("retrain", "Failed")]
    reason = s.records("retrain")[0]["reason"]
    assert f"registered model {MODEL} has no version tagged modelmonitor.dev/job={job['metadata']['name']}" in reason
    assert served(s) == uri(1)


def hand_release(s: Scenario, registry: FakeRegistry) -> str:
    """Version 2 pinned and made champion by hand, then rolled out."""
    v2 = registry.add(uri(2))
    d = s.cluster.obj(DEPLOYMENT, "fraud")
    d["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "MODEL_URI", "value": uri(2)}]
    d["metadata"]["generation"] = d["metadata"].get("generation", 1) + 1
    roll_out(s.cluster)
    registry.aliases["champion"] = v2
    return v2


def test_a_rollback_moves_the_alias_back_and_tags_the_version_left() -> None:
    s, registry = scenario({"rollback": ROLLBACK}, ["rollback"])
    settle(s)
    v2 = hand_release(s, registry)
    s.cycle(BAD)
    assert served(s) == uri(1)
    assert registry.aliases["champion"] == "1"
    assert "rolled-back" in registry.tags(v2)
    [rolled] = [e for e in s.status["registry"]["history"] if e["event"] == "RolledBack"]
    assert rolled["version"] == "1" and f"rolled back from version {v2}" in rolled["why"]


def test_the_registry_down_delays_only_the_alias_which_is_retried_said_once_and_moved_once() -> None:
    s, registry = scenario({"rollback": ROLLBACK}, ["rollback"])
    settle(s)
    v2 = hand_release(s, registry)
    registry.down = True
    s.cycle(BAD)
    assert served(s) == uri(1), "serving never waits for the registry"
    for _ in range(3):
        s.cycle(BAD)
    pending = s.status["registry"]["pending"]
    assert pending["kind"] == "Rollback" and pending["attempts"] == 4 and "ConnectionError" in pending["lastError"]
    synced = condition(s, "RegistrySynced")
    assert (synced["status"], synced["reason"]) == ("False", "AliasMovePending")
    assert len(events(s, "RegistryUpdatePending")) == 1
    assert registry.aliases["champion"] == v2

    registry.down = False
    s.cycle(GOOD)
    assert registry.aliases["champion"] == "1" and "rolled-back" in registry.tags(v2)
    assert s.status["registry"]["pending"] is None
    assert condition(s, "RegistrySynced")["status"] == "True"
    settle(s, 100)
    assert [e["event"] for e in s.status["registry"]["history"]].count("RolledBack") == 1
    assert len([c for c in registry.calls if c[0] == "set_alias"]) == 1, "moved once"


def test_credentials_for_the_registry_come_from_secrets_as_for_prometheus() -> None:
    seen: list[RegistrySettings] = []

    def factory(settings: RegistrySettings) -> FakeRegistry:
        seen.append(settings)
        return FakeRegistry()

    connections = RegistryConnections(NoSecrets(), factory=factory)
    spec = parse_spec(
        monitor_spec(
            {},
            policy_actions=[],
            registry={
                **registry_spec(),
                "mlflow": {
                    "trackingUri": "https://mlflow:5000",
                    "auth": {"bearerTokenSecretRef": {"name": "mlflow-token"}},
                },
            },
        )
    )
    assert spec.registry is not None
    first = connections.client("ml", "fraud", spec.registry.mlflow)
    assert connections.client("ml", "fraud", spec.registry.mlflow) is first, "one client per settings"
    assert seen[0].bearer_token == "s3cret" and seen[0].url == "https://mlflow:5000"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"promote": {"from": "registry", "to": {"image": {"container": "model"}}}}, "promote.to"),
        ({"promote": {"from": "registry", "key": "x", "to": {"env": {"container": "m", "name": "U"}}}}, "promote.from"),
    ],
)
def test_a_registry_promotion_writes_a_uri_not_an_image_tag(change: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec(monitor_spec({"retrain": {**RETRAIN, **change}}, registry=registry_spec()))


def test_a_registry_promotion_needs_spec_registry_and_aliases_mlflow_accepts() -> None:
    with pytest.raises(SpecError, match=r"spec\.registry"):
        parse_spec(monitor_spec({"retrain": RETRAIN}))
    with pytest.raises(SpecError, match="alias"):
        parse_spec(monitor_spec({}, policy_actions=[], registry={**registry_spec(), "alias": "v3"}))


def test_a_registry_that_cannot_be_read_at_rest_is_said_once_and_changes_nothing() -> None:
    s, registry = scenario({"rollback": ROLLBACK}, ["rollback"])
    settle(s)
    before = dict(s.status["registry"])
    registry.down = True
    settle(s, 200)  # several reads, every 30 s
    assert len(events(s, "RegistryReadFailed")) == 1
    assert s.status["registry"] == before, "what was known is kept, not blanked"
    registry.down = False
    settle(s, 40)
    assert s.status["registry"]["servedVersion"] == "1"
