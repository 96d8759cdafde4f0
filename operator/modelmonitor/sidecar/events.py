"""The push API's payloads: a JSON batch of prediction events, and a JSON batch of late labels.

Events::

    {"events": [{"request_id": "r-1", "features": {"age": 41, "country": "DE"}, "prediction": 1,
                 "score": 0.83, "group": "f", "error": false, "latency_seconds": 0.012}, ...]}

``features`` is an object (name -> value) or a list in profile order; everything but ``features`` is optional.
Labels::

    {"labels": [{"request_id": "r-1", "label": 1}, ...]}

A bare list is accepted for either. A batch is all-or-nothing: the first problem found refuses the whole batch
with a :class:`BatchError` whose reason is a ``modelmonitor_events_rejected_total`` label value and whose
message names the event and the field, so the sender can fix it and resend.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from modelmonitor.sidecar.encode import BatchError, FeatureEncoder
from modelmonitor.sidecar.monitor import EventBatch

EVENT_FIELDS = frozenset({"request_id", "features", "prediction", "score", "group", "error", "latency_seconds"})
LABEL_FIELDS = frozenset({"request_id", "label"})

_ABSENT = object()

REJECT_REASONS = (
    "malformed_json",
    "wrong_shape",
    "unknown_field",
    "unknown_feature",
    "non_finite",
    "bad_value",
    "too_large",
    "too_many_events",
)
"""Every ``reason`` label value of ``modelmonitor_events_rejected_total`` (the proxy adds ``unrecognized_payload``)."""


def decode_json(body: bytes) -> Any:
    """Decode a request body (orjson: strict and about ten times faster than the json module on big batches).

    What orjson refuses is decoded again with the json module, for an error message with a line and column and
    so that NaN / Infinity literals (which the json module reads) are refused per field with ``non_finite``.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f" at line {error.lineno}, column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
        raise BatchError("malformed_json", f"body: not valid JSON{where}: {error}") from None
    except RecursionError:
        raise BatchError("malformed_json", "body: JSON nested too deeply") from None


def _items(document: Any, key: str) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        if key not in document:
            raise BatchError("wrong_shape", f"body: expected an object with a {key!r} list (or a bare list)")
        extra = sorted(set(document) - {key})
        if extra:
            raise BatchError("unknown_field", f"body: unknown field(s) {', '.join(map(repr, extra))}")
        items = document[key]
        if not isinstance(items, list):
            raise BatchError("wrong_shape", f"{key}: expected a list, got {type(items).__name__}")
        return items
    raise BatchError("wrong_shape", f"body: expected an object or a list, got {type(document).__name__}")


def parse_event_document(document: Any, encoder: FeatureEncoder, *, max_events: int) -> EventBatch:
    """Validate a decoded ``/v1/events`` body and encode it (see the module docstring for the format)."""
    events = _items(document, "events")
    if len(events) > max_events:
        raise BatchError("too_many_events", f"events: {len(events)} events, at most {max_events} per batch")
    return parse_events(events, encoder)


def parse_events(events: Sequence[Any], encoder: FeatureEncoder) -> EventBatch:
    """Validate and encode a list of event objects; :class:`BatchError` names the first bad event and field."""
    if not all(type(e) is dict for e in events):  # decoded JSON gives dicts: check the general case only if not
        for index, event in enumerate(events):
            if not isinstance(event, Mapping):
                raise BatchError("wrong_shape", f"events[{index}]: expected an object, got {type(event).__name__}")
    unknown = set().union(*events) - EVENT_FIELDS if events else set()
    if unknown:
        name = sorted(unknown)[0]
        index = next(i for i, e in enumerate(events) if name in e)
        raise BatchError(
            "unknown_field",
            f"events[{index}]: unknown field {name!r}; expected some of {', '.join(sorted(EVENT_FIELDS))}",
        )
    rows = [e.get("features", _ABSENT) for e in events]
    if any(r is _ABSENT for r in rows):
        index = next(i for i, r in enumerate(rows) if r is _ABSENT)
        raise BatchError("wrong_shape", f"events[{index}].features: missing")
    features = encoder.encode_rows(rows, where="events[{index}].features")
    if features.unknown_features:
        name = next(iter(features.unknown_features))
        index = next(i for i, r in enumerate(rows) if name in r)
        raise BatchError("unknown_feature", f"events[{index}].features: {name!r} is not a feature of the profile")
    bad_numbers = features.nan_literals.any() or np.isinf(features.numerical).any()
    if bad_numbers:
        row, column = _first_non_finite(features.numerical, encoder, rows)
        raise BatchError(
            "non_finite", f"events[{row}].features.{column}: NaN or infinite; send null for a missing value"
        )
    n = len(events)
    request_ids: list[str | None] = [e.get("request_id") for e in events]
    if not all(type(r) is str and 0 < len(r) <= 256 for r in request_ids):  # the common case, checked in one pass
        request_ids = [_request_id(r, i) for i, r in enumerate(request_ids)]
    predictions = [e.get("prediction") for e in events]
    for index, value in enumerate(predictions):
        if isinstance(value, float) and not math.isfinite(value):
            raise BatchError("non_finite", f"events[{index}].prediction: NaN or infinite")
        if isinstance(value, dict | list):
            raise BatchError("bad_value", f"events[{index}].prediction: expected a class or a number")
    scores = _optional_numbers(events, "score")
    latency = _optional_numbers(events, "latency_seconds")
    errors = [e.get("error", False) for e in events]
    for index, value in enumerate(errors):
        if not isinstance(value, bool):
            raise BatchError("bad_value", f"events[{index}].error: expected true or false")
    status = np.where(np.array(errors, dtype=bool), 500, 200).astype(np.int64) if n else None
    groups = [e.get("group") for e in events]
    for index, value in enumerate(groups):
        if isinstance(value, dict | list):
            raise BatchError("bad_value", f"events[{index}].group: expected a string or a number")
    has_group = any(g is not None for g in groups)
    return EventBatch(
        features=features,
        request_ids=request_ids,
        predictions=predictions if any(p is not None for p in predictions) else None,
        scores=scores,
        groups=groups if has_group else None,
        status=status,
        latency=latency,
    )


def _request_id(value: Any, index: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value or len(value) > 256:
            raise BatchError("bad_value", f"events[{index}].request_id: expected 1 to 256 characters")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BatchError("bad_value", f"events[{index}].request_id: expected a string, got {type(value).__name__}")


def _optional_numbers(events: Sequence[Mapping[str, Any]], name: str) -> np.ndarray | None:
    values = [e.get(name) for e in events]
    if all(v is None for v in values):
        return None
    out = np.full(len(values), math.nan)
    for index, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BatchError("bad_value", f"events[{index}].{name}: expected a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise BatchError("non_finite", f"events[{index}].{name}: NaN or infinite")
        out[index] = value
    if name == "latency_seconds" and (out[np.isfinite(out)] < 0).any():
        index = int(np.flatnonzero(out < 0)[0])
        raise BatchError("bad_value", f"events[{index}].{name}: must be >= 0")
    return out


def _first_non_finite(values: np.ndarray, encoder: FeatureEncoder, rows: Sequence[Any]) -> tuple[int, str]:
    """Row and feature name of the first NaN literal or infinity (for the error message)."""
    for index, row in enumerate(rows):
        items = row.items() if isinstance(row, Mapping) else zip(encoder.names, row, strict=False)
        for name, value in items:
            if isinstance(value, float) and not math.isfinite(value):
                return index, name
    return 0, "?"


def parse_label_document(document: Any, *, max_labels: int) -> list[tuple[str, Any]]:
    """Validate a decoded ``/v1/labels`` body into ``(request_id, label)`` pairs."""
    if isinstance(document, dict) and "labels" not in document and "request_id" in document:
        document = [document]  # a single label object
    labels = _items(document, "labels")
    if len(labels) > max_labels:
        raise BatchError("too_many_events", f"labels: {len(labels)} labels, at most {max_labels} per batch")
    pairs: list[tuple[str, Any]] = []
    for index, item in enumerate(labels):
        if not isinstance(item, Mapping):
            raise BatchError("wrong_shape", f"labels[{index}]: expected an object, got {type(item).__name__}")
        extra = set(item) - LABEL_FIELDS
        if extra:
            raise BatchError("unknown_field", f"labels[{index}]: unknown field {sorted(extra)[0]!r}")
        request_id = item.get("request_id")
        if isinstance(request_id, int) and not isinstance(request_id, bool):
            request_id = str(request_id)
        if not isinstance(request_id, str) or not request_id:
            raise BatchError("bad_value", f"labels[{index}].request_id: expected a non-empty string")
        if "label" not in item:
            raise BatchError("wrong_shape", f"labels[{index}].label: missing")
        label = item["label"]
        if isinstance(label, dict | list) or label is None:
            raise BatchError("bad_value", f"labels[{index}].label: expected a class (string, number or boolean)")
        if isinstance(label, float) and not math.isfinite(label):
            raise BatchError("non_finite", f"labels[{index}].label: NaN or infinite")
        pairs.append((request_id, label))
    return pairs
