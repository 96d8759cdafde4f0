"""Data-quality helpers count what a user would call missing, wrongly typed, out of range or unseen."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelmonitor.stats.data_quality import (
    FeatureSchema,
    check_records,
    missing_count,
    missing_rate,
    range_violations,
    type_violations,
    unseen_categories,
)


def test_missing_values() -> None:
    assert missing_count([1.0, None, float("nan"), "x", 0]) == 2
    assert missing_rate(np.array([1.0, np.nan, 3.0, np.nan])) == 0.5
    assert math.isnan(missing_rate([]))


def test_type_and_range_violations() -> None:
    assert type_violations([1, 2.5, "3", True, None, np.float32(1)], "numerical") == 2  # "3" and True
    assert type_violations(["a", 1, 2.5, None], "categorical") == 1
    assert range_violations(np.array([-1.0, 0.0, 5.0, 11.0, np.inf, np.nan]), 0.0, 10.0) == 3
    with pytest.raises(ValueError, match="minimum"):
        range_violations([1.0], 2.0, 1.0)
    with pytest.raises(ValueError, match="kind"):
        type_violations([1], "text")  # type: ignore[arg-type]


def test_unseen_categories_are_counted() -> None:
    assert unseen_categories(["a", "b", "z", "z", None, "q"], {"a", "b"}) == {"z": 2, "q": 1}


def test_check_records_against_a_schema() -> None:
    schema = {
        "amount": FeatureSchema("numerical", minimum=0.0, maximum=1000.0),
        "country": FeatureSchema("categorical", categories=frozenset({"DE", "FR"})),
    }
    report = check_records(
        [
            {"amount": 10.0, "country": "DE"},
            {"amount": -5.0, "country": "US"},
            {"amount": "12", "country": None, "debug": 1},
            {"country": "FR"},
        ],
        schema,
    )
    assert report.observations == {"amount": 4, "country": 4}
    assert report.missing == {"amount": 1, "country": 1}
    assert report.violations == {
        ("amount", "range"): 1,
        ("country", "unseen_category"): 1,
        ("amount", "type"): 1,
        ("debug", "unknown_feature"): 1,
    }
    assert report.violation_rate("amount") == 0.5
    assert math.isnan(report.violation_rate("nothing"))
    with pytest.raises(ValueError, match=r"records\[0\]"):
        check_records([["amount", 1]], schema)  # type: ignore[list-item]
