"""Durations as ModelMonitor writes them everywhere: ``90s``, ``10m``, ``1h30m``, ``500ms``, ``2d``.

One grammar for the API, the policy engine, PromQL windows and the sidecar's flags: digits with a unit (ms, s,
m, h, d), repeated. Pure standard library, so every layer may use it.
"""

from __future__ import annotations

import re

PATTERN = r"^([0-9]+(ms|s|m|h|d))+$"
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# Prometheus reads a range only with each unit at most once, largest first (it refuses "30m1h").
PROMETHEUS_UNIT_ORDER = ("d", "h", "m", "s", "ms")


def seconds(text: object) -> float:
    """The length of ``text`` in seconds; ValueError saying what a duration looks like otherwise."""
    if not isinstance(text, str) or not re.fullmatch(PATTERN, text):
        raise ValueError(f"{text!r} is not a duration: expected digits with units ms, s, m, h or d, e.g. 90s or 1h30m")
    return sum(int(amount) * UNIT_SECONDS[unit] for amount, unit in _PART.findall(text))


def units(text: str) -> list[str]:
    """The units of a valid duration, in the order written."""
    return [unit for _, unit in _PART.findall(text)]


def normalized(text: str) -> str:
    """``text`` written the one way ModelMonitor writes durations: largest unit first, each unit once, none at 0
    (``60m`` and ``1h`` are both ``1h``; ``90s`` is ``1m30s``). Raises ValueError as :func:`seconds` does.

    Two sides that must name the same duration (a sidecar's ``--label-maturity`` and a policy's ``labelDelay``,
    matched as a Prometheus label value) compare their normalized forms.
    """
    milliseconds = round(seconds(text) * 1000)
    parts: list[str] = []
    for unit in PROMETHEUS_UNIT_ORDER:
        size = round(UNIT_SECONDS[unit] * 1000)
        amount, milliseconds = divmod(milliseconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"
