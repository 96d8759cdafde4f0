"""Render the field reference of the ModelMonitor CRD as Markdown (pure: no I/O).

The reference is read from the generated CRD itself, so it documents exactly what the API server enforces:
types, defaults, bounds, enums and the CEL rules with their messages.
"""

from __future__ import annotations

import json
from typing import Any

from modelmonitor.api.common import DURATION_PATTERN, GROUP, KIND, POSITIVE_DURATION_PATTERN, VERSION
from modelmonitor.api.crd import CRD_PATH, PRINTER_COLUMNS, build_crd, show_value

Schema = dict[str, Any]

REFERENCE_PATH = "docs/crd-reference.md"


def _type_name(node: Schema) -> str:
    kind = node.get("type")
    if node.get("pattern") == DURATION_PATTERN:
        return "duration"
    if node.get("pattern") == POSITIVE_DURATION_PATTERN:
        return "duration (> 0)"
    if kind == "array":
        return "[]" + _type_name(node["items"])
    if kind == "object":
        if "additionalProperties" in node:
            return "map[string]" + _type_name(node["additionalProperties"])
        if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
            return "object (free-form)"
        return "object"
    if node.get("format") == "date-time":
        return "time (RFC 3339)"
    return str(kind)


def _constraints(node: Schema) -> str:
    parts: list[str] = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node:
        parts.append((">" if node.get("exclusiveMinimum") else "≥") + f" {node['minimum']}")
    if "maximum" in node:
        parts.append(("<" if node.get("exclusiveMaximum") else "≤") + f" {node['maximum']}")
    if "minLength" in node and node["minLength"] > 0:
        parts.append(f"length ≥ {node['minLength']}")
    if "maxLength" in node:
        parts.append(f"length ≤ {node['maxLength']}")
    if "minItems" in node:
        parts.append(f"≥ {node['minItems']} items")
    if "maxItems" in node:
        parts.append(f"≤ {node['maxItems']} items")
    if "maxProperties" in node:
        parts.append(f"≤ {node['maxProperties']} entries")
    if node.get("pattern") and node["pattern"] not in (DURATION_PATTERN, POSITIVE_DURATION_PATTERN):
        parts.append(f"matches `{node['pattern']}`")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(node.get("x-kubernetes-list-map-keys", []))
        parts.append(f"unique by {keys}")
    elif node.get("x-kubernetes-list-type") == "set":
        parts.append("unique")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _anchor(path: str) -> str:
    return "".join(ch for ch in path.lower() if ch.isalnum() or ch in "-_")


def _child_object(node: Schema) -> Schema | None:
    """The object schema a field leads to (itself, its list items or its map values), if any."""
    for candidate in (node, node.get("items"), node.get("additionalProperties")):
        if isinstance(candidate, dict) and candidate.get("type") == "object" and "properties" in candidate:
            return candidate
    return None


def _child_path(path: str, name: str, node: Schema) -> str:
    if node.get("type") == "array":
        return f"{path}.{name}[]"
    if "additionalProperties" in node:
        return f"{path}.{name}.<name>"
    return f"{path}.{name}"


def _section(path: str, node: Schema, level: int, out: list[str]) -> None:
    out.append(f"{'#' * level} `{path}`")
    out.append("")
    if node.get("description"):
        out.append(node["description"])
        out.append("")
    required = set(node.get("required", []))
    rules_of_fields: list[tuple[str, dict[str, str]]] = []
    children: list[tuple[str, Schema]] = []
    out.append("| Field | Type | Default | Constraints | Description |")
    out.append("|---|---|---|---|---|")
    for name, child in node.get("properties", {}).items():
        child_path = _child_path(path, name, child)
        obj = _child_object(child)
        label = f"`{name}`" + (" **(required)**" if name in required else "")
        if obj is not None:
            label = f"[{label}](#{_anchor(child_path)})"
            children.append((child_path, obj))
        default = f"`{json.dumps(child['default'])}`" if "default" in child else ""
        description = child.get("description", "")
        if "default" in child:
            # The Default column says it already (the sentence is there for kubectl explain).
            description = description.removesuffix(f" Defaults to {show_value(child['default'])}.")
        if child.get("x-kubernetes-validations") and obj is None:
            rules_of_fields += [(f"{path}.{name}", rule) for rule in child["x-kubernetes-validations"]]
        out.append(
            f"| {label} | {_cell(_type_name(child))} | {_cell(default)} | {_cell(_constraints(child))} "
            f"| {_cell(description)} |"
        )
    out.append("")
    rules = [(path, rule) for rule in node.get("x-kubernetes-validations", [])] + rules_of_fields
    if rules:
        out.append("Checked by the API server:")
        out.append("")
        for where, rule in rules:
            out.append(f"- `{where}{rule.get('fieldPath', '')}`: {rule['message']} (`{_cell(rule['rule'])}`)")
        out.append("")
    for child_path, obj in children:
        _section(child_path, obj, min(level + 1, 4), out)


def render_reference() -> str:
    """The Markdown field reference of the ModelMonitor CRD."""
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    names = crd["spec"]["names"]
    root = version["schema"]["openAPIV3Schema"]
    out: list[str] = [
        "<!-- Generated by `modelmonitor crd --markdown` from operator/modelmonitor/api. Do not edit. -->",
        f"<!-- Regenerate with: modelmonitor crd --markdown --output {REFERENCE_PATH} -->",
        "",
        f"# {KIND} reference (`{GROUP}/{VERSION}`)",
        "",
        root["description"],
        "",
        f"- Resource: `{names['plural']}.{GROUP}`, namespaced; short name "
        + ", ".join(f"`{n}`" for n in names["shortNames"])
        + "; category "
        + ", ".join(f"`{c}`" for c in names["categories"])
        + f" (`kubectl get {names['categories'][0]}`).",
        f"- The CRD: [`{CRD_PATH}`](../{CRD_PATH}). `status` is a subresource, written by the operator only.",
        "- `kubectl get mm` shows: "
        + ", ".join(c["name"] for c in PRINTER_COLUMNS if not c.get("priority"))
        + " (`-o wide` adds "
        + ", ".join(c["name"] for c in PRINTER_COLUMNS if c.get("priority"))
        + ").",
        "- Durations are strings of digits and units, repeated: `ms`, `s`, `m`, `h`, `d` (`90s`, `1h30m`).",
        "- What the API server cannot check (the free-form Job template, query placeholders) is checked by the "
        "operator, which then sets `status.phase: Invalid` with the reason.",
        "",
        "## Spec",
        "",
    ]
    _section("spec", root["properties"]["spec"], 3, out)
    out += ["## Status", ""]
    _section("status", root["properties"]["status"], 3, out)
    return "\n".join(out).rstrip() + "\n"
