"""Read features, predictions and request ids out of proxied model-server traffic.

Understood without configuration:

* **KServe v1** (the TensorFlow-Serving-style protocol): request ``{"instances": [row, ...]}`` where a row is a
  list in profile order or an object of feature values; response ``{"predictions": [p, ...]}`` where ``p`` is a
  class, a number, a list of class probabilities, or an object with a class and/or a score.
* **Open Inference Protocol v2 JSON** (KServe v2, Triton, MLServer, Seldon): request ``{"id": ..., "inputs":
  [tensor, ...]}`` with either one ``[rows, features]`` tensor (columns in profile order) or one ``[rows]`` /
  ``[rows, 1]`` tensor per feature, named like the feature; response ``{"outputs": [tensor, ...]}``.

Anything else through a :class:`FieldMapping` (dotted paths into the JSON bodies). Nothing here changes what the
client or the model sees: it only reads copies of the bodies after the model answered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelmonitor.sidecar.encode import BatchError

CLASS_KEYS = ("label", "class", "predicted_class", "prediction", "predictions", "output")
SCORE_KEYS = ("score", "probability", "proba", "confidence")
PROBABILITY_OUTPUT_HINTS = ("prob", "score", "confidence")


@dataclass(frozen=True)
class Extracted:
    """What one proxied call carried: feature rows (or columns), and per row a prediction / score / id."""

    rows: list[Any] | None
    columns: dict[str, list[Any]] | None
    size: int
    predictions: list[Any] | None
    scores: list[float | None] | None
    request_ids: list[str | None] | None
    groups: list[Any] | None = None


@dataclass(frozen=True)
class FieldMapping:
    """Where the fields are in a payload the built-in protocols do not cover.

    Paths are dotted (``data.rows``; a number indexes a list: ``result.0.label``). ``features`` must lead to a
    list of rows (objects or lists in profile order) or to one row object.

    Attributes:
        features: path in the request body to the feature rows.
        predictions: path in the response body to the predictions (a list parallel to the rows, or one value).
        scores: path in the response body to the scores of the positive class.
        request_id: path in the request body to the request id (the ``X-Request-Id`` header is the fallback).
        groups: path in the request body to the group values (a list parallel to the rows, or one value).
    """

    features: str
    predictions: str | None = None
    scores: str | None = None
    request_id: str | None = None
    groups: str | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> FieldMapping:
        """Read a mapping from a JSON file ``{"features": "...", "predictions": "...", ...}``."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read the field mapping ({error})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object")
        known = {"features", "predictions", "scores", "request_id", "groups"}
        extra = set(raw) - known
        if extra:
            raise ValueError(f"{path}: unknown key(s) {sorted(extra)}; expected some of {sorted(known)}")
        if not isinstance(raw.get("features"), str):
            raise ValueError(f"{path}: 'features' (a dotted path into the request body) is required")
        for key, value in raw.items():
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{path}: {key!r} must be a dotted path string")
        return cls(**raw)


def lookup(document: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``document``; ``KeyError`` naming the first missing step."""
    value = document
    for step in path.split("."):
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.lstrip("-").isdigit() and -len(value) <= int(step) < len(value):
            value = value[int(step)]
        else:
            raise KeyError(f"{path!r}: no {step!r} here")
    return value


def _row_ids(request_id: str | None, n: int) -> list[str | None] | None:
    """Ids for the rows of one call: the request id for a single row, ``<id>:<row>`` for a batch."""
    if request_id is None:
        return None
    if n == 1:
        return [request_id]
    return [f"{request_id}:{i}" for i in range(n)]


def extract(
    request: Any,
    response: Any | None,
    *,
    feature_names: Sequence[str],
    positive_class: str | None,
    header_request_id: str | None,
    mapping: FieldMapping | None = None,
) -> Extracted:
    """Features and predictions of one call. ``response`` is None when the model answered with an error.

    Raises:
        BatchError: reason ``unrecognized_payload`` when the body is none of the known shapes.
    """
    if mapping is not None:
        return _extract_mapped(request, response, mapping, header_request_id)
    if isinstance(request, Mapping) and "instances" in request:
        return _extract_v1(request, response, feature_names, positive_class, header_request_id)
    if isinstance(request, Mapping) and isinstance(request.get("inputs"), list):
        return _extract_v2(request, response, feature_names, positive_class, header_request_id)
    raise BatchError(
        "unrecognized_payload",
        "request: neither KServe v1 ('instances') nor Open Inference Protocol v2 ('inputs'); configure a mapping",
    )


# --- KServe v1 ---------------------------------------------------------------------------------------------


def _extract_v1(
    request: Mapping[str, Any],
    response: Any | None,
    feature_names: Sequence[str],
    positive_class: str | None,
    header_request_id: str | None,
) -> Extracted:
    instances = request["instances"]
    if not isinstance(instances, list):
        raise BatchError("unrecognized_payload", "instances: expected a list")
    if len(feature_names) == 1 and instances and not isinstance(instances[0], list | dict):
        instances = [[v] for v in instances]  # one-feature models may send bare values
    n = len(instances)
    predictions = scores = None
    if isinstance(response, Mapping) and isinstance(response.get("predictions"), list):
        raw = response["predictions"]
        if len(raw) == n:
            predictions, scores = _split_predictions(raw, positive_class)
    return Extracted(
        rows=instances,
        columns=None,
        size=n,
        predictions=predictions,
        scores=scores,
        request_ids=_row_ids(header_request_id, n),
    )


def _split_predictions(raw: list[Any], positive_class: str | None) -> tuple[list[Any], list[float | None] | None]:
    """(classes or values, scores) from v1 predictions of any of the usual shapes."""
    predictions: list[Any] = []
    scores: list[float | None] = []
    for item in raw:
        if isinstance(item, list) and item and all(_is_number(p) for p in item):
            if len(item) == 1:  # a single output per row: a value or a score
                predictions.append(item[0])
                scores.append(None)
                continue
            predictions.append(max(range(len(item)), key=item.__getitem__))
            scores.append(float(item[_positive_index(positive_class, len(item))]))
        elif isinstance(item, Mapping):
            predictions.append(next((item[k] for k in CLASS_KEYS if k in item), None))
            score = next((item[k] for k in SCORE_KEYS if k in item), None)
            scores.append(float(score) if score is not None and _is_number(score) else None)
        else:
            predictions.append(item)
            scores.append(None)
    return predictions, (scores if any(s is not None for s in scores) else None)


def _positive_index(positive_class: str | None, width: int) -> int:
    """Which probability column is the positive class: its index when the class is a number, else the last."""
    if positive_class is not None and positive_class.isdigit() and int(positive_class) < width:
        return int(positive_class)
    return width - 1


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- Open Inference Protocol v2 ----------------------------------------------------------------------------


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [v for part in data for v in _flatten(part)]
    return list(data) if isinstance(data, list) else [data]


def _tensor(tensor: Any, where: str) -> tuple[str, list[int], list[Any]]:
    if not isinstance(tensor, Mapping) or "data" not in tensor or "shape" not in tensor:
        raise BatchError("unrecognized_payload", f"{where}: expected a tensor with 'name', 'shape' and 'data'")
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape) or not shape:
        raise BatchError("unrecognized_payload", f"{where}.shape: expected a list of sizes")
    data = _flatten(tensor["data"])
    expected = math.prod(shape)
    if len(data) != expected:
        raise BatchError("unrecognized_payload", f"{where}: shape {shape} needs {expected} values, got {len(data)}")
    return str(tensor.get("name", "")), shape, data


def _extract_v2(
    request: Mapping[str, Any],
    response: Any | None,
    feature_names: Sequence[str],
    positive_class: str | None,
    header_request_id: str | None,
) -> Extracted:
    tensors = [_tensor(t, f"inputs[{i}]") for i, t in enumerate(request["inputs"])]
    width = len(feature_names)
    rows: list[Any] | None = None
    columns: dict[str, list[Any]] | None = None
    names = {name for name, _, _ in tensors}
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][1][1] == width:
        _, (n, _), data = tensors[0]
        rows = [data[i * width : (i + 1) * width] for i in range(n)]
    elif any(name in feature_names for name in names):
        sizes = {shape[0] for _, shape, _ in tensors}
        if len(sizes) != 1:
            raise BatchError("unrecognized_payload", "inputs: per-feature tensors have different row counts")
        n = sizes.pop()
        columns = {}
        for name, shape, data in tensors:
            if math.prod(shape[1:]) != 1:
                raise BatchError("unrecognized_payload", f"inputs[{name!r}]: expected shape [rows] or [rows, 1]")
            columns[name] = data
    else:
        raise BatchError(
            "unrecognized_payload",
            f"inputs: expected one [rows, {width}] tensor or one tensor per feature named like the features",
        )
    request_id = request.get("id") if isinstance(request.get("id"), str) else None
    predictions = scores = None
    if isinstance(response, Mapping) and isinstance(response.get("outputs"), list) and response["outputs"]:
        predictions, scores = _v2_outputs(response["outputs"], n, positive_class)
        if request_id is None and isinstance(response.get("id"), str):
            request_id = response["id"]
    return Extracted(
        rows=rows,
        columns=columns,
        size=n,
        predictions=predictions,
        scores=scores,
        request_ids=_row_ids(request_id or header_request_id, n),
    )


def _v2_outputs(
    outputs: list[Any], n: int, positive_class: str | None
) -> tuple[list[Any] | None, list[float | None] | None]:
    tensors = [_tensor(t, f"outputs[{i}]") for i, t in enumerate(outputs)]
    predictions: list[Any] | None = None
    scores: list[float | None] | None = None
    for name, shape, data in tensors:
        if not shape or shape[0] != n:
            continue
        width = math.prod(shape[1:])
        looks_like_probabilities = any(hint in name.lower() for hint in PROBABILITY_OUTPUT_HINTS)
        if width == 1 and not looks_like_probabilities and predictions is None:
            predictions = list(data)
        elif width == 1 and looks_like_probabilities and scores is None:
            scores = [float(v) if _is_number(v) else None for v in data]
        elif width > 1 and scores is None:
            rows = [data[i * width : (i + 1) * width] for i in range(n)]
            column = _positive_index(positive_class, width)
            scores = [float(r[column]) if _is_number(r[column]) else None for r in rows]
            if predictions is None:  # probabilities only: the predicted class is the most probable one
                predictions = [max(range(width), key=r.__getitem__) for r in rows]
    return predictions, scores


# --- configured mapping ------------------------------------------------------------------------------------


def _extract_mapped(
    request: Any, response: Any | None, mapping: FieldMapping, header_request_id: str | None
) -> Extracted:
    try:
        rows = lookup(request, mapping.features)
    except KeyError as error:
        raise BatchError("unrecognized_payload", f"mapping features: {error.args[0]}") from None
    if isinstance(rows, Mapping):
        rows = [rows]
    if not isinstance(rows, list):
        raise BatchError("unrecognized_payload", f"mapping features {mapping.features!r}: expected a list of rows")
    n = len(rows)

    def parallel(document: Any, path: str | None) -> list[Any] | None:
        if path is None or document is None:
            return None
        try:
            value = lookup(document, path)
        except KeyError:
            return None
        if isinstance(value, list):
            return value if len(value) == n else None
        return [value] * n if n == 1 else None

    request_id = header_request_id
    if mapping.request_id is not None:
        try:
            found = lookup(request, mapping.request_id)
            request_id = str(found) if found is not None else request_id
        except KeyError:
            pass
    raw_scores = parallel(response, mapping.scores)
    return Extracted(
        rows=rows,
        columns=None,
        size=n,
        predictions=parallel(response, mapping.predictions),
        scores=None if raw_scores is None else [float(s) if _is_number(s) else None for s in raw_scores],
        request_ids=_row_ids(request_id, n),
        groups=parallel(request, mapping.groups),
    )
