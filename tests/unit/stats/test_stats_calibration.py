"""The false-alarm study: calibrated thresholds keep their promise on null windows and still catch drift.

Setup (seeded): a reference of 50,000 rows from N(0, 1); live windows are drawn fresh from N(0, 1) (no drift)
or N(0.5, 1) (a 0.5 standard-deviation mean shift), never from the reference sample itself.

Slack: with a target rate of 1% over 1,000 independent null windows the number of alarms is Binomial(1000,
0.01) (mean 10, standard deviation 3.1) if the threshold were exact; the bootstrap threshold adds its own error
(the 99th percentile of 1,000 bootstrap scores). We allow at most 20 alarms (2%): for an exact threshold the
chance of more than 20 is 0.2%, and the data are seeded, so the test is deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest

from modelmonitor.stats import METHODS
from modelmonitor.stats.calibration import (
    bootstrap_scores,
    calibrate_threshold,
    cramers_v,
    guarded_p_value_drift,
    score_windows,
)
from modelmonitor.stats.drift import chi_square, ks

TARGET = 0.01
WINDOWS = 1000
MAX_FALSE_ALARMS = 20


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.random.default_rng(20260101).normal(size=50_000)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_calibrated_threshold_fires_at_most_at_the_target_rate_on_100_row_windows(
    method: str, reference: np.ndarray
) -> None:
    rng = np.random.default_rng(1)
    threshold = calibrate_threshold(method, reference, 100, false_alarm_rate=TARGET, n_boot=1000, rng=rng)
    null_windows = rng.normal(size=(WINDOWS, 100))
    alarms = int(np.sum(METHODS[method].is_drift(score_windows(method, reference, null_windows), threshold)))
    assert alarms <= MAX_FALSE_ALARMS, f"{method}: {alarms} false alarms in {WINDOWS} null windows"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_calibrated_threshold_catches_a_half_sd_shift_in_1000_row_windows(method: str, reference: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    threshold = calibrate_threshold(method, reference, 1000, false_alarm_rate=TARGET, n_boot=1000, rng=rng)
    shifted = rng.normal(0.5, 1.0, size=(WINDOWS, 1000))
    caught = float(np.mean(METHODS[method].is_drift(score_windows(method, reference, shifted), threshold)))
    assert caught >= 0.95, f"{method}: caught {caught:.1%} of shifted windows"


def test_a_fixed_threshold_of_0_1_fires_on_many_undrifted_100_row_windows(reference: np.ndarray) -> None:
    # The anchor lesson: Evidently's default (normalized Wasserstein > 0.1) ignores the window size.
    rng = np.random.default_rng(3)
    scores = score_windows("wasserstein_normalized", reference, rng.normal(size=(WINDOWS, 100)))
    assert np.mean(scores > 0.1) > 0.3
    assert calibrate_threshold("wasserstein_normalized", reference, 100, rng=rng) > 0.2


def test_thresholds_shrink_with_the_window_and_are_reproducible(reference: np.ndarray) -> None:
    small = calibrate_threshold("psi", reference, 100, rng=np.random.default_rng(5))
    again = calibrate_threshold("psi", reference, 100, rng=np.random.default_rng(5))
    large = calibrate_threshold("psi", reference, 10_000, rng=np.random.default_rng(5))
    assert small == again
    assert large < small / 10  # PSI of a null window scales like bins / window size


def test_bootstrap_of_counts_matches_resampling_rows(reference: np.ndarray) -> None:
    # The multinomial shortcut must give the same score distribution as resampling rows and binning them.
    rng = np.random.default_rng(6)
    shortcut = bootstrap_scores("jensen_shannon", reference, 200, n_boot=2000, rng=rng)
    rows = reference[rng.integers(0, reference.size, size=(2000, 200))]
    resampled = score_windows("jensen_shannon", reference, rows)
    assert np.quantile(shortcut, [0.5, 0.9, 0.99]) == pytest.approx(np.quantile(resampled, [0.5, 0.9, 0.99]), rel=0.08)


def test_large_sample_guard_ignores_trivial_shifts_but_not_real_ones() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(size=200_000)
    trivial = rng.normal(0.03, 1.0, size=200_000)
    statistic, p_value = ks(reference, trivial)
    assert p_value < 0.01  # "significant" ...
    assert not guarded_p_value_drift(p_value, 0.01, statistic)  # ... but D < 0.1: not drift
    statistic, p_value = ks(reference, rng.normal(0.5, 1.0, size=200_000))
    assert guarded_p_value_drift(p_value, 0.01, statistic)

    reference_counts, trivial_counts = np.array([50_000, 50_000]), np.array([49_000, 51_000])
    assert chi_square(reference_counts, trivial_counts)[1] < 0.01
    assert cramers_v(reference_counts, trivial_counts) < 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "nope"}, "method: unknown drift method 'nope'"),
        ({"window_size": 0}, "window_size: expected a positive integer"),
        ({"false_alarm_rate": 0.7}, "false_alarm_rate"),
        ({"n_boot": 50}, "n_boot: 50 bootstrap windows cannot resolve"),
        ({"rng": 42}, "rng: expected a numpy.random.Generator"),
    ],
)
def test_bad_calibration_requests_are_refused(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "method": "psi",
        "reference": np.arange(100.0),
        "window_size": 10,
        "rng": np.random.default_rng(0),
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        calibrate_threshold(**arguments)  # type: ignore[arg-type]
