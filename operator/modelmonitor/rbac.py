"""The operator's RBAC, defined once: every permission it needs, why, and the objects that grant them.

`RULES` is the single list; `render` turns it into a ServiceAccount, a ClusterRole and its bindings, and
``deploy/rbac.yaml`` is generated from it (a test regenerates and compares). `LEASE_RULES` (the replicas' Leases,
``modelmonitor.sharding``) are granted by a Role in the operator's own namespace only. Two ways to bind:

- cluster-wide (no ``--watch``): one ClusterRoleBinding, for an operator watching every namespace;
- per namespace (``--watch ns``, repeatable): a RoleBinding of the same ClusterRole in each watched namespace,
  so the operator can read Secrets, change workloads and create Jobs there and nowhere else.

The chart's rules template (``charts/modelmonitor/templates/_rbac_rules.tpl``) is generated from it too.
Regenerate both with ``make generate``. Explanations: docs/rbac.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from modelmonitor.api import GROUP, PLURAL

NAME = "modelmonitor-operator"
DEFAULT_NAMESPACE = "modelmonitor-system"
DEFAULT_SERVICE_ACCOUNT = "modelmonitor"
LABELS = {"app.kubernetes.io/name": "modelmonitor", "app.kubernetes.io/component": "operator"}


@dataclass(frozen=True)
class Rule:
    """One RBAC rule and the reason the operator needs it."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"apiGroups": list(self.api_groups), "resources": list(self.resources), "verbs": list(self.verbs)}


RULES: tuple[Rule, ...] = (
    Rule((GROUP,), (PLURAL,), ("get", "list", "watch"), "watch ModelMonitors (specs and approval annotations)"),
    Rule((GROUP,), (f"{PLURAL}/status",), ("get", "patch", "update"), "write each monitor's status"),
    Rule(
        ("",),
        ("events",),
        ("create", "patch"),
        "post Events on monitors (transitions, actions, alerts); patch counts a repeated Event on the same object",
    ),
    Rule(
        ("",),
        ("secrets",),
        ("get",),
        "read the Prometheus credentials a monitor names, cached per TTL (no list, no watch: not every Secret)",
    ),
    Rule(
        ("apps",),
        ("deployments", "statefulsets"),
        ("get", "patch", "update"),
        "scale steps and ledgers (patch), rollback and promotion of the pod template (update, with resourceVersion)",
    ),
    Rule(("apps",), ("replicasets",), ("get", "list"), "the revision history: last-known-good and rollback"),
    Rule(
        ("autoscaling",),
        ("horizontalpodautoscalers",),
        ("get", "list", "patch"),
        "find an HPA targeting the workload and change its bounds instead of the replicas",
    ),
    Rule(
        ("batch",),
        ("jobs",),
        ("get", "list", "create", "patch"),
        "create retraining Jobs, follow them, mark them handled",
    ),
    Rule(("",), ("pods",), ("get", "list"), "read the termination message of a retraining Job's pod"),
)


#: Granted in the operator's own namespace only (a Role), never cluster-wide.
LEASE_RULES: tuple[Rule, ...] = (
    Rule(
        ("coordination.k8s.io",),
        ("leases",),
        ("get", "list", "create", "update", "delete"),
        "each replica holds and renews its own Lease, reads the others' to share the monitors, deletes its own "
        "on a clean stop and those not renewed for an hour",
    ),
)
LEASE_ROLE = f"{NAME}-leases"


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def render(
    namespace: str = DEFAULT_NAMESPACE,
    service_account: str = DEFAULT_SERVICE_ACCOUNT,
    watch: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The ServiceAccount, ClusterRole and bindings (cluster-wide, or one RoleBinding per ``watch`` namespace), and
    the Role and RoleBinding of the replicas' Leases in ``namespace``."""
    subject = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(service_account, namespace)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(NAME),
            "rules": [rule.to_dict() for rule in RULES],
        },
    ]
    if not watch:
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": _meta(NAME),
                "roleRef": role_ref,
                "subjects": [subject],
            }
        )
    for watched in dict.fromkeys(watch):
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": _meta(NAME, watched),
                "roleRef": role_ref,
                "subjects": [subject],
            }
        )
    objects += [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(LEASE_ROLE, namespace),
            "rules": [rule.to_dict() for rule in LEASE_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(LEASE_ROLE, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LEASE_ROLE},
            "subjects": [subject],
        },
    ]
    return objects


HEADER = """\
# Generated by `python -m modelmonitor.rbac` from operator/modelmonitor/rbac.py: do not edit by hand.
# The operator's least-privilege RBAC (cluster-wide binding). Why each rule is there: docs/rbac.md.
"""


def to_yaml(objects: Sequence[dict[str, Any]]) -> str:
    """A multi-document YAML stream with the generated-file header."""
    return HEADER + "".join("---\n" + yaml.safe_dump(o, sort_keys=False) for o in objects)


def chart_rules_template() -> str:
    """The chart's ``modelmonitor.rbacRules`` template, generated from `RULES`."""
    lines = [
        "{{/*",
        "The operator's RBAC rules, generated from operator/modelmonitor/rbac.py (RULES and LEASE_RULES, the one",
        "definition) by `make generate`: do not edit by hand. tests/unit/test_chart.py fails when this file and the",
        "module disagree.",
        "*/}}",
    ]
    for define, rules in (("modelmonitor.rbacRules", RULES), ("modelmonitor.leaseRules", LEASE_RULES)):
        lines.append(f'{{{{- define "{define}" -}}}}')
        for rule in rules:
            d = rule.to_dict()
            lines += [
                f"# {rule.why}",
                f"- apiGroups: {json.dumps(d['apiGroups'])}",
                f"  resources: {json.dumps(d['resources'])}",
                f"  verbs: {json.dumps(d['verbs'])}",
            ]
        lines.append("{{- end }}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelmonitor.rbac", description=__doc__.split("\n")[0])
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="namespace of the operator's ServiceAccount")
    parser.add_argument("--service-account", default=DEFAULT_SERVICE_ACCOUNT, help="name of that ServiceAccount")
    parser.add_argument(
        "--watch", action="append", default=[], help="bind only in this namespace (repeatable); default cluster-wide"
    )
    parser.add_argument(
        "--chart-rules", action="store_true", help="print the chart's rules template instead of the objects"
    )
    args = parser.parse_args(argv)
    if args.chart_rules:
        sys.stdout.write(chart_rules_template())
        return 0
    sys.stdout.write(to_yaml(render(args.namespace, args.service_account, args.watch)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
