"""The label store in the sidecar's own memory: right for one replica (labels must reach the replica that served).

Bounded twice: a prediction leaves after ``ttl`` seconds or when ``capacity`` newer ones push it out, whichever
comes first, so memory stays flat however many labels never come. Both ways out are counted, since the share
of predictions that did get a label (the label coverage) is itself a signal. Outcomes held for a maturity cohort
wait in a heap by due time, also at most ``capacity`` (beyond: not held, and counted).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from modelmonitor.sidecar.labels import HeldOutcome, JoinResults, LocalCounts, PendingPrediction, StoreHealth


class MemoryLabelStore:
    """Predictions by request id, with a TTL and a capacity.

    Args:
        ttl: seconds a prediction waits for its label.
        capacity: most predictions kept; the oldest go first when it is full.
        clock: seconds, monotonic; injectable for tests.
        wall_clock: Unix seconds, for the due times of held outcomes; injectable for tests.
    """

    description = "memory (this replica only: labels must be sent to the replica that served the prediction)"

    def __init__(
        self, *, ttl: float, capacity: int, clock: Callable[[], float], wall_clock: Callable[[], float] = time.time
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"label ttl: must be > 0 seconds, got {ttl}")
        if capacity < 1:
            raise ValueError(f"label capacity: must be >= 1, got {capacity}")
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        # Insertion order is time order, so the oldest entries are always at the front.
        self._pending: OrderedDict[str, tuple[float, PendingPrediction]] = OrderedDict()
        # Request ids already joined (bounded the same way), to tell a duplicate label from an unknown one.
        self._joined: OrderedDict[str, float] = OrderedDict()
        self._expired = 0
        self._joined_count = 0
        self._wall_clock = wall_clock
        # (due, sequence, outcome): the sequence keeps equal due times in arrival order and never compares outcomes.
        self._held: list[tuple[float, int, HeldOutcome]] = []
        self._sequence = itertools.count()
        self._held_dropped = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, predictions: Sequence[tuple[str, PendingPrediction]]) -> None:
        with self._lock:
            now = self._clock()
            pending = self._pending
            for request_id, record in predictions:
                # A retried request id: the newer prediction is the one the label will be about.
                pending.pop(request_id, None)
                pending[request_id] = (now, record)
            self._evict(now)

    def join(self, labels: Sequence[tuple[str, Any]]) -> JoinResults:
        results = JoinResults()
        with self._lock:
            now = self._clock()
            self._evict(now)
            for request_id, label in labels:
                entry = self._pending.pop(request_id, None)
                if entry is None:
                    if request_id in self._joined:
                        results.duplicate += 1
                    else:
                        results.unmatched += 1
                    continue
                self._joined_count += 1
                self._joined[request_id] = now
                results.joined.append((entry[1], label))
            while len(self._joined) > self.capacity:
                self._joined.popitem(last=False)
        return results

    def settled(self) -> JoinResults:
        return JoinResults()  # nothing is ever deferred: the store is always there

    def hold(self, outcomes: Sequence[HeldOutcome]) -> None:
        with self._lock:
            room = max(0, self.capacity - len(self._held))
            for outcome in outcomes[:room]:
                heapq.heappush(self._held, (outcome.due, next(self._sequence), outcome))
            self._held_dropped += max(0, len(outcomes) - room)

    def matured(self) -> list[HeldOutcome]:
        with self._lock:
            now = self._wall_clock()
            due: list[HeldOutcome] = []
            while self._held and self._held[0][0] <= now:
                due.append(heapq.heappop(self._held)[2])
            return due

    def local_counts(self) -> LocalCounts:
        with self._lock:
            self._evict(self._clock())
            return LocalCounts(
                pending=len(self._pending),
                expired=self._expired,
                joined=self._joined_count,
                held_dropped=self._held_dropped,
            )

    def health(self) -> StoreHealth | None:
        return None

    def close(self) -> None:
        """Nothing to write: the memory goes with the process."""

    def _evict(self, now: float) -> None:
        pending = self._pending
        overflow = len(pending) - self.capacity
        if overflow > 0:
            for _ in range(overflow):
                pending.popitem(last=False)
            self._expired += overflow
        deadline = now - self.ttl
        while pending:
            request_id = next(iter(pending))
            if pending[request_id][0] > deadline:
                break
            del pending[request_id]
            self._expired += 1
        joined = self._joined
        while joined:
            request_id = next(iter(joined))
            if joined[request_id] > deadline:
                break
            del joined[request_id]
