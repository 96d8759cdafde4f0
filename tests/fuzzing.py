"""Generated input for the fuzz tests: ModelMonitor specs drawn from the CRD's own schema, and mutations of the
shipped examples that break one thing at a time.

Drawn from the schema, a spec has the right shape but mostly meaningless values (a PromQL query of random
characters, intervals of one second, actions nobody references), which is what the operator's own validation
must turn into `Invalid` with a reason. Mutations start from the examples users copy and change one field to a
wrong type, an out-of-range number, a string that breaks a pattern, or remove a required field: each must be
refused by the API server with a message that names the field.
"""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

Schema = dict[str, Any]

#: Strings the operator has to parse: durations, PromQL with placeholders, numbers written as text.
INTERESTING_STRINGS = (
    "",
    "0s",
    "1s",
    "30s",
    "5m",
    "1h",
    "-1s",
    "1y",
    "1.5m",
    "{{model}}",
    "{{window}}",
    "{{modle}}",
    "sum(rate(x[{{window}}]))",
    'sum(rate(http_requests_total{model="{{model}}"}[{{window}}]))',
    "rate(x[5m]",
    "NaN",
    "Inf",
    "1e309",
    "\u0000",
    "\u202e",
    "a" * 300,
)

_SAFE_ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))


@dataclass(frozen=True)
class Mutation:
    """One broken field: where (a path into the spec) and what was done to it."""

    path: tuple[str | int, ...]
    kind: str

    @property
    def field(self) -> str:
        """The last named key of the path: the word a refusal must mention."""
        return next(str(part) for part in reversed(self.path) if isinstance(part, str))


def from_schema(schema: Schema, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that follow `schema` (an OpenAPI v3 structural schema as Kubernetes stores it), constraints
    included where hypothesis can honour them (enum, pattern, length, range, required, item counts), CEL rules
    (`x-kubernetes-validations`) not: those are for the API server to enforce."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(min_value=-5, max_value=500), _string(schema))
    kind = schema.get("type")
    if kind == "object":
        return _object(schema, depth)
    if kind == "array":
        items = from_schema(schema.get("items", {}), depth + 1)
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", low + 3))
        return st.lists(items, min_size=low, max_size=min(high, low + 3))
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum", -10), max_value=schema.get("maximum", 10_000))
    if kind == "number":
        return st.floats(
            min_value=schema.get("minimum", -1e6),
            max_value=schema.get("maximum", 1e6),
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "boolean":
        return st.booleans()
    return st.none()


def _string(schema: Schema) -> st.SearchStrategy[str]:
    low = int(schema.get("minLength", 0))
    high = int(schema.get("maxLength", 64))
    if "pattern" in schema:
        return st.from_regex(re.compile(schema["pattern"]), fullmatch=True).filter(lambda s: low <= len(s) <= high)
    return st.one_of(
        st.sampled_from([s for s in INTERESTING_STRINGS if low <= len(s) <= high] or ["x" * low]),
        st.text(_SAFE_ALPHABET, min_size=low, max_size=min(high, 40)),
    )


def _object(schema: Schema, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Schema] = schema.get("properties", {})
    if not properties:
        values = from_schema(schema.get("additionalProperties") or {"type": "string"}, depth + 1)
        keys = st.text(string.ascii_letters + string.digits + "-_./", min_size=1, max_size=20)
        return st.dictionaries(keys, values, max_size=3)
    required = set(schema.get("required", []))
    # Deep optional branches are left out so one spec stays small enough to apply thousands of them.
    optional = {} if depth >= 4 else {n: from_schema(s, depth + 1) for n, s in properties.items() if n not in required}
    return st.fixed_dictionaries(
        {name: from_schema(sub, depth + 1) for name, sub in properties.items() if name in required}, optional=optional
    )


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path below `value` that ends at a named key (so a refusal can name it)."""
    found: list[tuple[str | int, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*prefix, key))
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_paths(child, (*prefix, index)))
    return found


def _get(value: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def _schema_at(schema: Schema, path: tuple[str | int, ...]) -> Schema:
    for part in path:
        schema = schema.get("items", {}) if isinstance(part, int) else schema.get("properties", {}).get(part, {})
    return schema


def _breakers(schema: Schema) -> list[tuple[str, Callable[[Any], Any]]]:
    """Ways to make a value wrong for its schema that the API server's structural validation must catch."""
    kind = schema.get("type")
    breakers: list[tuple[str, Callable[[Any], Any]]] = []
    if kind == "object":
        breakers.append(("wrong_type", lambda _v: "not-an-object"))
    if kind == "array":
        breakers.append(("wrong_type", lambda _v: {"not": "a list"}))
    if kind == "string" and not schema.get("x-kubernetes-int-or-string"):
        breakers.append(("wrong_type", lambda _v: ["a", "list"]))
        if "enum" in schema:
            breakers.append(("not_in_enum", lambda v: f"{v}-nope"))
        if "maxLength" in schema:
            breakers.append(("too_long", lambda _v, n=int(schema["maxLength"]): "a" * (n + 1)))
        if "pattern" in schema:
            breakers.append(("pattern", lambda _v: "Not Valid!"))
    if kind in ("integer", "number"):
        breakers.append(("wrong_type", lambda _v: "three"))
        if "minimum" in schema:
            breakers.append(("below_minimum", lambda _v, m=schema["minimum"]: m - 1))
        if "maximum" in schema:
            breakers.append(("above_maximum", lambda _v, m=schema["maximum"]: m + 1))
    if kind == "boolean":
        breakers.append(("wrong_type", lambda _v: "yes please"))
    return breakers


def mutations(spec: dict[str, Any], schema: Schema) -> list[tuple[dict[str, Any], Mutation]]:
    """Every copy of `spec` with exactly one field made wrong for the schema (or one required field removed)."""
    mutants = []
    for path in _paths(spec):
        breakers = _breakers(_schema_at(schema, path))
        if path[-1] in _schema_at(schema, path[:-1]).get("required", []):
            breakers.append(("required_removed", lambda _v: _REMOVE))
        for kind, breaker in breakers:
            mutant = copy.deepcopy(spec)
            parent = _get(mutant, path[:-1])
            new = breaker(parent[path[-1]])
            if new is _REMOVE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = new
            mutants.append((mutant, Mutation(path, kind)))
    return mutants


_REMOVE = object()


DRIFT_SIGNALS = ("dataDrift", "predictionDrift")
RESERVED_LABELS = ("namespace", "model", "version", "pod", "le", "feature", "category", "group", "prediction")


def repaired(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with the cross-field rules a random draw nearly always breaks put right (one of signal or query, one
    of threshold or autoThreshold, unique policy names, defined actions, apiVersion by kind), so that drawn specs
    also reach the operator instead of stopping at the API server's first rule."""
    spec = copy.deepcopy(spec)
    target = spec.get("target", {})
    if target.get("kind", "Deployment") in ("Deployment", "StatefulSet"):
        target.pop("apiVersion", None)
    else:
        target.setdefault("apiVersion", "example.com/v1")
    labels = spec.get("model", {}).get("labels")
    if isinstance(labels, dict):
        spec["model"]["labels"] = {
            k: v for k, v in labels.items() if re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", k) and k not in RESERVED_LABELS
        }
    defined = set(spec.get("actions") or {})
    for index, policy in enumerate(spec.get("policies", [])):
        policy["name"] = f"{policy['name'][:50]}-{index}"
        if "signal" in policy:
            policy.pop("query", None)
        elif "query" not in policy:
            policy["signal"] = "errorRate"
        if policy.get("signal") not in DRIFT_SIGNALS:
            policy.pop("method", None)
        condition = policy.setdefault("condition", {"op": ">"})
        if condition.get("autoThreshold") and policy.get("signal") in DRIFT_SIGNALS:
            condition.pop("threshold", None)
            condition.pop("clearThreshold", None)
        else:
            condition.pop("autoThreshold", None)
            condition.setdefault("threshold", 0.5)
        if "actions" in policy:
            policy["actions"] = [name for name in policy["actions"] if name in defined]
    return spec
