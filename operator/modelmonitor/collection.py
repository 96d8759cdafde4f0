"""When Python's cyclic garbage collector runs: between evaluation cycles, not in the middle of one.

A cycle over thousands of monitors allocates millions of short-lived containers (decoded Prometheus answers, the
engine's states, the statuses). With the interpreter's default thresholds a young collection ran every 700 new
containers, so whatever the cycle still held was promoted to the oldest generation, and a collection of the whole
heap followed every few tens of seconds: 29 % of the operator's CPU at 10,000 monitors (docs/benchmarks.md).
Nearly all of that garbage is freed by reference counting as soon as it is dropped; the collector is needed only
for reference cycles, which are few. So automatic collections are made rare (a young generation of a million
containers), the young generations are collected after each cycle, when the cycle's data is gone and little
survives to be promoted, and the whole heap every few minutes.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

#: New containers before an automatic young collection (the interpreter's default is 700).
YOUNG_THRESHOLD = 100_000

#: Seconds between collections of the whole heap (at 10,000 monitors one takes about a second).
FULL_EVERY_SECONDS = 120.0

#: Seconds between young collections while no cycle evaluates anything (long intervals, or no monitors).
IDLE_YOUNG_EVERY_SECONDS = 30.0


class CollectionPacing:
    """Call `install` once at start and `after_tick` after every tick of the evaluation loop."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[int], int] = gc.collect,
    ) -> None:
        self._clock = clock
        self._collect = collect
        now = clock()
        self._last_full = now
        self._last_young = now

    @staticmethod
    def install() -> None:
        """Make automatic collections rare; the older generations keep the interpreter's thresholds."""
        _young, middle, old = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)

    def after_tick(self, evaluated: bool) -> None:
        """Collect the whole heap when it is due; else the young generations after a cycle that evaluated
        something, or when none has for a while."""
        now = self._clock()
        if now - self._last_full >= FULL_EVERY_SECONDS:
            self._collect(2)
            self._last_full = self._last_young = now
        elif evaluated or now - self._last_young >= IDLE_YOUNG_EVERY_SECONDS:
            self._collect(1)
            self._last_young = now
