"""The label store: predictions wait here, by request id, for their true label to arrive.

Bounded twice: a prediction leaves after ``ttl`` seconds or when ``capacity`` newer ones push it out, whichever
comes first, so memory stays flat however many labels never come. Both ways out are counted, since the share
of predictions that did get a label (the label coverage) is itself a signal.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat

OUTCOMES = ("tp", "fp", "tn", "fn")
"""Confusion outcomes, in the order of their codes 0..3."""


@dataclass(frozen=True)
class Join:
    """The result of offering one label: ``result`` is ``joined``, ``unmatched`` or ``duplicate``."""

    result: str
    outcome: int | None = None
    """Confusion outcome code (index into ``OUTCOMES``) when joined and both sides were known."""
    group: int | None = None
    predicted_positive: int | None = None
    predicted_value: float | None = None
    """The predicted class code (multiclass) or value (regression) stored with the prediction; NaN: none."""


class LabelStore:
    """Predictions by request id, with a TTL and a capacity; not thread-safe (the monitor holds its lock).

    Args:
        ttl: seconds a prediction waits for its label.
        capacity: most predictions kept; the oldest go first when it is full.
        clock: seconds, monotonic; injectable for tests.
    """

    def __init__(self, *, ttl: float, capacity: int, clock: Callable[[], float]) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl: must be > 0 seconds, got {ttl}")
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        # Insertion order is time order, so the oldest entries are always at the front.
        self._pending: OrderedDict[str, tuple[float, int, int, float]] = OrderedDict()
        # Request ids already joined (bounded the same way), to tell a duplicate label from an unknown one.
        self._joined: OrderedDict[str, float] = OrderedDict()
        self.expired = 0
        """Predictions that left unlabeled (TTL or capacity), since start."""
        self.joined = 0
        """Labels joined to a prediction, since start."""

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self,
        request_ids: Sequence[str],
        predicted_positive: Sequence[int],
        groups: Sequence[int],
        predicted_values: Sequence[float] | None = None,
    ) -> None:
        """Store a batch of predictions (same length sequences). A repeated request id replaces the older one.

        ``predicted_values``: the predicted class code or regression value per prediction (NaN: none).
        """
        now = self._clock()
        values = repeat(math.nan) if predicted_values is None else predicted_values
        pending = self._pending
        for request_id in request_ids:
            # A retried request id: the newer prediction is the one the label will be about.
            if request_id in pending:
                del pending[request_id]
        pending.update(
            zip(request_ids, zip(repeat(now), predicted_positive, groups, values, strict=False), strict=False)
        )
        self._evict(now)

    def offer(self, request_id: str, label_positive: int) -> Join:
        """Join a label (1 positive, 0 negative, -1 unknown) to its prediction, if still stored."""
        now = self._clock()
        self._evict(now)
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return Join("duplicate" if request_id in self._joined else "unmatched")
        _, predicted, group, value = entry
        self.joined += 1
        self._joined[request_id] = now
        while len(self._joined) > self.capacity:
            self._joined.popitem(last=False)
        outcome = None
        if predicted >= 0 and label_positive >= 0:
            # tp: predicted 1, label 1; fp: 1, 0; tn: 0, 0; fn: 0, 1
            outcome = {(1, 1): 0, (1, 0): 1, (0, 0): 2, (0, 1): 3}[(predicted, label_positive)]
        return Join("joined", outcome=outcome, group=group, predicted_positive=predicted, predicted_value=value)

    def expire(self) -> None:
        """Drop what the TTL says is too old (also done on every add and offer)."""
        self._evict(self._clock())

    def _evict(self, now: float) -> None:
        pending = self._pending
        overflow = len(pending) - self.capacity
        if overflow > 0:
            for _ in range(overflow):
                pending.popitem(last=False)
            self.expired += overflow
        deadline = now - self.ttl
        while pending:
            request_id = next(iter(pending))
            if pending[request_id][0] > deadline:
                break
            del pending[request_id]
            self.expired += 1
        joined = self._joined
        while joined:
            request_id = next(iter(joined))
            if joined[request_id] > deadline:
                break
            del joined[request_id]

    @property
    def coverage(self) -> float | None:
        """Joined labels / predictions that left the store (joined or expired); None before any left."""
        left = self.joined + self.expired
        return None if left == 0 else self.joined / left
