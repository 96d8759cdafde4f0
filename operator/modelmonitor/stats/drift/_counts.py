"""Shared handling of count vectors for the count-based drift methods.

Every count-based method accepts either one pair of 1-D count vectors (one feature) or a pair of 2-D
``(features, bins)`` arrays (many features at once; the methods are vectorized over the last axis).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray

#: Floor applied to bin proportions by the methods that divide by or take the log of a proportion (PSI).
#: 1e-4 is the floor Evidently and most PSI write-ups use, so scores stay comparable with theirs; it caps the
#: contribution of one bin seen on one side only at ``|p - q| * ln(p / 1e-4)`` (about 9.2 * |p - q|).
EMPTY_BIN_FLOOR = 1e-4


def count_pair(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validate two count arrays of the same shape; return them as float64.

    Raises ``ValueError`` naming the argument when shapes differ, a count is negative or not finite, or a side
    has no observation at all (a distribution of nothing has no drift; the caller reports "no data").
    """
    reference = _as_counts(reference_counts, "reference_counts")
    current = _as_counts(current_counts, "current_counts")
    if reference.shape != current.shape:
        raise ValueError(
            f"current_counts: shape {current.shape} differs from reference_counts shape {reference.shape}; "
            "both must be counted over the same bins"
        )
    if reference.shape[-1] < 1:
        raise ValueError("reference_counts: no bins")
    return reference, current


def proportions(counts: FloatArray, name: str) -> FloatArray:
    """Counts divided by their total along the last axis; refuses an all-zero vector."""
    totals = counts.sum(axis=-1, keepdims=True)
    if (totals <= 0).any():
        raise ValueError(f"{name}: all counts are zero; there is nothing to compare (report no data instead)")
    return np.asarray(counts / totals, dtype=np.float64)


def scalar_or_array(values: FloatArray) -> float | FloatArray:
    """A Python float for a single feature, the per-feature array otherwise."""
    return float(values) if values.ndim == 0 else values


def _as_counts(counts: npt.ArrayLike, name: str) -> FloatArray:
    try:
        array = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: expected counts, got {type(counts).__name__} ({error})") from None
    if array.ndim not in (1, 2):
        raise ValueError(f"{name}: expected a 1-D count vector or a 2-D (features, bins) array, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: counts must be finite")
    if (array < 0).any():
        raise ValueError(f"{name}: counts must be >= 0")
    return array
