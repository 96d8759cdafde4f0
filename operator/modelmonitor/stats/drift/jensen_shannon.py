"""Jensen-Shannon distance.

Formula, with ``p`` the reference and ``q`` the current bin proportions and ``m = (p + q) / 2``::

    JSD(p, q) = (KL(p || m) + KL(q || m)) / 2,   KL(a || b) = sum_i a_i * log_base(a_i / b_i)
    JS distance = sqrt(JSD)

**Log base 2 by default**, so the distance lies in ``[0, 1]`` (0: same distribution, 1: disjoint supports).
Tools disagree here: scipy's ``jensenshannon`` defaults to the natural log (range ``[0, sqrt(ln 2)]``) and
some drift tools report the divergence rather than its square root; pass ``base=math.e`` to match scipy's
default. Empty bins need no epsilon: ``0 * log(0 / x)`` is taken as 0, and ``m_i > 0`` wherever ``p_i > 0`` or
``q_i > 0``. Symmetric. Direction: **higher is drift**.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray
from modelmonitor.stats.drift._counts import count_pair, proportions, scalar_or_array


def js_distance(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike, base: float = 2.0) -> float:
    """Jensen-Shannon distance between two count vectors (log ``base``, default 2: in ``[0, 1]``)."""
    return float(js_distance_columns(reference_counts, current_counts, base=base))


def js_distance_columns(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike, base: float = 2.0
) -> float | FloatArray:
    """Jensen-Shannon distance per feature for 2-D ``(features, bins)`` counts (a float for 1-D input)."""
    if not (base > 0 and base != 1 and np.isfinite(base)):
        raise ValueError(f"base: expected a finite logarithm base > 0 and != 1, got {base!r}")
    reference, current = count_pair(reference_counts, current_counts)
    p = proportions(reference, "reference_counts")
    q = proportions(current, "current_counts")
    m = (p + q) / 2.0
    # Imported on use: scipy.special costs ~28 MiB that an operator without drift policies never needs.
    from scipy.special import rel_entr

    divergence = (rel_entr(p, m).sum(axis=-1) + rel_entr(q, m).sum(axis=-1)) / (2.0 * np.log(base))
    # Rounding can leave a divergence of -1e-17 for identical inputs; the true value is >= 0.
    return scalar_or_array(np.sqrt(np.maximum(divergence, 0.0)))
