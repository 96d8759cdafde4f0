"""L-infinity (Chebyshev) distance between category proportions.

Formula, with ``p`` the reference and ``q`` the current category proportions::

    Linf(p, q) = max_i |p_i - q_i|

In ``[0, 1]``: the largest change in the share of any one category (e.g. 0.2 = some category gained or lost
20 percentage points). No epsilon needed. Symmetric. Direction: **higher is drift**. Meant for categorical
features (counts per category, with unseen categories in an ``__other__`` bucket).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray
from modelmonitor.stats.drift._counts import count_pair, proportions, scalar_or_array


def linf(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """Largest absolute difference in proportion over the categories (or bins), in ``[0, 1]``."""
    return float(linf_columns(reference_counts, current_counts))


def linf_columns(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float | FloatArray:
    """L-infinity distance per feature for 2-D ``(features, categories)`` counts (a float for 1-D input)."""
    reference, current = count_pair(reference_counts, current_counts)
    p = proportions(reference, "reference_counts")
    q = proportions(current, "current_counts")
    return scalar_or_array(np.max(np.abs(p - q), axis=-1))
