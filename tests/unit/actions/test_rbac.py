"""The operator's RBAC: one definition, the generated deploy/rbac.yaml kept identical, and nothing it does not
need."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelmonitor.rbac import LEASE_ROLE, LEASE_RULES, NAME, RULES, render, to_yaml

REPO = Path(__file__).resolve().parents[3]


def test_the_generated_file_is_up_to_date() -> None:
    committed = (REPO / "deploy" / "rbac.yaml").read_text()
    assert committed == to_yaml(render()), "regenerate: python -m modelmonitor.rbac > deploy/rbac.yaml"


def test_per_namespace_binding_grants_nothing_cluster_wide() -> None:
    objects = render(watch=["ml", "fraud", "ml"])
    kinds = [(o["kind"], o["metadata"].get("namespace")) for o in objects]
    assert ("ClusterRoleBinding", None) not in kinds
    assert [ns for kind, ns in kinds if kind == "RoleBinding"] == ["ml", "fraud", "modelmonitor-system"]
    assert [o["roleRef"]["name"] for o in objects if "roleRef" in o] == [NAME, NAME, LEASE_ROLE]


def test_leases_are_granted_in_the_operators_namespace_only() -> None:
    objects = render(namespace="ops", watch=["ml"])
    leases = [o for o in objects if any("leases" in r["resources"] for r in o.get("rules") or [])]
    assert [(o["kind"], o["metadata"]["namespace"]) for o in leases] == [("Role", "ops")]
    (binding,) = [o for o in objects if o.get("roleRef", {}).get("name") == LEASE_ROLE]
    assert (binding["kind"], binding["metadata"]["namespace"], binding["roleRef"]["kind"]) == (
        "RoleBinding",
        "ops",
        "Role",
    )
    cluster_role = next(o for o in objects if o["kind"] == "ClusterRole")
    assert not any("leases" in r["resources"] for r in cluster_role["rules"])
    assert all(rule.why for rule in LEASE_RULES)


def test_least_privilege() -> None:
    verbs = {(g, r): set(rule.verbs) for rule in RULES for g in rule.api_groups for r in rule.resources}
    assert verbs[("", "secrets")] == {"get"}, "no list or watch of Secrets"
    assert "create" not in verbs[("", "pods")], "pods only through Jobs"
    assert all("delete" not in v and "deletecollection" not in v and "*" not in v for v in verbs.values())
    assert not any(r in ("roles", "rolebindings", "clusterroles", "serviceaccounts") for _g, r in verbs)
    assert all(rule.why for rule in RULES)


def test_the_yaml_parses_as_kubernetes_objects() -> None:
    docs = [d for d in yaml.safe_load_all(to_yaml(render())) if d]
    assert [d["kind"] for d in docs] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
