"""Shared handling of raw samples for the sample-based drift methods (KS, Wasserstein).

Sample-based methods accept one feature as a 1-D array, or many features at once as a 2-D ``(rows, features)``
array. The reference side may be given pre-sorted as a :class:`SortedReference`, built once per profile, so a
live window only pays for its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray, IntArray, as_float_array, require_finite, require_non_empty


@dataclass(frozen=True)
class SortedSample:
    """A sample sorted per feature. Built once for the reference (per profile), so each live window skips
    re-sorting it; built for a window when several sample-based methods share one sort of it.

    Attributes:
        columns: ``(features, rows)`` float64, each row sorted ascending (one contiguous row per feature).
        std: per-feature population standard deviation (``ddof=0``), the scale of
            ``wasserstein_normalized``.
    """

    columns: FloatArray

    @classmethod
    def from_samples(cls, samples: npt.ArrayLike, name: str = "reference") -> SortedSample:
        """Sort a 1-D (one feature) or 2-D ``(rows, features)`` finite sample (``name`` is used in errors)."""
        columns = as_columns(samples, name)
        sorted_columns = np.sort(columns, axis=1)
        return cls(columns=sorted_columns)

    @cached_property
    def std(self) -> FloatArray:
        """Per-feature population standard deviation (``ddof=0``), computed on first use."""
        # A constant column's std computes as rounding noise (~1e-18), not 0; make it exactly 0.
        constant = self.columns[:, 0] == self.columns[:, -1]
        return np.where(constant, 0.0, self.columns.std(axis=1))

    def quantile_edges(self, n_bins: int) -> list[FloatArray]:
        """Per-feature bin bounds equal to ``binning.quantile_edges`` (``inverted_cdf``), read off the sorted
        columns instead of partitioning the data again."""
        if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:
            raise ValueError(f"n_bins: expected an integer >= 2, got {n_bins!r}")
        n = self.n_rows
        # inverted_cdf: the smallest value with F(x) >= i/n_bins, the ceil(i*n/n_bins)-th order statistic.
        ranks = -(-np.arange(1, n_bins, dtype=np.int64) * n // n_bins)
        picked = self.columns[:, ranks - 1]
        return [np.unique(row) for row in picked]

    def bin_counts(self, edges: list[FloatArray]) -> list[IntArray]:
        """Per-feature ``le`` bin counts (as ``binning.bin_counts``), from a binary search of the bounds only."""
        if len(edges) != self.n_features:
            raise ValueError(f"edges: {len(edges)} bound arrays for {self.n_features} features")
        counts = []
        for column, bounds in zip(self.columns, edges, strict=True):
            cumulative = np.searchsorted(column, np.asarray(bounds, dtype=np.float64), side="right")
            counts.append(np.diff(np.concatenate([[0], cumulative, [column.size]])).astype(np.int64))
        return counts

    @property
    def n_features(self) -> int:
        """Number of features (columns of the original sample)."""
        return int(self.columns.shape[0])

    @property
    def n_rows(self) -> int:
        """Number of rows per feature."""
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


#: The name used where the sorted sample is the reference.
SortedReference = SortedSample


def sample_pair(
    reference: npt.ArrayLike | SortedSample, current: npt.ArrayLike | SortedSample
) -> tuple[SortedSample, SortedSample]:
    """Both samples sorted per feature (sorting only what is not sorted yet), checked to match in features."""
    sorted_reference = reference if isinstance(reference, SortedSample) else SortedSample.from_samples(reference)
    sorted_current = current if isinstance(current, SortedSample) else SortedSample.from_samples(current, "current")
    if sorted_current.n_features != sorted_reference.n_features:
        raise ValueError(
            f"current: {sorted_current.n_features} feature column(s), the reference has {sorted_reference.n_features}"
        )
    return sorted_reference, sorted_current
