"""The reference profile: what the model saw in training, in the form the sidecar compares live traffic against.

A profile is one versioned JSON document (small enough for a ConfigMap) built by ``modelmonitor profile build``
from training data. Per feature it holds the type and schema (range, allowed categories), the bucket bounds at the
reference quantiles with the reference counts in those buckets, a quantile sketch of the reference for the
sample-based tests (KS, Wasserstein), category frequencies (capped, the rest in ``__other__``), and the drift
thresholds calibrated for the live window size at a target false-alarm rate. It also describes the prediction
distribution, the positive class used for the confusion counts and the group attribute used for fairness.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

PROFILE_FORMAT = "modelmonitor.dev/profile"
PROFILE_VERSION = 1
OTHER = "__other__"
"""The category (and group) every value beyond the cap falls into: keeps label cardinality bounded."""

RESERVED_FEATURE_NAMES = frozenset({"__prediction__", "__unknown__"})
"""``feature`` label values the sidecar uses itself (the prediction's thresholds, unknown features)."""

FeatureType = Literal["numerical", "categorical"]
Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")
"""Which kind of model the profile describes, and so which label-based counters the sidecar keeps."""


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class NumericalReference:
    """The reference distribution of one numerical quantity (a feature or the prediction score).

    Attributes:
        bounds: bucket bounds (``le``) at the reference quantiles, strictly increasing.
        counts: reference rows in each of the ``len(bounds) + 1`` buckets (le semantics, last one is ``+Inf``).
        sketch: evenly spaced reference quantiles (``(i + 0.5) / m``), standing in for the reference sample in the
            sample-based tests (KS, Wasserstein) without shipping the training data.
        minimum, maximum: the reference range; live values outside it are range violations.
        mean, std: reference moments, shown by ``profile show``.
    """

    bounds: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    sketch: npt.NDArray[np.float64]
    minimum: float
    maximum: float
    mean: float
    std: float

    @property
    def cumulative_ratios(self) -> npt.NDArray[np.float64]:
        """Reference share at or below each bound: what ``_bucket / _count`` reads when nothing drifted."""
        total = max(int(self.counts.sum()), 1)
        return np.cumsum(self.counts[:-1]).astype(np.float64) / total


@dataclass(frozen=True)
class CategoricalReference:
    """The reference distribution of one categorical quantity (a feature or the predicted class).

    Attributes:
        categories: the most frequent reference categories, at most the cap; their code is their index.
        counts: reference rows per category, plus one last entry for ``__other__`` (all the rest).
        allowed: every category seen in the reference, when there were few enough to list (``None``: too many to
            list, so the unseen-category check is off for this feature).
    """

    categories: tuple[str, ...]
    counts: npt.NDArray[np.int64]
    allowed: frozenset[str] | None

    @property
    def labels(self) -> tuple[str, ...]:
        """Category label values as exported, ``__other__`` last."""
        return (*self.categories, OTHER)

    @property
    def ratios(self) -> npt.NDArray[np.float64]:
        """Reference fraction of each category, ``__other__`` last."""
        total = max(int(self.counts.sum()), 1)
        return self.counts.astype(np.float64) / total


@dataclass(frozen=True)
class FeatureProfile:
    """One input feature: its name, type, reference distribution, missing share and calibrated thresholds."""

    name: str
    type: FeatureType
    reference: NumericalReference | CategoricalReference
    missing_ratio: float
    thresholds: dict[str, float] = field(default_factory=dict)
    """Drift method name -> threshold calibrated for the profile's window size."""


@dataclass(frozen=True)
class PredictionProfile:
    """What the model predicted on the reference data: a score distribution, a class distribution, or both."""

    score: NumericalReference | None
    classes: CategoricalReference | None
    score_thresholds: dict[str, float] = field(default_factory=dict)
    class_thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreCalibration:
    """P(positive | score) fitted on the reference labels (isotonic regression): linear between the knots,
    flat beyond them. The sidecar's estimated accuracy rests on it."""

    scores: npt.NDArray[np.float64]
    """Knots: strictly increasing scores."""
    probabilities: npt.NDArray[np.float64]
    """P(positive) at each knot, non-decreasing, in [0, 1]."""
    method: str = "isotonic"


@dataclass(frozen=True)
class Profile:
    """A complete reference profile. Build with :mod:`modelmonitor.sidecar.profile_build`, load with :func:`load`."""

    features: tuple[FeatureProfile, ...]
    prediction: PredictionProfile | None
    window_size: int
    """Rows in the live drift window the thresholds were calibrated for."""
    false_alarm_rate: float
    """Target share of same-distribution windows whose score crosses the threshold."""
    positive_class: str | None
    """The class counted as positive in the confusion counts (``tp``/``fp``/``tn``/``fn``)."""
    decision_threshold: float
    """A score at or above this is a positive prediction, when an event carries a score but no class."""
    group_attribute: str | None
    """The attribute whose values are the groups of the fairness metrics (a feature name or a side field)."""
    groups: tuple[str, ...]
    """Known group values (capped); others fall into ``__other__``. Empty: learned first-come up to the cap."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where the profile came from: file name, rows, build time."""
    task: Task = "binary"
    """binary (confusion counts of the positive class), multiclass (per-class outcomes) or regression (errors)."""
    calibration: ScoreCalibration | None = None
    """The score calibration for estimated accuracy (binary models with a score and reference labels)."""

    def feature(self, name: str) -> FeatureProfile:
        """The feature called ``name``; ``KeyError`` naming it if there is none."""
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"feature {name!r} is not in the profile")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in profile order (the order of positional feature rows)."""
        return tuple(f.name for f in self.features)


# --- JSON ------------------------------------------------------------------------------------------------------


def _round(value: float) -> float:
    # 10 significant digits keep the JSON small and every bound distinct for real data; bounds are re-checked
    # for strict increase on load.
    return float(f"{value:.10g}")


def _numerical_to_json(ref: NumericalReference) -> dict[str, Any]:
    return {
        "bounds": [_round(b) for b in ref.bounds],
        "counts": [int(c) for c in ref.counts],
        "sketch": [_round(v) for v in ref.sketch],
        "min": _round(ref.minimum),
        "max": _round(ref.maximum),
        "mean": _round(ref.mean),
        "std": _round(ref.std),
    }


def _categorical_to_json(ref: CategoricalReference) -> dict[str, Any]:
    return {
        "categories": list(ref.categories),
        "counts": [int(c) for c in ref.counts],
        "allowed": None if ref.allowed is None else sorted(ref.allowed),
    }


def to_json(profile: Profile) -> dict[str, Any]:
    """The profile as a JSON-ready dict (the on-disk format, ``version`` 1)."""
    features = []
    for f in profile.features:
        entry: dict[str, Any] = {"name": f.name, "type": f.type, "missing_ratio": _round(f.missing_ratio)}
        if isinstance(f.reference, NumericalReference):
            entry.update(_numerical_to_json(f.reference))
        else:
            entry.update(_categorical_to_json(f.reference))
        entry["thresholds"] = {k: _round(v) for k, v in f.thresholds.items()}
        features.append(entry)
    prediction: dict[str, Any] | None = None
    if profile.prediction is not None:
        p = profile.prediction
        prediction = {
            "score": None if p.score is None else _numerical_to_json(p.score),
            "classes": None if p.classes is None else _categorical_to_json(p.classes),
            "score_thresholds": {k: _round(v) for k, v in p.score_thresholds.items()},
            "class_thresholds": {k: _round(v) for k, v in p.class_thresholds.items()},
        }
    return {
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
        "source": profile.source,
        "window_size": profile.window_size,
        "false_alarm_rate": profile.false_alarm_rate,
        "positive_class": profile.positive_class,
        "decision_threshold": profile.decision_threshold,
        "group_attribute": profile.group_attribute,
        "groups": list(profile.groups),
        "features": features,
        "prediction": prediction,
        "task": profile.task,
        "calibration": None
        if profile.calibration is None
        else {
            "method": profile.calibration.method,
            # Not rounded: two close knots must stay distinct.
            "scores": [float(v) for v in profile.calibration.scores],
            "probabilities": [float(v) for v in profile.calibration.probabilities],
        },
    }


def save(profile: Profile, path: str | Path) -> None:
    """Write ``profile`` as JSON to ``path``."""
    Path(path).write_text(json.dumps(to_json(profile), indent=1) + "\n", encoding="utf-8")


def load(path: str | Path) -> Profile:
    """Read a profile from ``path`` (a file, e.g. a key of a mounted ConfigMap). Raises :class:`ProfileError`."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise ProfileError(f"{source}: cannot read the profile ({error.strerror or error})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProfileError(f"{source}: not JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    try:
        return from_json(document)
    except ProfileError as error:
        raise ProfileError(f"{source}: {error}") from None


class _Reader:
    """Typed access to one JSON object; every error names the dotted path of the field."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ProfileError(f"{where or 'profile'}: expected an object, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.where = where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if optional:
                return None
            raise ProfileError(f"{self._path(key)}: missing")
        value = self.data[key]
        # bool is an int in Python; a profile never means True by 1.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ProfileError(f"{self._path(key)}: expected {kind}, got a boolean")
        if not isinstance(value, kind):
            raise ProfileError(f"{self._path(key)}: expected {_kind_name(kind)}, got {type(value).__name__}")
        return value

    def number(self, key: str) -> float:
        value = float(self.get(key, (int, float)))
        if not math.isfinite(value):
            raise ProfileError(f"{self._path(key)}: must be a finite number")
        return value

    def numbers(self, key: str) -> npt.NDArray[np.float64]:
        values = self.get(key, list)
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ProfileError(f"{self._path(key)}: expected a list of numbers") from None
        if array.ndim != 1 or not np.isfinite(array).all():
            raise ProfileError(f"{self._path(key)}: expected a flat list of finite numbers")
        return array

    def thresholds(self, key: str) -> dict[str, float]:
        raw = self.get(key, dict, optional=True) or {}
        out: dict[str, float] = {}
        for name, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ProfileError(f"{self._path(key)}.{name}: expected a finite number")
            out[str(name)] = float(value)
        return out


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _numerical_from_json(r: _Reader) -> NumericalReference:
    bounds = r.numbers("bounds")
    if bounds.size == 0 or (bounds.size > 1 and not (np.diff(bounds) > 0).all()):
        raise ProfileError(f"{r.where}.bounds: must be a non-empty, strictly increasing list")
    counts = r.numbers("counts")
    if counts.size != bounds.size + 1 or (counts < 0).any():
        raise ProfileError(
            f"{r.where}.counts: expected {bounds.size + 1} non-negative counts (one per bound plus +Inf), "
            f"got {counts.size}"
        )
    sketch = np.sort(r.numbers("sketch"))
    return NumericalReference(
        bounds=bounds,
        counts=counts.astype(np.int64),
        sketch=sketch,
        minimum=r.number("min"),
        maximum=r.number("max"),
        mean=r.number("mean"),
        std=r.number("std"),
    )


def _categorical_from_json(r: _Reader) -> CategoricalReference:
    categories = r.get("categories", list)
    if not all(isinstance(c, str) for c in categories) or len(set(categories)) != len(categories):
        raise ProfileError(f"{r.where}.categories: expected a list of distinct strings")
    if OTHER in categories:
        raise ProfileError(f"{r.where}.categories: {OTHER!r} is reserved for the values beyond the cap")
    counts = r.numbers("counts")
    if counts.size != len(categories) + 1 or (counts < 0).any():
        raise ProfileError(
            f"{r.where}.counts: expected {len(categories) + 1} non-negative counts (one per category plus "
            f"{OTHER}), got {counts.size}"
        )
    allowed = r.get("allowed", list, optional=True)
    return CategoricalReference(
        categories=tuple(categories),
        counts=counts.astype(np.int64),
        allowed=None if allowed is None else frozenset(str(a) for a in allowed),
    )


def from_json(document: Any) -> Profile:
    """Validate and decode a profile document; :class:`ProfileError` names the first bad field."""
    top = _Reader(document, "")
    if top.get("format", str) != PROFILE_FORMAT:
        raise ProfileError(f"format: expected {PROFILE_FORMAT!r}, got {document.get('format')!r}")
    version = top.get("version", int)
    if version != PROFILE_VERSION:
        raise ProfileError(f"version: this sidecar reads profile version {PROFILE_VERSION}, got {version}")
    window_size = top.get("window_size", int)
    if window_size < 2:
        raise ProfileError(f"window_size: must be at least 2, got {window_size}")
    far = top.number("false_alarm_rate")
    if not 0 < far < 1:
        raise ProfileError(f"false_alarm_rate: must be between 0 and 1, got {far}")
    features: list[FeatureProfile] = []
    names: set[str] = set()
    for index, raw in enumerate(top.get("features", list)):
        r = _Reader(raw, f"features[{index}]")
        name = r.get("name", str)
        if name in names:
            raise ProfileError(f"features[{index}].name: {name!r} appears twice")
        if name in RESERVED_FEATURE_NAMES:
            raise ProfileError(f"features[{index}].name: {name!r} is reserved; rename the column")
        names.add(name)
        ftype = r.get("type", str)
        reference: NumericalReference | CategoricalReference
        if ftype == "numerical":
            reference = _numerical_from_json(r)
        elif ftype == "categorical":
            reference = _categorical_from_json(r)
        else:
            raise ProfileError(f"features[{index}].type: expected 'numerical' or 'categorical', got {ftype!r}")
        features.append(
            FeatureProfile(
                name=name,
                type=ftype,
                reference=reference,
                missing_ratio=r.number("missing_ratio"),
                thresholds=r.thresholds("thresholds"),
            )
        )
    if not features:
        raise ProfileError("features: the profile lists no feature")
    prediction = None
    raw_prediction = top.get("prediction", dict, optional=True)
    if raw_prediction is not None:
        p = _Reader(raw_prediction, "prediction")
        score = p.get("score", dict, optional=True)
        classes = p.get("classes", dict, optional=True)
        prediction = PredictionProfile(
            score=None if score is None else _numerical_from_json(_Reader(score, "prediction.score")),
            classes=None if classes is None else _categorical_from_json(_Reader(classes, "prediction.classes")),
            score_thresholds=p.thresholds("score_thresholds"),
            class_thresholds=p.thresholds("class_thresholds"),
        )
    groups = top.get("groups", list, optional=True) or []
    if not all(isinstance(g, str) for g in groups):
        raise ProfileError("groups: expected a list of strings")
    positive = top.get("positive_class", (str, int), optional=True)
    task = top.get("task", str, optional=True) or "binary"
    if task not in TASKS:
        raise ProfileError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    raw_calibration = top.get("calibration", dict, optional=True)
    calibration = None if raw_calibration is None else _calibration_from_json(_Reader(raw_calibration, "calibration"))
    return Profile(
        features=tuple(features),
        prediction=prediction,
        window_size=window_size,
        false_alarm_rate=far,
        positive_class=None if positive is None else str(positive),
        decision_threshold=top.number("decision_threshold"),
        group_attribute=top.get("group_attribute", str, optional=True),
        groups=tuple(groups),
        source=top.get("source", dict, optional=True) or {},
        task=task,
        calibration=calibration,
    )


def _calibration_from_json(r: _Reader) -> ScoreCalibration:
    method = r.get("method", str)
    if method != "isotonic":
        raise ProfileError(f"calibration.method: expected 'isotonic', got {method!r}")
    scores = r.numbers("scores")
    probabilities = r.numbers("probabilities")
    if scores.size == 0 or scores.size != probabilities.size:
        raise ProfileError("calibration: expected as many probabilities as scores, at least one")
    if scores.size > 1 and not (np.diff(scores) > 0).all():
        raise ProfileError("calibration.scores: must be strictly increasing")
    if (np.diff(probabilities) < 0).any() or probabilities.min() < 0 or probabilities.max() > 1:
        raise ProfileError("calibration.probabilities: must be non-decreasing and within [0, 1]")
    return ScoreCalibration(scores=scores, probabilities=probabilities, method=method)
