"""Pure statistics shared by the sidecar and the operator: binning, drift, quality, fairness, calibration.

numpy and scipy only; no I/O, no global random state (functions that sample take a ``numpy.random.Generator``).
Methods, formulas, log bases, directions and the false-alarm calibration are described in docs/statistics.md.

Modules: :mod:`~modelmonitor.stats.binning` (reference-quantile bins, Prometheus ``le`` semantics),
:mod:`~modelmonitor.stats.drift` (drift methods and the ``METHODS`` registry),
:mod:`~modelmonitor.stats.quality` (accuracy, precision, recall, F1, fairness gaps),
:mod:`~modelmonitor.stats.calibration` (thresholds for the live window size, the large-sample guard),
:mod:`~modelmonitor.stats.probability` (calibrated probabilities from scores, for estimated accuracy).
"""

from modelmonitor.stats import binning, calibration, drift, probability, quality
from modelmonitor.stats.drift import METHODS, DriftMethod

__all__ = ["METHODS", "DriftMethod", "binning", "calibration", "drift", "probability", "quality"]
