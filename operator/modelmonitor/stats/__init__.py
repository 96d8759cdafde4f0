"""Pure statistics shared by the sidecar and the operator: binning, drift, quality, fairness, calibration.

numpy and scipy only; no I/O, no global random state (functions that sample take a
``numpy.random.Generator``). Methods, formulas, log bases, directions and the false-alarm calibration are
described in docs/statistics.md.
"""
