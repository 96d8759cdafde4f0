"""classify(): one measurement to OK, Breach, NoData, Error or Invalid."""

from __future__ import annotations

import math

import pytest
from policy_support import accuracy_rule

from modelmonitor.policy import Measurement, OutcomeKind, Rule, Series, classify

OK, BREACH, NODATA, ERROR, INVALID = (
    OutcomeKind.OK,
    OutcomeKind.BREACH,
    OutcomeKind.NO_DATA,
    OutcomeKind.ERROR,
    OutcomeKind.INVALID,
)


@pytest.mark.parametrize(
    ("op", "threshold", "value", "expected"),
    [
        ("<", 0.85, 0.84, BREACH),
        ("<", 0.85, 0.85, OK),
        ("<=", 0.85, 0.85, BREACH),
        ("<=", 0.85, 0.86, OK),
        (">", 0.2, 0.21, BREACH),
        (">", 0.2, 0.2, OK),
        (">=", 0.2, 0.2, BREACH),
        (">=", 0.2, 0.19, OK),
        (">", 0.0, -1e-12, OK),
    ],
)
def test_operator_decides_breach(op: str, threshold: float, value: float, expected: OutcomeKind) -> None:
    outcome = classify(accuracy_rule(op=op, threshold=threshold), Measurement.value(value, 10))
    assert outcome.kind is expected
    assert outcome.value == value
    assert outcome.threshold == threshold
    assert outcome.samples == 10


@pytest.mark.parametrize(
    ("measurement", "expected", "reason_part"),
    [
        (Measurement.error("timeout after 10s"), ERROR, "timeout after 10s"),
        (Measurement.invalid("matrix result"), INVALID, "matrix result"),
        (Measurement.no_data("series gone"), NODATA, "series gone"),
        (Measurement.values(), NODATA, "no series"),
        (Measurement.value(math.nan, 500), NODATA, "NaN"),
        (Measurement.value(math.inf, 500), NODATA, "NaN or infinite"),
        (Measurement.value(-math.inf, 500), NODATA, "NaN or infinite"),
    ],
)
def test_what_cannot_be_judged_is_never_ok_or_breach(
    measurement: Measurement, expected: OutcomeKind, reason_part: str
) -> None:
    outcome = classify(accuracy_rule(), measurement)
    assert outcome.kind is expected
    assert outcome.value is None
    assert reason_part in outcome.reason


@pytest.mark.parametrize(
    ("min_samples", "samples", "expected"),
    [
        (200, 199, NODATA),  # too few: NoData, never Breach, even though 0.5 < 0.85
        (200, 200, BREACH),
        (200, None, NODATA),  # cannot tell how many: not trusted
        (0, None, BREACH),
        (0, 0, BREACH),
    ],
)
def test_min_samples(min_samples: int, samples: int | None, expected: OutcomeKind) -> None:
    outcome = classify(accuracy_rule(min_samples=min_samples), Measurement.value(0.5, samples))
    assert outcome.kind is expected
    if expected is NODATA:
        assert "minSamples 200" in outcome.reason


@pytest.mark.parametrize(
    ("no_data", "measurement", "expected", "substituted"),
    [
        ("hold", Measurement.no_data("gone"), NODATA, False),
        ("ok", Measurement.no_data("gone"), OK, True),
        ("breach", Measurement.no_data("gone"), BREACH, True),
        ("breach", Measurement.value(math.nan), BREACH, True),
        ("ok", Measurement.values(), OK, True),
        ("breach", Measurement.value(0.5, 3), BREACH, True),  # too few samples is NoData, then "breach"
        ("ok", Measurement.value(0.5, 300), BREACH, False),  # real data is judged as usual
        # noData never touches errors: an outage is not "no data".
        ("ok", Measurement.error("503"), ERROR, False),
        ("breach", Measurement.error("503"), ERROR, False),
        ("breach", Measurement.invalid("string"), INVALID, False),
    ],
)
def test_no_data_setting(no_data: str, measurement: Measurement, expected: OutcomeKind, substituted: bool) -> None:
    outcome = classify(accuracy_rule(no_data=no_data, min_samples=100), measurement)
    assert outcome.kind is expected
    assert outcome.no_data_substituted is substituted
    if substituted:
        assert f"noData: {no_data}" in outcome.reason
        assert outcome.value is None


def test_uncalibrated_auto_threshold_is_no_data_whatever_no_data_says() -> None:
    rule = accuracy_rule(op=">", threshold=None, no_data="breach")
    outcome = classify(rule, Measurement.value(0.9, 500))
    assert outcome.kind is NODATA
    assert "auto" in outcome.reason


SERIES = (Series(0.30, 500, (("version", "1"),)), Series(0.10, 500, (("version", "2"),)), Series(0.20, 500))


@pytest.mark.parametrize(
    ("op", "reduce", "threshold", "value", "expected"),
    [
        # Three series where one was expected: never "the last one" (0.20).
        (">", "max", 0.25, 0.30, BREACH),
        (">", "min", 0.25, 0.10, OK),
        (">", "avg", 0.25, 0.20, OK),
        (">", "avg", 0.15, 0.20, BREACH),
        # any/all follow the policy's direction: any = worst series, all = best series.
        (">", "any", 0.25, 0.30, BREACH),
        (">", "all", 0.25, 0.10, OK),
        (">", "all", 0.05, 0.10, BREACH),
        ("<", "any", 0.15, 0.10, BREACH),
        ("<", "all", 0.15, 0.30, OK),
        ("<", "all", 0.35, 0.30, BREACH),
    ],
)
def test_reduce_many_series(op: str, reduce: str, threshold: float, value: float, expected: OutcomeKind) -> None:
    outcome = classify(accuracy_rule(op=op, threshold=threshold, reduce=reduce), Measurement.values(*SERIES))
    assert outcome.kind is expected
    assert outcome.value == pytest.approx(value)
    assert outcome.series_used == 3
    assert outcome.series_total == 3
    assert f"reduce {reduce} over 3 of 3 series" in outcome.reason


def test_reduce_leaves_out_nan_and_thin_series() -> None:
    series = (Series(math.nan, 900), Series(0.9, 10), Series(0.4, 300), Series(0.6, 300))
    outcome = classify(accuracy_rule(op=">", threshold=0.5, reduce="max", min_samples=100), Measurement.values(*series))
    assert outcome.kind is BREACH
    assert outcome.value == 0.6  # 0.9 has only 10 samples; NaN carries no information
    assert outcome.series_used == 2


def test_all_series_thin_is_no_data_with_the_counts_in_the_reason() -> None:
    series = (Series(0.1, 10), Series(0.2, 40))
    outcome = classify(accuracy_rule(min_samples=100), Measurement.values(*series))
    assert outcome.kind is NODATA
    assert "at most 40 samples" in outcome.reason


def test_avg_reports_total_samples() -> None:
    outcome = classify(accuracy_rule(reduce="avg"), Measurement.values(Series(0.8, 100), Series(0.9, 300)))
    assert outcome.value == pytest.approx(0.85)
    assert outcome.samples == 400


@pytest.mark.parametrize(
    ("op", "threshold", "clear", "value", "clearing", "expected", "in_force"),
    [
        # accuracy < 0.85, clears only at >= 0.88
        ("<", 0.85, 0.88, 0.86, False, OK, 0.85),  # not firing: the threshold decides
        ("<", 0.85, 0.88, 0.86, True, BREACH, 0.88),  # firing: not cleared yet
        ("<", 0.85, 0.88, 0.88, True, OK, 0.88),
        ("<", 0.85, None, 0.86, True, OK, 0.85),  # no clearThreshold: no hysteresis
        # drift > 0.2, clears only at <= 0.15
        (">", 0.2, 0.15, 0.18, True, BREACH, 0.15),
        (">", 0.2, 0.15, 0.15, True, OK, 0.15),
        (">", 0.2, 0.15, 0.18, False, OK, 0.2),
    ],
)
def test_hysteresis(
    op: str,
    threshold: float,
    clear: float | None,
    value: float,
    clearing: bool,
    expected: OutcomeKind,
    in_force: float,
) -> None:
    rule = accuracy_rule(op=op, threshold=threshold, clear_threshold=clear)
    outcome = classify(rule, Measurement.value(value, 500), clearing=clearing)
    assert outcome.kind is expected
    assert outcome.threshold == in_force


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"op": "=<"}, "op must be one of"),
        ({"clear_threshold": 0.80}, "clearThreshold 0.8 must not be below threshold 0.85"),
        ({"op": ">", "threshold": 0.2, "clear_threshold": 0.3}, "must not be above threshold 0.2"),
        ({"for_seconds": -1}, "for must not be negative"),
        ({"keep_firing_for_seconds": math.inf}, "keepFiringFor must be a finite number"),
        ({"threshold": math.nan}, "threshold must be a finite number"),
        ({"min_samples": -5}, "minSamples must be a non-negative integer"),
        ({"reduce": "last"}, "reduce must be one of"),
        ({"no_data": "zero"}, "no_data must be one of"),
    ],
)
def test_bad_rules_are_refused_with_the_field_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        accuracy_rule(**overrides)


def test_rule_accepts_api_literals() -> None:
    rule = Rule("p", ">=", 1.0, reduce="any", no_data="breach", severity="critical")
    assert rule.op.value == ">=" and rule.reduce.value == "any" and rule.severity.value == "critical"
