"""Drift between a reference (training) distribution and a live window.

Count-based methods (PSI, Jensen-Shannon, Hellinger, chi-square, L-infinity) read count vectors over shared
bins, so counts summed over every replica's histogram give the fleet-wide score. Sample-based methods (KS,
Wasserstein) read raw values. Every method has a ``*_columns`` form that scores many features at once.
Prediction drift is the same methods applied to the prediction scores (or class counts).
"""

from modelmonitor.stats.drift._counts import EMPTY_BIN_FLOOR
from modelmonitor.stats.drift._samples import SortedReference, SortedSample
from modelmonitor.stats.drift.chi_square import chi_square, chi_square_columns
from modelmonitor.stats.drift.hellinger import hellinger, hellinger_columns
from modelmonitor.stats.drift.jensen_shannon import js_distance, js_distance_columns
from modelmonitor.stats.drift.ks import ks, ks_columns, ks_p_value, ks_p_value_fast
from modelmonitor.stats.drift.linf import linf, linf_columns
from modelmonitor.stats.drift.psi import psi, psi_columns
from modelmonitor.stats.drift.registry import METHODS, DriftMethod
from modelmonitor.stats.drift.wasserstein import (
    wasserstein,
    wasserstein_columns,
    wasserstein_normalized,
    wasserstein_normalized_columns,
)

__all__ = [
    "EMPTY_BIN_FLOOR",
    "METHODS",
    "DriftMethod",
    "SortedReference",
    "SortedSample",
    "chi_square",
    "chi_square_columns",
    "hellinger",
    "hellinger_columns",
    "js_distance",
    "js_distance_columns",
    "ks",
    "ks_columns",
    "ks_p_value",
    "ks_p_value_fast",
    "linf",
    "linf_columns",
    "psi",
    "psi_columns",
    "wasserstein",
    "wasserstein_columns",
    "wasserstein_normalized",
    "wasserstein_normalized_columns",
]
