"""Turn rows of feature values (JSON-decoded Python objects) into the column arrays the monitor ingests.

Rows come from push events, from a proxied KServe / Open Inference Protocol payload, or from the in-process API.
The work is done a column at a time with numpy so a batch of 100,000 rows costs milliseconds, with a per-value
slow path only for columns that hold something unusual (None, strings in a numerical column, nested values).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from modelmonitor.sidecar.datafiles import canonical_category
from modelmonitor.sidecar.profile import CategoricalReference, Profile

MISSING_CODE = -1
"""Category code of a missing value (absent, null)."""
INVALID_CODE = -2
"""Category code of a value of the wrong type (an object or list where a category was expected)."""


class BatchError(ValueError):
    """A batch that cannot be ingested; ``reason`` is the ``modelmonitor_events_rejected_total`` label value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class FeatureColumns:
    """Feature values of one batch, columnar, with the data-quality counts found while encoding.

    Attributes:
        numerical: ``(rows, numerical features)`` float64; NaN where a value is missing or unusable, +-inf kept
            (counted as ``non_finite`` violations at ingest, never binned).
        categorical: ``(rows, categorical features)`` int32 codes into the feature's categories; the code equal to
            the number of categories is ``__other__``; ``MISSING_CODE`` / ``INVALID_CODE`` as above.
        missing: per profile feature, values absent or null (NaN too, where it means missing).
        type_violations: per profile feature, values of the wrong type (text for a number, nested values).
        unseen: per profile feature, categories never seen in the reference.
        nan_literals: per profile feature, explicit NaN numbers (push mode refuses them; proxy mode counts them
            as missing).
        unknown_features: names not in the profile, with how many rows carried each.
        group_values: the raw group attribute value per row when the group attribute is a feature, else None.
    """

    rows: int
    numerical: npt.NDArray[np.float64]
    categorical: npt.NDArray[np.int32]
    missing: npt.NDArray[np.int64]
    type_violations: npt.NDArray[np.int64]
    unseen: npt.NDArray[np.int64]
    nan_literals: npt.NDArray[np.int64]
    unknown_features: dict[str, int] = field(default_factory=dict)
    group_values: list[Any] | None = None


class FeatureEncoder:
    """Encodes feature rows against one profile (the lookups are built once, here)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.names = profile.feature_names
        self.name_set = frozenset(self.names)
        self.numerical_index = [i for i, f in enumerate(profile.features) if f.type == "numerical"]
        self.categorical_index = [i for i, f in enumerate(profile.features) if f.type == "categorical"]
        self._lookups = [
            _category_lookup(profile.features[i].reference)  # type: ignore[arg-type]
            for i in self.categorical_index
        ]
        group = profile.group_attribute
        self.group_position = self.names.index(group) if group in self.name_set else None

    # --- rows of objects / lists ---------------------------------------------------------------------------

    def encode_rows(self, rows: Sequence[Any], *, where: str = "rows[{index}]") -> FeatureColumns:
        """Encode rows that are each a mapping (feature name -> value) or a list in profile order.

        Raises :class:`BatchError` (reason ``wrong_shape``) when a row is neither, or a list row has the wrong
        length; the message names the row (``where`` formats its position, e.g. ``"events[{index}].features"``).
        """
        n = len(rows)
        width = len(self.names)
        if n and isinstance(rows[0], Mapping):
            for index, row in enumerate(rows) if not all(type(r) is dict for r in rows) else ():
                if not isinstance(row, Mapping):
                    raise BatchError(
                        "wrong_shape", f"{where.format(index=index)}: expected an object of feature values"
                    )
            present: set[str] = set().union(*rows)
            unknown_names = present - self.name_set
            unknown = {u: sum(1 for r in rows if u in r) for u in sorted(unknown_names)} if unknown_names else {}
            columns: list[Any]
            if len(present & self.name_set) == width and all(len(r) == width for r in rows) and not unknown:
                # Every row has every feature (the usual case): one C-level call per row, then a transpose.
                getter = itemgetter(*self.names)
                columns = list(zip(*map(getter, rows), strict=True)) if width > 1 else [[getter(r) for r in rows]]
                if not columns:
                    columns = [[] for _ in self.names]
            else:
                columns = [[r.get(name) for r in rows] for name in self.names]
        else:
            for index, row in enumerate(rows):
                if not isinstance(row, list | tuple):
                    raise BatchError(
                        "wrong_shape",
                        f"{where.format(index=index)}: expected an object of feature values or a list of {width} "
                        f"values, "
                        f"got {type(row).__name__}",
                    )
                if len(row) != width:
                    raise BatchError(
                        "wrong_shape",
                        f"{where.format(index=index)}: {len(row)} values, the profile has {width} features "
                        f"({', '.join(self.names[:5])}{', ...' if width > 5 else ''})",
                    )
            unknown = {}
            columns = [list(c) for c in zip(*rows, strict=True)] if n else [[] for _ in self.names]
        return self._encode_columns(n, columns, unknown)

    def encode_columns(self, columns: Mapping[str, Any], rows: int) -> FeatureColumns:
        """Encode named columns (name -> sequence or 1-D array), e.g. from the in-process API or OIP v2 inputs."""
        unknown = {name: rows for name in columns if name not in self.name_set}
        ordered: list[Any] = []
        for name in self.names:
            column = columns.get(name)
            if column is None:
                ordered.append([None] * rows)
                continue
            if len(column) != rows:
                raise BatchError("wrong_shape", f"features[{name!r}]: {len(column)} values, expected {rows}")
            ordered.append(column)
        return self._encode_columns(rows, ordered, unknown)

    def encode_matrix(self, matrix: npt.ArrayLike) -> FeatureColumns:
        """Encode a 2-D numeric array whose columns are the profile features in order (NaN = missing)."""
        array = np.asarray(matrix)
        if array.ndim != 2 or array.shape[1] != len(self.names):
            raise BatchError(
                "wrong_shape", f"features: expected shape (rows, {len(self.names)}), got {tuple(array.shape)}"
            )
        if self.categorical_index or array.dtype.kind not in "iuf":
            # A mixed table: go column by column so categories get their lookups.
            return self._encode_columns(array.shape[0], [array[:, j] for j in range(array.shape[1])], {})
        values = array.astype(np.float64, copy=False)
        rows = values.shape[0]
        missing = np.isnan(values).sum(axis=0).astype(np.int64)
        zeros = np.zeros(len(self.names), dtype=np.int64)
        return FeatureColumns(
            rows=rows,
            numerical=values,
            categorical=np.empty((rows, 0), dtype=np.int32),
            missing=missing,
            type_violations=zeros,
            unseen=zeros.copy(),
            nan_literals=zeros.copy(),
        )

    # --- per column --------------------------------------------------------------------------------------

    def _encode_columns(self, n: int, columns: list[Any], unknown: dict[str, int]) -> FeatureColumns:
        width = len(self.names)
        missing = np.zeros(width, dtype=np.int64)
        type_violations = np.zeros(width, dtype=np.int64)
        unseen = np.zeros(width, dtype=np.int64)
        nan_literals = np.zeros(width, dtype=np.int64)
        numerical = np.empty((n, len(self.numerical_index)), dtype=np.float64)
        for out, i in enumerate(self.numerical_index):
            values, n_missing, n_type, n_nan = _numerical_column(columns[i])
            numerical[:, out] = values
            missing[i], type_violations[i], nan_literals[i] = n_missing, n_type, n_nan
        categorical = np.empty((n, len(self.categorical_index)), dtype=np.int32)
        for out, i in enumerate(self.categorical_index):
            codes, n_unseen = _categorical_column(columns[i], self._lookups[out])
            categorical[:, out] = codes
            missing[i] = int(np.count_nonzero(codes == MISSING_CODE))
            type_violations[i] = int(np.count_nonzero(codes == INVALID_CODE))
            unseen[i] = n_unseen
        groups = None if self.group_position is None else list(columns[self.group_position])
        return FeatureColumns(
            rows=n,
            numerical=numerical,
            categorical=categorical,
            missing=missing,
            type_violations=type_violations,
            unseen=unseen,
            nan_literals=nan_literals,
            unknown_features=unknown,
            group_values=groups,
        )


@dataclass(frozen=True)
class _Lookup:
    codes: dict[Any, int]
    other: int
    allowed: frozenset[str] | None


def _category_lookup(reference: CategoricalReference) -> _Lookup:
    other = len(reference.categories)
    codes: dict[Any, int] = {None: MISSING_CODE}
    if reference.allowed is not None:
        # Seen in training but beyond the cap: not a violation, just __other__.
        codes.update(dict.fromkeys(reference.allowed, other))
    codes.update({c: i for i, c in enumerate(reference.categories)})
    return _Lookup(codes=codes, other=other, allowed=reference.allowed)


_UNRESOLVED = -99


def _categorical_column(values: Iterable[Any], lookup: _Lookup) -> tuple[npt.NDArray[np.int32], int]:
    column = values if isinstance(values, list | tuple) else list(values)
    get = lookup.codes.get
    try:
        codes = [get(v, _UNRESOLVED) for v in column]
    except TypeError:  # an unhashable value (list, object) somewhere: resolve one by one
        codes = [_UNRESOLVED] * len(column)
    array = np.fromiter(codes, dtype=np.int32, count=len(codes))
    unseen = 0
    for index in np.flatnonzero(array == _UNRESOLVED):
        value = column[index]
        if isinstance(value, dict | list | tuple):
            array[index] = INVALID_CODE
            continue
        if isinstance(value, float) and math.isnan(value):
            array[index] = MISSING_CODE
            continue
        text = canonical_category(value)
        code = lookup.codes.get(text)
        if code is None:
            code = lookup.other
            if lookup.allowed is not None:
                unseen += 1
        array[index] = code
    return array, unseen


def _numerical_column(values: Any) -> tuple[npt.NDArray[np.float64], int, int, int]:
    """(values with NaN for missing/unusable, missing, type violations, NaN literals)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        array = values.astype(np.float64, copy=False)
        n_nan = int(np.count_nonzero(np.isnan(array)))
        # From an array, NaN is how a missing value is written: missing, not a NaN literal.
        return array, n_nan, 0, 0
    try:
        fast = np.array(values)
    except ValueError:  # ragged nested values
        fast = None
    if fast is not None and fast.ndim == 1 and fast.dtype.kind in "iuf":
        array = fast.astype(np.float64, copy=False)
        n_nan = int(np.count_nonzero(np.isnan(array)))
        return array, n_nan, 0, n_nan
    # Slow path: None, text, booleans or nested values mixed in.
    column = list(values)
    array = np.empty(len(column), dtype=np.float64)
    n_missing = n_type = n_nan = 0
    for index, value in enumerate(column):
        if value is None:
            array[index] = math.nan
            n_missing += 1
        elif isinstance(value, int | float | np.integer | np.floating):  # true / false read as 1 / 0, like numpy
            number = float(value)
            array[index] = number
            if math.isnan(number):
                n_missing += 1
                n_nan += 1
        else:
            array[index] = math.nan
            n_type += 1
    return array, n_missing, n_type, n_nan
