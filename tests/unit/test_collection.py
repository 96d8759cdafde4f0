"""The garbage collector's pacing: rare automatic collections, young ones after cycles, the whole heap every few
minutes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from modelmonitor.collection import FULL_EVERY_SECONDS, IDLE_YOUNG_EVERY_SECONDS, YOUNG_THRESHOLD, CollectionPacing


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_install_makes_automatic_young_collections_rare_and_keeps_the_older_thresholds(thresholds: None) -> None:
    _, middle, old = gc.get_threshold()
    CollectionPacing.install()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)


def test_young_after_each_evaluating_tick_the_whole_heap_when_due_and_young_now_and_then_when_idle() -> None:
    clock, collected = Clock(), []
    pacing = CollectionPacing(clock, lambda generation: collected.append(generation) or 0)
    pacing.after_tick(evaluated=True)
    clock.now += 1
    pacing.after_tick(evaluated=False)  # an idle tick right after a cycle collects nothing
    assert collected == [1]
    clock.now += IDLE_YOUNG_EVERY_SECONDS
    pacing.after_tick(evaluated=False)
    assert collected == [1, 1]
    clock.now = 1000.0 + FULL_EVERY_SECONDS
    pacing.after_tick(evaluated=True)
    pacing.after_tick(evaluated=True)
    assert collected == [1, 1, 2, 1]


def test_the_real_collector_frees_a_reference_cycle_on_a_young_collection(thresholds: None) -> None:
    CollectionPacing.install()

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    freed: list[str] = []
    a, b = Node(), Node()
    a.other, b.other = b, a
    weakref.finalize(a, freed.append, "cycle")
    del a, b
    assert freed == []  # reference counting alone cannot free a cycle, and no automatic collection ran
    CollectionPacing().after_tick(evaluated=True)
    assert freed == ["cycle"]
