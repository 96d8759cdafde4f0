"""Sequential detection: a one-sided CUSUM on a standardized signal, its boundary from a false-alarm budget in time.

A policy tests each window on its own; at one evaluation every 30 s even a 1% false-alarm rate per evaluation
makes dozens of false breaches a day, and a small persistent shift never crosses a per-window threshold. A
CUSUM accumulates the evidence instead (Page 1954)::

    S_0 = 0,    S_t = min(max(0, S_(t-1) + z_t - k), cap)        alarm while S_t > h

``z_t`` is the signal on a standard normal scale (``N(0, 1)`` while nothing changed): for a drift signal the
probit of its smallest p-value adjusted for the features compared, for any other signal
``(value - referenceLevel) / standardDeviation``, signed so that "worse" is positive. ``k`` (the allowance) is
half the shift to detect fastest, in standard deviations: ``0.5`` for drift signals, ``|threshold -
referenceLevel| / (2 standardDeviation)`` otherwise. The signal is folded in once per policy window, on windows
that do not overlap (overlapping windows would feed the sum correlated values and break its false-alarm law).

The boundary ``h`` comes from the user's budget "at most one false alarm per ``falseAlarmEvery``": the expected
number of updates before a false alarm (the in-control average run length, ``falseAlarmEvery / window``) is
Siegmund's approximation ``ARL0(h, k) = (exp(2 k b) - 2 k b - 1) / (2 k^2)``, ``b = h + 1.166``, solved for ``h``.
The statistic is capped at ``2 h`` so that it comes back below ``h`` within about ``h / k`` windows once the
cause is gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

#: The allowance for drift signals: fastest detection of a one-standard-deviation rise of the probit score.
DRIFT_ALLOWANCE = 0.5

# Siegmund's correction for the overshoot of a normal random walk over the boundary.
_OVERSHOOT = 1.166


@dataclass(frozen=True)
class SequentialRule:
    """How a policy with ``detection.sequential`` accumulates evidence.

    ``boundary``: ``h``; ``allowance``: ``k``; ``update_seconds``: the policy window (one update per window);
    ``false_alarm_every_seconds``: the user's budget, for messages; ``reference_level`` and
    ``standard_deviation``: how a non-drift signal is standardized (``None`` for drift signals, which are
    standardized by their own null distribution).
    """

    boundary: float
    allowance: float
    update_seconds: float
    false_alarm_every_seconds: float
    reference_level: float | None = None
    standard_deviation: float | None = None

    @property
    def cap(self) -> float:
        """The largest value the statistic keeps."""
        return 2.0 * self.boundary

    @classmethod
    def for_budget(
        cls,
        false_alarm_every_seconds: float,
        window_seconds: float,
        allowance: float,
        *,
        reference_level: float | None = None,
        standard_deviation: float | None = None,
    ) -> SequentialRule:
        """The rule whose false alarms come at most once per ``false_alarm_every_seconds`` on average."""
        if window_seconds <= 0:
            raise ValueError(f"window: expected a positive duration, got {window_seconds}s")
        updates = false_alarm_every_seconds / window_seconds
        if updates < 10:
            raise ValueError(
                f"detection.sequential.falseAlarmEvery: {false_alarm_every_seconds:g}s is fewer than 10 policy windows "
                f"of {window_seconds:g}s; the budget must leave room for evidence to accumulate"
            )
        return cls(
            boundary=boundary_for(updates, allowance),
            allowance=allowance,
            update_seconds=window_seconds,
            false_alarm_every_seconds=false_alarm_every_seconds,
            reference_level=reference_level,
            standard_deviation=standard_deviation,
        )


@dataclass(frozen=True)
class CusumState:
    """The CUSUM statistic and when it last took a window in (``status.policies[].sequential``)."""

    statistic: float
    updated_at: datetime

    def __post_init__(self) -> None:
        if not math.isfinite(self.statistic) or self.statistic < 0:
            raise ValueError(f"sequential.statistic: expected a finite number >= 0, got {self.statistic!r}")


def average_run_length(boundary: float, allowance: float) -> float:
    """Siegmund's approximation of the expected updates before a false alarm (``N(0, 1)`` increments)."""
    b = boundary + _OVERSHOOT
    if allowance == 0:
        return b * b
    two_kb = 2.0 * allowance * b
    return (math.expm1(two_kb) - two_kb) / (2.0 * allowance * allowance)


def boundary_for(updates: float, allowance: float) -> float:
    """The boundary ``h >= 0`` whose in-control average run length is ``updates``."""
    if allowance < 0:
        raise ValueError(f"allowance: expected >= 0, got {allowance}")
    if average_run_length(0.0, allowance) >= updates:
        return 0.0
    low, high = 0.0, 1.0
    while average_run_length(high, allowance) < updates:
        high *= 2.0
    for _ in range(100):  # bisection: the run length grows monotonically with the boundary
        middle = (low + high) / 2.0
        if average_run_length(middle, allowance) < updates:
            low = middle
        else:
            high = middle
    return high


def advance(rule: SequentialRule, prior: CusumState | None, z: float, now: datetime) -> CusumState:
    """The statistic after this evaluation: ``z`` is folded in when a whole window has passed since the last
    update (or there was none); otherwise it is kept as it was."""
    if prior is not None and (now - prior.updated_at).total_seconds() < rule.update_seconds:
        return prior
    before = prior.statistic if prior is not None else 0.0
    return CusumState(min(max(0.0, before + z - rule.allowance), rule.cap), now)
