"""Turn a ModelMonitor as stored in Kubernetes into validated models, or an error naming the field.

The API server already enforces the schema and the CEL rules; these models check the same and more (what CEL
cannot see, such as the free-form Job template), so the operator can set ``phase: Invalid`` with a reason a
person can act on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelmonitor.api.spec import ModelMonitorSpec


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with a spec: where (``spec.policies[0].condition.op``) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class SpecError(ValueError):
    """A ModelMonitor spec that cannot be used. ``path`` and ``reason`` describe the first problem; ``problems``
    lists them all."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        if not problems:
            raise ValueError("SpecError needs at least one problem")
        self.problems: tuple[FieldProblem, ...] = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    @property
    def path(self) -> str:
        """Where the first problem is, e.g. ``spec.policies[0].condition.clearThreshold``."""
        return self.problems[0].path

    @property
    def reason(self) -> str:
        """What is wrong there."""
        return self.problems[0].reason


# Maps of the spec: a location part after one of these is a key, written as the API server writes it
# (spec.actions[scale-up].step).
_MAPS = frozenset({"actions", "labels", "headers", "annotations"})


def _join_path(parts: Sequence[str | int]) -> str:
    out = ""
    previous: str | int | None = None
    for part in parts:
        if isinstance(part, int) or previous in _MAPS:
            out += f"[{part}]"
        elif out:
            out += "." + part
        else:
            out = part
        previous = part
    return out


# Pydantic names the union member in the location of errors inside a discriminated union (e.g. "scale");
# the user never wrote that, so it is dropped.
_UNION_TAGS = frozenset({"scale", "rollback", "retrain", "alert"})


def _problem(error: Mapping[str, Any], root: str) -> FieldProblem:
    loc: list[str | int] = [root]
    raw = list(error.get("loc", ()))
    action_type: str | None = None
    for i, part in enumerate(raw):
        # In spec.actions the location is ["actions", <name>, <type tag>, field...].
        if i >= 2 and raw[i - 2] == "actions" and part in _UNION_TAGS:
            action_type = str(part)
            continue
        loc.append(part)
    ctx = error.get("ctx") or {}
    kind = error.get("type")
    if kind == "union_tag_invalid":
        loc.append(str(ctx.get("discriminator", "type")).strip("'"))
        reason = f"{ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}"
    elif kind == "union_tag_not_found":
        loc.append(str(ctx.get("discriminator", "type")).strip("'"))
        reason = "is required (scale, rollback, retrain or alert)"
    elif kind == "field" and "field" in ctx:
        # A cross-field check: the model validator named the offending field (see common.field_error).
        loc.extend(str(ctx["field"]).split("."))
        reason = str(ctx["reason"])
    elif kind in ("duration", "timestamp"):
        reason = str(ctx["reason"])
    else:
        reason = str(error.get("msg", "is invalid"))
        reason = reason.removeprefix("Value error, ")
        if reason.startswith("Input should be "):
            reason = "must be " + reason[len("Input should be ") :]
        if kind == "extra_forbidden":
            where = f"an action of type {action_type}" if action_type else "this object"
            reason = f"is not a field of {where} (check the spelling)"
        elif kind == "missing":
            reason = "is required"
    return FieldProblem(path=_join_path(loc), reason=reason)


def parse_spec(spec: Mapping[str, Any], *, root: str = "spec") -> ModelMonitorSpec:
    """Validate a ModelMonitor ``spec`` (camelCase, as in YAML) into a ModelMonitorSpec.

    Raises SpecError whose paths start with ``root``.
    """
    try:
        return ModelMonitorSpec.model_validate(dict(spec), by_alias=True, by_name=False)
    except ValidationError as exc:
        raise SpecError([_problem(e, root) for e in exc.errors(include_url=False)]) from None


def parse_monitor(body: Mapping[str, Any]) -> ModelMonitorSpec:
    """Validate a whole ModelMonitor object (as Kopf or the Kubernetes API hand it over) and return its spec.

    Raises SpecError naming the field (``spec.policies[0].condition.clearThreshold``) and the reason.
    """
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        raise SpecError([FieldProblem("spec", "is required" if spec is None else "must be an object")])
    return parse_spec(spec)
