"""Data quality checks: missing values, type, range and schema violations, unseen categories.

Pure functions over arrays, lists and dicts, so the sidecar can count violations per event batch and export
them as counters (``modelmonitor_feature_missing_total``, ``modelmonitor_schema_violations_total``). Rates are
NaN when nothing was observed (no data, not "no violations").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "FeatureSchema",
    "SchemaReport",
    "check_records",
    "is_missing",
    "missing_count",
    "missing_rate",
    "range_violations",
    "type_violations",
    "unseen_categories",
]

FeatureKind = Literal["numerical", "categorical"]
ViolationKind = Literal["type", "range", "unseen_category", "unknown_feature"]


def is_missing(value: object) -> bool:
    """Whether one value counts as missing: ``None`` or a float NaN. (Infinities are not missing: a range
    violation catches them.)"""
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def missing_count(values: Iterable[object] | np.ndarray[Any, Any]) -> int:
    """Number of missing values (``None`` or NaN)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return int(np.count_nonzero(np.isnan(values)))
    return sum(1 for value in values if is_missing(value))


def missing_rate(values: Sequence[object] | np.ndarray[Any, Any]) -> float:
    """Share of missing values; NaN when there is no value at all."""
    total = len(values)
    return missing_count(values) / total if total else math.nan


def _is_number(value: object) -> bool:
    # bool is an int subclass in Python, but True is not a valid numerical feature value.
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def type_violations(values: Iterable[object], kind: FeatureKind) -> int:
    """Number of present (non-missing) values of the wrong type for a ``numerical`` or ``categorical`` feature.

    Numerical features take ints and floats (not booleans, not numeric strings: a string means the client
    serialised the feature differently from training). Categorical features take strings, ints and booleans.
    """
    if kind == "numerical":
        return sum(1 for value in values if not is_missing(value) and not _is_number(value))
    if kind == "categorical":
        return sum(
            1
            for value in values
            if not is_missing(value) and not isinstance(value, str | int | bool | np.integer | np.bool_)
        )
    raise ValueError(f"kind: expected 'numerical' or 'categorical', got {kind!r}")


def range_violations(values: np.ndarray[Any, Any] | Sequence[float], minimum: float, maximum: float) -> int:
    """Number of numbers outside ``[minimum, maximum]`` (infinities included; NaN is missing, not a violation)."""
    if not minimum <= maximum:
        raise ValueError(f"minimum: {minimum} is greater than maximum {maximum}")
    array = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return int(np.count_nonzero((array < minimum) | (array > maximum)))


def unseen_categories(values: Iterable[object], known: Iterable[object]) -> dict[object, int]:
    """Present values not among the ``known`` reference categories, with how often each was seen."""
    known_set = set(known)
    unseen: dict[object, int] = {}
    for value in values:
        if not is_missing(value) and value not in known_set:
            unseen[value] = unseen.get(value, 0) + 1
    return unseen


@dataclass(frozen=True)
class FeatureSchema:
    """What the reference says one feature looks like.

    Attributes:
        kind: ``numerical`` or ``categorical``.
        minimum: smallest allowed number (numerical; ``-inf`` for no bound). Usually the reference minimum
            widened by a margin, chosen when the profile is built.
        maximum: largest allowed number (numerical; ``+inf`` for no bound).
        categories: the reference categories (categorical); others are ``unseen_category`` violations.
    """

    kind: FeatureKind
    minimum: float = -math.inf
    maximum: float = math.inf
    categories: frozenset[object] = frozenset()

    def __post_init__(self) -> None:
        if self.kind not in ("numerical", "categorical"):
            raise ValueError(f"kind: expected 'numerical' or 'categorical', got {self.kind!r}")
        if not self.minimum <= self.maximum:
            raise ValueError(f"minimum: {self.minimum} is greater than maximum {self.maximum}")


@dataclass
class SchemaReport:
    """Counts from checking a batch of records against a schema.

    Attributes:
        observations: per feature, records that had the feature (present or explicitly missing).
        missing: per feature, missing values (absent key, ``None`` or NaN).
        violations: per ``(feature, kind)``, violations of that kind. ``unknown_feature`` is keyed by the
            unknown name as sent; callers should not turn those names into metric labels (unbounded).
    """

    observations: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    violations: dict[tuple[str, ViolationKind], int] = field(default_factory=dict)

    def add_violation(self, feature: str, kind: ViolationKind) -> None:
        """Count one violation."""
        self.violations[(feature, kind)] = self.violations.get((feature, kind), 0) + 1

    def violation_rate(self, feature: str) -> float:
        """Violations of a known feature over its observations; NaN when it was never observed."""
        total = self.observations.get(feature, 0)
        count = sum(n for (name, _), n in self.violations.items() if name == feature)
        return count / total if total else math.nan


def check_records(records: Iterable[Mapping[str, object]], schema: Mapping[str, FeatureSchema]) -> SchemaReport:
    """Check every record (feature name -> value) against ``schema``.

    A feature absent from a record counts as missing; a key not in the schema is an ``unknown_feature``; a
    present value is checked for type, then range (numerical) or category (categorical). One value has at most
    one violation: a wrong type is not also out of range.
    """
    report = SchemaReport(observations=dict.fromkeys(schema, 0), missing=dict.fromkeys(schema, 0), violations={})
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"records[{index}]: expected a mapping of feature name to value")
        for name in record:
            if name not in schema:
                report.add_violation(str(name), "unknown_feature")
        for name, feature in schema.items():
            report.observations[name] += 1
            value = record.get(name)
            if is_missing(value):
                report.missing[name] += 1
            elif feature.kind == "numerical":
                if not _is_number(value):
                    report.add_violation(name, "type")
                elif not feature.minimum <= float(value) <= feature.maximum:  # type: ignore[arg-type]
                    report.add_violation(name, "range")
            elif not isinstance(value, str | int | bool | np.integer | np.bool_):
                report.add_violation(name, "type")
            elif feature.categories and value not in feature.categories:
                report.add_violation(name, "unseen_category")
    return report
