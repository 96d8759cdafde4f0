"""Event correlation as client-go's recorder does it (``tools/record/events_cache.go``), without the I/O.

Two steps decide what an Event post becomes:

1. **Aggregation.** Events that differ only in their message (same source, object, type and reason) are counted
   per key over a sliding ``similar_window_seconds``; from the ``max_similar``-th distinct message on, they are
   recorded as one Event whose message reads ``(combined from similar events): <latest message>``.
2. **Counting.** An Event equal to one already posted (same source, object, type, reason and message) is not
   posted again: the existing Event gets ``count + 1`` and a new ``lastTimestamp`` (a PATCH). Its name and
   ``firstTimestamp`` are remembered in a bounded LRU cache; an entry pushed out of it, or an operator restart,
   starts a new Event (client-go does the same).

The caller posts what :meth:`EventCorrelator.observe` returns: a create, or a patch of ``count``,
``lastTimestamp`` and ``message``; a patch answered 404 (the Event expired, by default after an hour) falls back
to a create of the same name and count. Thread-safe; the caller holds ``key_lock`` while it posts, so two posts
of one key never race.
client-go's per-object spam filter (a token bucket that drops Events) is left out: this operator posts Events on
transitions and actions only, and dropping one would hide a transition.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

__all__ = ["COMBINED_PREFIX", "EventCorrelator", "EventKey", "Occurrence"]

#: client-go's prefix of an aggregated Event's message.
COMBINED_PREFIX = "(combined from similar events): "


@dataclass(frozen=True)
class EventKey:
    """What makes Events similar: the source, the involved object, the type and the reason (not the message)."""

    component: str
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    type: str
    reason: str


@dataclass(frozen=True)
class Occurrence:
    """What to post: a new Event (``patch`` false) or a patch of the Event named ``name``."""

    name: str
    message: str
    count: int
    first_timestamp: datetime
    last_timestamp: datetime
    patch: bool


@dataclass
class _Seen:
    """The Event posted last under one cache key."""

    name: str
    count: int
    first_timestamp: datetime


@dataclass
class _Similar:
    """The distinct messages of one EventKey within the window, and when the last one came."""

    messages: set[str] = field(default_factory=set)
    last: datetime | None = None


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A dict bounded to ``size`` entries, dropping the least recently used."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class EventCorrelator:
    """Decides, per Event, between a new object and a count bump of an existing one (client-go's defaults)."""

    def __init__(
        self,
        *,
        cache_size: int = 4096,
        max_similar: int = 10,
        similar_window_seconds: float = 600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._clock = clock
        self._max_similar = max_similar
        self._window = similar_window_seconds
        self._similar: _Lru[EventKey, _Similar] = _Lru(cache_size)
        self._seen: _Lru[tuple[EventKey, str | None], _Seen] = _Lru(cache_size)
        self._lock = threading.Lock()
        self._key_locks = [threading.Lock() for _ in range(64)]

    def key_lock(self, key: EventKey) -> threading.Lock:
        """A lock to hold from :meth:`observe` until the post is done, so a patch never overtakes the create of
        the same Event."""
        return self._key_locks[hash(key) % len(self._key_locks)]

    def observe(self, key: EventKey, message: str) -> Occurrence:
        """Record one occurrence and say what to post for it."""
        now = self._clock()
        with self._lock:
            similar = self._similar.get(key)
            if similar is None or similar.last is None or (now - similar.last).total_seconds() > self._window:
                similar = _Similar()
            similar.messages.add(message)
            similar.last = now
            self._similar.put(key, similar)
            cache_key: tuple[EventKey, str | None] = (key, message)
            if len(similar.messages) >= self._max_similar:
                # Too many distinct messages for one reason: count them on one combined Event instead.
                similar.messages.pop()  # the set never grows past the limit
                cache_key = (key, None)
                message = COMBINED_PREFIX + message
            seen = self._seen.get(cache_key)
            if seen is None:
                name = f"{key.name}.{uuid.uuid4().hex[:16]}"
                occurrence = Occurrence(name, message, 1, now, now, patch=False)
            else:
                occurrence = Occurrence(seen.name, message, seen.count + 1, seen.first_timestamp, now, patch=True)
            # Recorded before posting, as client-go does: after a failed post the next occurrence patches, finds
            # nothing (404) and creates the Event with the count of both.
            self._seen.put(cache_key, _Seen(occurrence.name, occurrence.count, occurrence.first_timestamp))
        return occurrence
