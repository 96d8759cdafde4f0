"""PromQL text built safely: string literals, label matchers, windows and user `query:` templates.

The one place that knows PromQL quoting. Every value that comes from a user or a cluster object (model names,
namespaces, versions, label values) reaches a query only through :func:`quote` (or :func:`quote_regex` for
``=~``/``!~`` matchers), so a value holding ``"``, ``\\``, ``}`` or a newline selects exactly that value and can
never end the string and inject PromQL of its own.

PromQL string literals follow Go's rules: inside double quotes, ``\\`` and ``"`` are escaped, and so are control
characters (``\\n``, ``\\t``, ``\\xNN``, ``\\uNNNN``...). Printable Unicode is kept as is (queries are UTF-8).

Pure: no I/O, nothing but the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from modelmonitor import durations

__all__ = [
    "TEMPLATE_PLACEHOLDERS",
    "PromQLTemplateError",
    "Template",
    "label_matchers",
    "matches_any",
    "quote",
    "quote_regex",
    "regex_escape",
    "render_template",
    "selector",
    "validate_label_name",
    "validate_window",
    "window_seconds",
]

# Go's short escapes, which the PromQL lexer understands (promql/parser/lex.go, lexEscape).
_SHORT_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# The API's duration grammar (CONTRACTS: ^([0-9]+(ms|s|m|h|d))+$); PromQL also knows w and y, which the API
# does not offer, so they are refused here too.

# Characters RE2 gives a meaning to; Prometheus anchors label regexes, so escaping these makes a literal match.
_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def quote(value: str) -> str:
    """Return ``value`` as a PromQL double-quoted string literal.

    Backslash and double quote are escaped; control and other non-printable characters become Go escapes
    (``\\n``, ``\\x1b``, ``\\u2028``, ``\\U000e0001``); printable Unicode is kept. Raises ``TypeError`` for a
    non-string and ``ValueError`` for a string that cannot be UTF-8 (a lone surrogate), because Prometheus label
    values are UTF-8 and such a value could never match.
    """
    if not isinstance(value, str):
        raise TypeError(f"PromQL string value: expected str, got {type(value).__name__} ({value!r})")
    out = ['"']
    for char in value:
        short = _SHORT_ESCAPES.get(char)
        if short is not None:
            out.append(short)
            continue
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError(
                f"PromQL string value {value!r}: contains a lone surrogate U+{code:04X}, which is not valid UTF-8"
            )
        if char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def regex_escape(value: str) -> str:
    """Escape RE2 metacharacters so ``value`` matches itself literally in a ``=~``/``!~`` matcher.

    Only the regex layer: the result still has to be quoted (see :func:`quote_regex`).
    """
    return "".join("\\" + char if char in _RE2_SPECIAL else char for char in value)


def quote_regex(value: str) -> str:
    """A PromQL string literal for a regex matcher that matches exactly ``value``."""
    return quote(regex_escape(value))


def matches_any(name: str, values: Sequence[str]) -> str:
    """A matcher selecting exactly the series whose label ``name`` is one of ``values``: ``name="a"`` for one,
    a literal alternation ``name=~"a|b"`` for several (each value regex-escaped, so it matches itself only)."""
    if not values:
        raise ValueError(f"label {name!r}: a matcher needs at least one value")
    validate_label_name(name)
    if len(values) == 1:
        return f"{name}={quote(values[0])}"
    return f"{name}=~" + quote("|".join(regex_escape(value) for value in values))


def validate_label_name(name: str) -> str:
    """Return ``name`` if it is a valid Prometheus label name, else raise ``ValueError`` naming it."""
    if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"label name {name!r}: expected [a-zA-Z_][a-zA-Z0-9_]*")
    return name


def label_matchers(equal: Mapping[str, str], *, not_equal: Mapping[str, str] | None = None) -> str:
    """Build the inside of a selector: ``a="x",b!="y"``, label names validated, values quoted.

    Matchers come out sorted by label name so the same inputs always give the same text (cache- and
    test-friendly).
    """
    parts = [f"{validate_label_name(name)}={quote(value)}" for name, value in sorted(equal.items())]
    parts += [f"{validate_label_name(name)}!={quote(value)}" for name, value in sorted((not_equal or {}).items())]
    return ",".join(parts)


def selector(metric: str, equal: Mapping[str, str] | None = None, *, not_equal: Mapping[str, str] | None = None) -> str:
    """A series selector ``metric{...}``; with no matchers, just ``metric``."""
    if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", metric):
        raise ValueError(f"metric name {metric!r}: expected [a-zA-Z_:][a-zA-Z0-9_:]*")
    inner = label_matchers(equal or {}, not_equal=not_equal)
    return f"{metric}{{{inner}}}" if inner else metric


def validate_window(window: str) -> str:
    """Return ``window`` if it is a positive duration such as ``"90s"`` or ``"1h30m"``; else ``ValueError``.

    Units in descending order, each at most once (Prometheus refuses ``"30m1h"``), and the total above zero
    (a zero range selects nothing).
    """
    length = window_seconds(window)
    ranks = [durations.PROMETHEUS_UNIT_ORDER.index(unit) for unit in durations.units(window)]
    if ranks != sorted(set(ranks)):
        raise ValueError(
            f"window {window!r}: each unit at most once, largest first (d, h, m, s, ms), e.g. 1h30m not 30m1h"
        )
    if length <= 0:
        raise ValueError(f"window {window!r}: must be longer than zero")
    return window


def window_seconds(window: str) -> float:
    """The length of a duration string in seconds (no validation of unit order; see :func:`validate_window`)."""
    try:
        return durations.seconds(window)
    except ValueError:
        raise ValueError(
            f"window {window!r}: expected a duration such as 90s, 10m or 1h30m (units ms, s, m, h, d)"
        ) from None


# --- user `query:` templates -------------------------------------------------------------------------------

#: Placeholders a `query:` template may use, and what each stands for.
TEMPLATE_PLACEHOLDERS: Mapping[str, str] = {
    "model": "the monitor's model name (spec.model.name), quoted",
    "namespace": "the monitor's namespace, quoted",
    "version": "the monitor's model version (spec.model.version), quoted; an error when it is not set",
    "monitor": "the ModelMonitor's name, quoted",
    "window": "the policy's window, validated as a duration and inserted bare, e.g. rate(x[{{window}}])",
}

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_REGEX_MATCH_BEFORE = re.compile(r"[=!]~\s*$")


class PromQLTemplateError(ValueError):
    """A `query:` template that cannot be rendered; the message names the placeholder and what was wrong."""

    def __init__(self, message: str, placeholder: str | None = None) -> None:
        super().__init__(message)
        self.placeholder = placeholder


@dataclass(frozen=True)
class Template:
    """A parsed `query:` template: its text and the placeholders it uses (checked at parse time).

    Parse once when a monitor is admitted, so an unknown placeholder is reported as an invalid spec rather
    than as an evaluation error every cycle.
    """

    text: str
    placeholders: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Template:
        """Check the template's syntax and placeholders; raise :class:`PromQLTemplateError` naming the problem."""
        if not isinstance(text, str) or not text.strip():
            raise PromQLTemplateError("query: the template is empty")
        used: set[str] = set()
        for match in _PLACEHOLDER.finditer(text):
            name = match.group(1)
            if name not in TEMPLATE_PLACEHOLDERS:
                known = ", ".join("{{" + known + "}}" for known in TEMPLATE_PLACEHOLDERS)
                raise PromQLTemplateError(
                    f"query: unknown placeholder {{{{{name}}}}}; known placeholders are {known}", name
                )
            before = text[: match.start()]
            after = text[match.end() :]
            if name != "window" and (before.endswith(('"', "'", "`")) or after.startswith(('"', "'", "`"))):
                raise PromQLTemplateError(
                    f"query: placeholder {{{{{name}}}}} is written inside quotes; write it bare, "
                    f"e.g. model={{{{{name}}}}}: the value is quoted for you",
                    name,
                )
            if name == "window" and _REGEX_MATCH_BEFORE.search(before):
                raise PromQLTemplateError(
                    "query: placeholder {{window}} is a duration and cannot be a label value", name
                )
            used.add(name)
        # PromQL itself never writes "{{" (a selector opens with one brace): left over after the placeholders
        # are taken out, it is a mistyped placeholder such as "{{model}" or "{{ model".
        if "{{" in _PLACEHOLDER.sub("", text):
            raise PromQLTemplateError("query: unbalanced placeholder braces: write placeholders as {{name}}")
        return cls(text=text, placeholders=frozenset(used))

    def render(self, values: Mapping[str, str | None]) -> str:
        """Substitute the placeholders; see :func:`render_template`."""
        return render_template(self.text, values)


def render_template(template: str, values: Mapping[str, str | None]) -> str:
    """Render a `query:` template, quoting every substituted value as a PromQL string literal.

    ``values`` maps placeholder names (see ``TEMPLATE_PLACEHOLDERS``) to their values for one monitor and
    policy; ``None`` means "not set". ``{{window}}`` is validated as a duration and inserted bare; every other
    placeholder becomes a quoted string. A placeholder right after ``=~`` or ``!~`` is regex-escaped first, so
    ``model=~{{model}}`` matches the model name literally. Raises :class:`PromQLTemplateError` naming the
    placeholder for an unknown placeholder, a missing value or a bad window.
    """
    parsed = Template.parse(template)
    pieces: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(parsed.text):
        name = match.group(1)
        pieces.append(parsed.text[position : match.start()])
        position = match.end()
        value = values.get(name)
        if value is None:
            raise PromQLTemplateError(f"query: placeholder {{{{{name}}}}} has no value for this monitor", name)
        if name == "window":
            try:
                pieces.append(validate_window(value))
            except ValueError as error:
                raise PromQLTemplateError(f"query: placeholder {{{{window}}}}: {error}", name) from None
            continue
        try:
            if _REGEX_MATCH_BEFORE.search(parsed.text[: match.start()]):
                pieces.append(quote_regex(value))
            else:
                pieces.append(quote(value))
        except (TypeError, ValueError) as error:
            raise PromQLTemplateError(f"query: placeholder {{{{{name}}}}}: {error}", name) from None
    pieces.append(parsed.text[position:])
    return "".join(pieces)
