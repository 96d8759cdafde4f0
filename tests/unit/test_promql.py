"""PromQL quoting, matchers, windows and `query:` templates.

The round-trip oracle: PromQL string literals use Go's escapes, and for every escape this module emits
(``\\a \\b \\f \\n \\r \\t \\v \\\\ \\" \\xNN`` below 0x80, ``\\uNNNN``, ``\\UNNNNNNNN``) a Python string literal
means the same thing, so ``ast.literal_eval(quote(v)) == v``. The integration test checks the same values
against a real Prometheus.
"""

from __future__ import annotations

import ast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelmonitor.promql import (
    PromQLTemplateError,
    Template,
    label_matchers,
    quote,
    quote_regex,
    regex_escape,
    render_template,
    selector,
    validate_window,
    window_seconds,
)

QUOTING = [
    ("fraud", '"fraud"'),
    ("", '""'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("braces{}and}{", '"braces{}and}{"'),
    ("line\nbreak", '"line\\nbreak"'),
    ("tab\tcr\r", '"tab\\tcr\\r"'),
    ("bell\a\b\f\v", '"bell\\a\\b\\f\\v"'),
    ("nul\x00esc\x1bdel\x7f", '"nul\\x00esc\\x1bdel\\x7f"'),
    ('end\\"', '"end\\\\\\""'),  # a backslash then a quote: neither may swallow the other
    ('"}) or vector(1) #', '"\\"}) or vector(1) #"'),  # an injection attempt stays a string
    ("`backtick'single`", '"`backtick\'single`"'),
    ("café ünïcödé 模型", '"café ünïcödé 模型"'),
    ("emoji 🚀", '"emoji 🚀"'),
    ("nbsp\u00a0zwsp\u200bls\u2028", '"nbsp\\u00a0zwsp\\u200bls\\u2028"'),
    ("tag\U000e0001", '"tag\\U000e0001"'),
]


@pytest.mark.parametrize(("value", "expected"), QUOTING)
def test_quote_table(value: str, expected: str) -> None:
    assert quote(value) == expected
    assert ast.literal_eval(quote(value)) == value


@given(st.text(alphabet=st.characters(exclude_categories=("Cs",))))
def test_quote_round_trips_any_text(value: str) -> None:
    quoted = quote(value)
    assert quoted.startswith('"') and quoted.endswith('"')
    assert "\n" not in quoted and "\r" not in quoted
    assert ast.literal_eval(quoted) == value


def test_quote_refuses_what_cannot_be_a_label_value() -> None:
    with pytest.raises(ValueError, match="lone surrogate U\\+D800"):
        quote("bad\ud800")
    with pytest.raises(TypeError, match="expected str, got int"):
        quote(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("a.c", "a\\.c"),
        ("x+y*z?", "x\\+y\\*z\\?"),
        ("(a|b)[c]{2}", "\\(a\\|b\\)\\[c\\]\\{2\\}"),
        ("^start$", "\\^start\\$"),
        ("back\\slash", "back\\\\slash"),
        ('quote"', 'quote"'),
    ],
)
def test_regex_escape(value: str, escaped: str) -> None:
    assert regex_escape(value) == escaped


def test_quote_regex_escapes_the_regex_then_the_string() -> None:
    # RE2 needs a\.c; the PromQL string literal for that text doubles the backslash.
    assert quote_regex("a.c") == '"a\\\\.c"'
    assert ast.literal_eval(quote_regex('w"x')) == 'w"x'


def test_label_matchers_and_selector() -> None:
    assert label_matchers({"model": 'we"ird', "namespace": "ns"}) == 'model="we\\"ird",namespace="ns"'
    assert label_matchers({"a": "1"}, not_equal={"container": ""}) == 'a="1",container!=""'
    assert selector("up") == "up"
    assert selector("modelmonitor_requests_total", {"model": "m\n"}) == 'modelmonitor_requests_total{model="m\\n"}'
    with pytest.raises(ValueError, match="label name 'bad-name'"):
        label_matchers({"bad-name": "x"})
    with pytest.raises(ValueError, match="metric name 'no spaces'"):
        selector("no spaces")


@pytest.mark.parametrize(("window", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("1d", 86400)])
def test_valid_windows(window: str, seconds: float) -> None:
    assert validate_window(window) == window
    assert window_seconds(window) == seconds


def test_window_milliseconds() -> None:
    assert window_seconds("1s500ms") == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("10", "expected a duration"),
        ("10 m", "expected a duration"),
        ("-5m", "expected a duration"),
        ("2w", "expected a duration"),
        ("5m]) or vector(1", "expected a duration"),
        ("30m1h", "largest first"),
        ("1m1m", "largest first"),
        ("0s", "longer than zero"),
        ("", "expected a duration"),
    ],
)
def test_invalid_windows(window: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_window(window)


VALUES = {"model": 'we"ird\\mo{del}\nx', "namespace": "team-a", "version": "v2", "monitor": "mm", "window": "10m"}


def test_render_quotes_every_value_and_leaves_window_bare() -> None:
    text = render_template(
        "sum(rate(m{model={{model}}, namespace={{ namespace }}, version={{version}}}[{{window}}])) > 0",
        VALUES,
    )
    assert text == 'sum(rate(m{model="we\\"ird\\\\mo{del}\\nx", namespace="team-a", version="v2"}[10m])) > 0'


def test_render_regex_matcher_placeholder_is_regex_escaped() -> None:
    text = render_template("m{model=~{{model}}, ns!~ {{namespace}}}", {"model": "a.c", "namespace": "x|y"})
    assert text == 'm{model=~"a\\\\.c", ns!~ "x\\\\|y"}'


def test_render_leaves_promql_braces_alone() -> None:
    text = render_template('label_replace(m{a="{b}"}, "x", "$1", "model", "(.*)") and on() m{model={{model}}}', VALUES)
    assert text.startswith('label_replace(m{a="{b}"}, "x", "$1", "model", "(.*)")')
    assert text.endswith('m{model="we\\"ird\\\\mo{del}\\nx"}')


@pytest.mark.parametrize(
    ("template", "values", "placeholder", "message"),
    [
        ("m{x={{modle}}}", VALUES, "modle", "unknown placeholder {{modle}}; known placeholders are {{model}}"),
        ('m{model="{{model}}"}', VALUES, "model", "written inside quotes; write it bare"),
        ("m{model='{{model}}'}", VALUES, "model", "written inside quotes"),
        ("m{version={{version}}}", {**VALUES, "version": None}, "version", "{{version}} has no value"),
        ("rate(m[{{window}}])", {**VALUES, "window": "5 minutes"}, "window", "{{window}}: window '5 minutes'"),
        ("rate(m[{{window}}])", {**VALUES, "window": "0s"}, "window", "longer than zero"),
        ("m{model=~{{window}}}", VALUES, "window", "{{window}} is a duration and cannot be a label value"),
        ("m{model={{model}}}", {**VALUES, "model": "x\ud800"}, "model", "{{model}}: PromQL string value"),
    ],
)
def test_render_errors_name_the_placeholder(
    template: str, values: dict[str, str | None], placeholder: str, message: str
) -> None:
    with pytest.raises(PromQLTemplateError) as raised:
        render_template(template, values)
    assert raised.value.placeholder == placeholder
    assert message in str(raised.value)


@pytest.mark.parametrize("template", ["m{model={{model}", "m{model={{ model }", "{{model}}{{"])
def test_unbalanced_placeholder_braces(template: str) -> None:
    with pytest.raises(PromQLTemplateError, match="unbalanced placeholder braces"):
        Template.parse(template)


def test_empty_template() -> None:
    with pytest.raises(PromQLTemplateError, match="the template is empty"):
        Template.parse("   ")


def test_template_parse_lists_placeholders() -> None:
    template = Template.parse("rate(m{model={{model}}}[{{window}}]) / rate(m{model={{ model }}}[5m])")
    assert template.placeholders == frozenset({"model", "window"})
    assert template.render(VALUES).count('"we\\"ird\\\\mo{del}\\nx"') == 2
