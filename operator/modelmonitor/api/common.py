"""Building blocks shared by the ModelMonitor spec and status models.

Durations, names, the camelCase base model, and the small helpers that attach Kubernetes-specific schema
(CEL rules, list types) to pydantic models so that the CRD generator can emit them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from modelmonitor import durations

GROUP = "modelmonitor.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelMonitor"
PLURAL = "modelmonitors"
SINGULAR = "modelmonitor"
SHORT_NAMES = ("mm",)
CATEGORIES = ("mlops",)

# One duration component is digits followed by a unit; several components add up ("1h30m").
_UNIT = r"(ms|s|m|h|d)"
DURATION_PATTERN = durations.PATTERN
# The same, with at least one component that is not all zeros: RE2 (the API server) has no lookahead.
POSITIVE_DURATION_PATTERN = rf"^([0-9]+{_UNIT})*0*[1-9][0-9]*{_UNIT}([0-9]+{_UNIT})*$"
# Ten years: far beyond any sensible window or cooldown, and well inside timedelta's range.
MAX_DURATION = timedelta(days=3650)
MAX_DURATION_LENGTH = 32

# Kubernetes object names (DNS-1123 subdomain) and the names used inside a monitor (DNS-1123 label).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Action names are map keys chosen by the user (e.g. "scaleUp", "page-oncall").
ACTION_NAME_PATTERN = r"^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
# Prometheus label names.
PROMETHEUS_LABEL_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
HTTP_URL_PATTERN = r"^https?://[^\s]+$"


def parse_duration(text: str) -> timedelta:
    """Parse an API duration such as ``"90s"`` or ``"1h30m"`` (units ms, s, m, h, d) into a timedelta.

    Raises ValueError naming the expected form when ``text`` is not a duration.
    """
    seconds = durations.seconds(text)
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is longer than the maximum of {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)


def duration_seconds(text: str) -> float:
    """The duration ``text`` in seconds (see parse_duration)."""
    return parse_duration(text).total_seconds()


def _check_duration(text: str) -> str:
    try:
        parse_duration(text)
    except ValueError as exc:
        raise PydanticCustomError("duration", "{reason}", {"reason": str(exc)}) from None
    return text


def _check_positive_duration(text: str) -> str:
    if parse_duration(text) <= timedelta(0):
        raise PydanticCustomError("duration", "{reason}", {"reason": f"{text!r} must be longer than zero"})
    return text


def _check_timestamp(text: str) -> str:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise PydanticCustomError(
            "timestamp", "{reason}", {"reason": f"{text!r} is not an RFC 3339 time, e.g. 2026-11-24T10:00:00Z"}
        ) from None
    if parsed.tzinfo is None:
        raise PydanticCustomError("timestamp", "{reason}", {"reason": f"{text!r} has no time zone (add Z)"})
    return text


def _duration_schema(pattern: str) -> dict[str, Any]:
    # The pattern goes to the CRD for the API server; pydantic checks with parse_duration, whose message is
    # friendlier than "should match pattern".
    return {"pattern": pattern, "maxLength": MAX_DURATION_LENGTH}


Duration = Annotated[str, AfterValidator(_check_duration), Field(json_schema_extra=_duration_schema(DURATION_PATTERN))]
"""A duration string, zero allowed: digits and a unit, repeated (``0s``, ``90s``, ``1h30m``)."""

PositiveDuration = Annotated[
    str,
    AfterValidator(_check_duration),
    AfterValidator(_check_positive_duration),
    Field(json_schema_extra=_duration_schema(POSITIVE_DURATION_PATTERN)),
]
"""A duration string longer than zero."""

Timestamp = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_check_timestamp),
    Field(json_schema_extra={"format": "date-time"}),
]
"""An RFC 3339 time with a zone, as Kubernetes writes them (``2026-11-24T10:00:00Z``)."""


ShortText = Annotated[str, StringConstraints(max_length=1024)]
"""A label value or header value: bounded, so CEL rules over maps of them stay within the cost budget."""

LongText = Annotated[str, StringConstraints(max_length=16384)]
"""An annotation value."""


def field_error(field: str, reason: str) -> PydanticCustomError:
    """An error raised by a cross-field check, carrying the name of the offending field.

    pydantic reports errors raised in a model validator at the model's location; the ``field`` context lets
    parse_monitor extend that location so the user sees e.g. ``spec.policies[0].condition.clearThreshold``.
    """
    return PydanticCustomError("field", "{field}: {reason}", {"field": field, "reason": reason})


def cel(
    rule: str,
    message: str,
    *,
    field_path: str | None = None,
    message_expression: str | None = None,
    reason: str | None = None,
) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry: a CEL rule the API server checks, and what it says when not.

    ``field_path`` (e.g. ``.clearThreshold``) makes the server's error point at that field rather than at the
    object holding the rule.
    """
    entry = {"rule": rule, "message": message}
    if message_expression is not None:
        entry["messageExpression"] = message_expression
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def k8s(**extensions: Any) -> dict[str, Any]:
    """Kubernetes schema extensions for ``Field(json_schema_extra=...)``: ``k8s(list_type="map")`` gives
    ``x-kubernetes-list-type: map``; ``validations=[cel(...)]`` gives ``x-kubernetes-validations``."""
    out: dict[str, Any] = {}
    for key, value in extensions.items():
        out["x-kubernetes-" + key.replace("_", "-")] = value
    return out


class ApiModel(BaseModel):
    """Base of every spec model: camelCase names on the wire, unknown fields refused, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=False,
    )


class StatusModel(BaseModel):
    """Base of every status model: camelCase on the wire; unknown fields ignored so that an older operator
    can read the status a newer one wrote."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
