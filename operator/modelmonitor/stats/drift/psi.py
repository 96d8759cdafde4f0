"""Population Stability Index (PSI).

Formula, with ``p`` the reference and ``q`` the current bin proportions (counts over their totals), each
floored at ``eps`` (default ``1e-4``, see ``EMPTY_BIN_FLOOR``) so an empty bin neither divides by zero nor
takes the log of zero::

    PSI = sum_i (q_i - p_i) * ln(q_i / p_i)

Natural logarithm. Symmetric in ``p`` and ``q``; ``0`` when the proportions agree; unbounded above. Direction:
**higher is drift**. The folklore bands (``< 0.1`` stable, ``> 0.25`` shifted) ignore the window size; use a
threshold calibrated for the live window size instead (``modelmonitor.stats.calibration``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray
from modelmonitor.stats.drift._counts import EMPTY_BIN_FLOOR, count_pair, proportions, scalar_or_array


def psi(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike, *, eps: float = EMPTY_BIN_FLOOR) -> float:
    """PSI between two count vectors over the same bins (natural log, proportions floored at ``eps``)."""
    return float(psi_columns(reference_counts, current_counts, eps=eps))


def psi_columns(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike, *, eps: float = EMPTY_BIN_FLOOR
) -> float | FloatArray:
    """PSI per feature for 2-D ``(features, bins)`` counts (a float for 1-D input)."""
    if not 0 < eps < 1:
        raise ValueError(f"eps: expected 0 < eps < 1, got {eps!r}")
    reference, current = count_pair(reference_counts, current_counts)
    p = np.maximum(proportions(reference, "reference_counts"), eps)
    q = np.maximum(proportions(current, "current_counts"), eps)
    return scalar_or_array(np.sum((q - p) * np.log(q / p), axis=-1))
