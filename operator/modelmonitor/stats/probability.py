"""Calibrated probabilities from a model's scores: isotonic regression fitted on labeled reference rows.

A model's score is rarely the probability it claims to be. Fitted on the reference data's labels, the
calibration maps a score to the share of positives among reference rows with that score (non-decreasing in the
score, as isotonic regression guarantees), which is what confidence-based performance estimation (CBPE) needs:
the probability that each live prediction is correct, without its label.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def fit_isotonic(
    scores: npt.ArrayLike, positives: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Fit P(positive | score) by isotonic regression; returns the knots ``(scores, probabilities)``.

    Between knots the calibration is linear, outside them flat (`calibrated`). Only the knots where the fitted
    step function starts or ends a step are kept, so the calibration stays small whatever the reference size.

    Raises:
        ValueError: different lengths, non-finite scores, labels other than 0 and 1, or fewer than 2 rows.
    """
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positives, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"scores and labels: expected two flat arrays of one length, got {x.shape} and {y.shape}")
    if x.size < 2:
        raise ValueError(f"calibration needs at least 2 labeled rows, got {x.size}")
    if not np.isfinite(x).all():
        raise ValueError("scores: NaN or infinite values")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels: expected 0 (negative) or 1 (positive)")
    # Imported on use: only the sidecar's profile build fits a calibration, and scipy.optimize costs the operator
    # ~27 MiB it never needs.
    from scipy.optimize import isotonic_regression

    knots, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    shares = np.bincount(inverse, weights=y) / counts
    fitted = np.asarray(isotonic_regression(shares, weights=counts.astype(np.float64), increasing=True).x)
    keep = np.ones(knots.size, dtype=bool)
    if knots.size > 2:
        flat_both_sides = (fitted[1:-1] == fitted[:-2]) & (fitted[1:-1] == fitted[2:])
        keep[1:-1] = ~flat_both_sides
    return knots[keep], np.clip(fitted[keep], 0.0, 1.0)


def calibrated(
    knots: npt.NDArray[np.float64], probabilities: npt.NDArray[np.float64], scores: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """P(positive | score) for ``scores`` from a fitted calibration (NaN stays NaN)."""
    return np.interp(np.asarray(scores, dtype=np.float64), knots, probabilities)


def probability_correct(
    probability_positive: npt.NDArray[np.float64], predicted_positive: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """The probability that each prediction is right: p for a positive prediction, 1 - p for a negative one."""
    return np.where(predicted_positive == 1, probability_positive, 1.0 - probability_positive)
