"""Durations: what users write in the spec, and the patterns the API server checks them with."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelmonitor.api import duration_seconds, parse_duration
from modelmonitor.api.common import DURATION_PATTERN, POSITIVE_DURATION_PATTERN


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("90s", 90),
        ("10m", 600),
        ("1h30m", 5400),
        ("2d", 172_800),
        ("250ms", 0.25),
        ("1m1ms", 60.001),
        ("1h0m5s", 3605),
    ],
)
def test_parses_durations_as_written_in_specs(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "-5m", "5 m", "1.5h", "5min", "m5", "5M", "1w"])
def test_refuses_what_is_not_a_duration_and_says_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match="expected digits with units"):
        parse_duration(text)


def test_refuses_absurdly_long_durations() -> None:
    with pytest.raises(ValueError, match="longer than the maximum"):
        parse_duration("99999999d")


_components = st.lists(
    st.tuples(st.integers(min_value=0, max_value=500), st.sampled_from(["ms", "s", "m", "h", "d"])),
    min_size=1,
    max_size=4,
)


@given(_components)
def test_the_positive_pattern_the_api_server_uses_accepts_exactly_the_durations_above_zero(
    parts: list[tuple[int, str]],
) -> None:
    # The CRD cannot call parse_duration; its RE2 pattern must agree with it on every duration.
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert re.fullmatch(DURATION_PATTERN, text)
    positive = re.fullmatch(POSITIVE_DURATION_PATTERN, text) is not None
    assert positive == (parse_duration(text) > timedelta(0))


@given(st.text(alphabet="0123456789msdh-. ", max_size=8))
def test_the_crd_pattern_and_the_parser_agree_on_what_a_duration_looks_like(text: str) -> None:
    matches = re.fullmatch(DURATION_PATTERN, text) is not None
    try:
        parse_duration(text)
    except ValueError as exc:
        # A well-formed duration may still be refused for its length, never for its form.
        assert ("maximum" in str(exc)) if matches else ("expected digits with units" in str(exc))
    else:
        assert matches
