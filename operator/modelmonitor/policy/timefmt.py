"""Times and durations as the ModelMonitor API writes them.

Status timestamps are RFC 3339 in UTC with a ``Z`` suffix (``2026-11-24T10:00:00Z``); durations are strings
such as ``90s`` or ``1h30m``. The engine reasons in whole seconds: `evaluate` floors ``now`` to the second, so
every time it stores formats without a fraction and round-trips exactly through the status.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

from modelmonitor import durations


def parse_duration(text: str, *, field: str = "duration") -> float:
    """Seconds in a duration string like ``"90s"`` or ``"1h30m"`` (units ms, s, m, h, d).

    Raises ValueError naming ``field`` when the text does not match ``^([0-9]+(ms|s|m|h|d))+$``.
    """
    try:
        return durations.seconds(text)
    except ValueError as problem:
        raise ValueError(f"{field}: {problem}") from None


def format_duration(seconds: float) -> str:
    """A compact duration string for messages: ``330`` -> ``"5m30s"``, ``0`` -> ``"0s"``."""
    total = round(seconds)
    if total <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def require_aware(moment: datetime, *, field: str) -> datetime:
    """Return ``moment`` in UTC; a naive datetime is refused because its zone would be a guess."""
    if moment.tzinfo is UTC:  # the usual case, tens of times per monitor per cycle: no copy
        return moment
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{field}: {moment.isoformat()} has no timezone; pass an aware datetime (UTC)")
    return moment.astimezone(UTC)


def floor_to_second(moment: datetime) -> datetime:
    """``moment`` in UTC without its sub-second part (the resolution of everything the engine stores)."""
    return require_aware(moment, field="now").replace(microsecond=0)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; a fraction is written only when the time has one."""
    return _formatted(require_aware(moment, field="time"))


# Status times repeat: every monitor evaluated in a cycle shares its instant, and most policies' `since` is one of
# a few instants. Remembering the last few thousand texts saves a strftime or a parse per time per policy.
@functools.lru_cache(maxsize=4096)
def _formatted(utc: datetime) -> str:
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, *, field: str = "time") -> datetime:
    """An RFC 3339 timestamp (``Z`` or an offset) as an aware UTC datetime; ValueError names ``field``."""
    if not isinstance(text, str):
        raise ValueError(f"{field}: expected an RFC 3339 timestamp string, got {type(text).__name__}")
    try:
        parsed = _parsed(text)
    except ValueError as exc:
        raise ValueError(f"{field}: {text!r} is not an RFC 3339 timestamp") from exc
    if parsed is None:
        raise ValueError(f"{field}: {text!r} has no timezone; status times end in 'Z'")
    return parsed


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> datetime | None:
    """``text`` parsed and in UTC; None when it has no timezone (a ValueError when it is no timestamp)."""
    parsed = datetime.fromisoformat(text)
    return None if parsed.tzinfo is None else parsed.astimezone(UTC)


def seconds_between(start: datetime, end: datetime) -> float:
    """``end - start`` in seconds (negative when ``end`` is earlier, e.g. after a clock step backwards)."""
    delta: timedelta = end - start
    return delta.total_seconds()
