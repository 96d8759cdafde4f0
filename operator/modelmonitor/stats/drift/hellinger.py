"""Hellinger distance.

Formula, with ``p`` the reference and ``q`` the current bin proportions::

    H(p, q) = sqrt(1 - sum_i sqrt(p_i * q_i)) = ||sqrt(p) - sqrt(q)||_2 / sqrt(2)

In ``[0, 1]`` (0: same distribution, 1: disjoint supports). No logarithm and no epsilon: an empty bin simply
contributes ``sqrt(0 * q_i) = 0`` to the overlap. Symmetric. Direction: **higher is drift**.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray
from modelmonitor.stats.drift._counts import count_pair, proportions, scalar_or_array


def hellinger(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """Hellinger distance between two count vectors, in ``[0, 1]``."""
    return float(hellinger_columns(reference_counts, current_counts))


def hellinger_columns(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float | FloatArray:
    """Hellinger distance per feature for 2-D ``(features, bins)`` counts (a float for 1-D input)."""
    reference, current = count_pair(reference_counts, current_counts)
    p = proportions(reference, "reference_counts")
    q = proportions(current, "current_counts")
    # The difference-of-roots form is exact near 0, where 1 - sum(sqrt(p q)) would cancel catastrophically.
    distance = np.sqrt(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=-1) / 2.0)
    return scalar_or_array(np.minimum(distance, 1.0))
