"""Shared handling of raw samples for the sample-based drift methods (KS, Wasserstein).

Sample-based methods accept one feature as a 1-D array, or many features at once as a 2-D ``(rows, features)``
array. The reference side may be given pre-sorted as a :class:`SortedReference`, built once per profile, so a
live window only pays for its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray, as_float_array, require_finite, require_non_empty


@dataclass(frozen=True)
class SortedReference:
    """Reference samples sorted per feature, kept so each live window skips re-sorting the reference.

    Attributes:
        columns: ``(features, rows)`` float64, each row sorted ascending (one contiguous row per feature).
        std: per-feature population standard deviation (``ddof=0``), the scale of
            ``wasserstein_normalized``.
    """

    columns: FloatArray
    std: FloatArray

    @classmethod
    def from_samples(cls, reference: npt.ArrayLike) -> SortedReference:
        """Sort a 1-D (one feature) or 2-D ``(rows, features)`` finite reference sample."""
        columns = as_columns(reference, "reference")
        sorted_columns = np.sort(columns, axis=1)
        # A constant column's std computes as rounding noise (~1e-18), not 0; make it exactly 0.
        constant = sorted_columns[:, 0] == sorted_columns[:, -1]
        std = np.where(constant, 0.0, sorted_columns.std(axis=1))
        return cls(columns=sorted_columns, std=std)

    @property
    def n_features(self) -> int:
        """Number of features (columns of the original sample)."""
        return int(self.columns.shape[0])

    @property
    def n_rows(self) -> int:
        """Number of reference rows per feature."""
        return int(self.columns.shape[1])


def as_columns(samples: npt.ArrayLike, name: str) -> FloatArray:
    """A finite, non-empty 1-D or 2-D ``(rows, features)`` sample as a contiguous ``(features, rows)``
    array."""
    array = as_float_array(samples, name, ndim=(1, 2))
    require_non_empty(array, name)
    require_finite(array, name)
    if array.ndim == 1:
        return array.reshape(1, -1)
    return np.ascontiguousarray(array.T)


def sample_pair(
    reference: npt.ArrayLike | SortedReference, current: npt.ArrayLike
) -> tuple[SortedReference, FloatArray]:
    """The sorted reference and the ``(features, rows)`` current sample, checked to have the same features."""
    sorted_reference = reference if isinstance(reference, SortedReference) else SortedReference.from_samples(reference)
    columns = as_columns(current, "current")
    if columns.shape[0] != sorted_reference.n_features:
        raise ValueError(
            f"current: {columns.shape[0]} feature column(s), the reference has {sorted_reference.n_features}"
        )
    return sorted_reference, columns
