"""The operator's RBAC: one definition, the generated deploy/rbac.yaml kept identical, and nothing it does not
need."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelmonitor.rbac import NAME, RULES, render, to_yaml

REPO = Path(__file__).resolve().parents[3]


def test_the_generated_file_is_up_to_date() -> None:
    committed = (REPO / "deploy" / "rbac.yaml").read_text()
    assert committed == to_yaml(render()), "regenerate: python -m modelmonitor.rbac > deploy/rbac.yaml"


def test_per_namespace_binding_grants_nothing_cluster_wide() -> None:
    objects = render(watch=["ml", "fraud", "ml"])
    kinds = [(o["kind"], o["metadata"].get("namespace")) for o in objects]
    assert ("ClusterRoleBinding", None) not in kinds
    assert [ns for kind, ns in kinds if kind == "RoleBinding"] == ["ml", "fraud"]
    assert all(o["roleRef"]["name"] == NAME for o in objects if "roleRef" in o)


def test_least_privilege() -> None:
    verbs = {(g, r): set(rule.verbs) for rule in RULES for g in rule.api_groups for r in rule.resources}
    assert verbs[("", "secrets")] == {"get"}, "no list or watch of Secrets"
    assert "create" not in verbs[("", "pods")], "pods only through Jobs"
    assert all("delete" not in v and "deletecollection" not in v and "*" not in v for v in verbs.values())
    assert not any(r in ("roles", "rolebindings", "clusterroles", "serviceaccounts") for _g, r in verbs)
    assert all(rule.why for rule in RULES)


def test_the_yaml_parses_as_kubernetes_objects() -> None:
    docs = [d for d in yaml.safe_load_all(to_yaml(render())) if d]
    assert [d["kind"] for d in docs] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
