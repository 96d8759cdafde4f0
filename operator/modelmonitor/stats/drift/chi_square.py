"""Pearson chi-square test of homogeneity between reference and current counts.

The two count vectors form a ``2 x k`` contingency table (row 1: reference, row 2: current). With row totals
``R_r``, column totals ``C_i`` and grand total ``N``, the expected count is ``E_ri = R_r * C_i / N`` and::

    X^2 = sum_{r, i} (O_ri - E_ri)^2 / E_ri,    degrees of freedom = (k' - 1)

where ``k'`` is the number of bins that are non-empty on at least one side. Bins empty on both sides carry no
information and are dropped (their expected count is 0); a bin empty on one side only needs no epsilon, its
expected count is positive. No continuity (Yates) correction, so the result equals
``scipy.stats.chi2_contingency(table, correction=False)``. The p-value is ``P(chi2_{k'-1} >= X^2)``; with a
single non-empty bin there is nothing to test and the p-value is 1.

This is a two-sample test: unlike a goodness-of-fit test against the reference proportions, it accounts for
the reference being a sample too. Direction: the **p-value is low under drift** (the statistic is high). A
p-value alone flags trivial shifts at large ``n``: see ``modelmonitor.stats.calibration`` for the guard.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelmonitor.stats._checks import FloatArray
from modelmonitor.stats.drift._counts import count_pair, proportions


def chi_square(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> tuple[float, float]:
    """Chi-square homogeneity test of two count vectors: ``(statistic, p_value)``."""
    statistic, p_value = chi_square_columns(reference_counts, current_counts)
    return float(statistic), float(p_value)


def chi_square_columns(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Chi-square statistic and p-value per feature for 2-D ``(features, bins)`` counts (0-D for 1-D
    input)."""
    reference, current = count_pair(reference_counts, current_counts)
    # proportions() is only called for its check that neither side is empty.
    proportions(reference, "reference_counts")
    proportions(current, "current_counts")
    table = np.stack([reference, current], axis=-2)  # (..., 2, bins)
    row_totals = table.sum(axis=-1, keepdims=True)
    column_totals = table.sum(axis=-2, keepdims=True)
    expected = row_totals * column_totals / row_totals.sum(axis=-2, keepdims=True)
    occupied = column_totals > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        cells = np.where(occupied, (table - expected) ** 2 / expected, 0.0)
    statistic = cells.sum(axis=(-2, -1))
    dof = occupied.sum(axis=(-2, -1)) - 1
    from scipy.stats import chi2  # imported on use: scipy.stats costs ~60 MiB the operator rarely needs

    p_value = np.where(dof > 0, chi2.sf(statistic, np.maximum(dof, 1)), 1.0)
    return np.asarray(statistic, dtype=np.float64), np.asarray(p_value, dtype=np.float64)
