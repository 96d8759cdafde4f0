"""Event correlation as client-go's recorder does it: a repeated Event is a count on one object, similar Events
with ever-new messages are combined, and the memory of it all is bounded."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from modelmonitor.adapters.events import COMBINED_PREFIX, EventCorrelator, EventKey, Occurrence


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def key(name: str = "fraud", reason: str = "PolicyFiring", type_: str = "Warning", uid: str = "uid-1") -> EventKey:
    return EventKey("modelmonitor", "modelmonitor.dev/v1alpha1", "ModelMonitor", "ml", name, uid, type_, reason)


def test_the_same_event_three_times_is_one_event_counted_three_times() -> None:
    clock = Clock()
    events = EventCorrelator(clock=clock)
    seen: list[Occurrence] = []
    for _ in range(3):
        seen.append(events.observe(key(), "policy accuracy Pending -> Firing"))
        clock.advance(30)
    assert [o.patch for o in seen] == [False, True, True]
    assert [o.count for o in seen] == [1, 2, 3]
    assert len({o.name for o in seen}) == 1
    assert seen[0].name.startswith("fraud.")
    assert {o.first_timestamp for o in seen} == {seen[0].first_timestamp}
    assert seen[2].last_timestamp - seen[0].last_timestamp == timedelta(seconds=60)


def test_a_different_message_reason_type_or_object_is_another_event() -> None:
    events = EventCorrelator(clock=Clock())
    first = events.observe(key(), "a")
    others = [
        events.observe(key(), "b"),
        events.observe(key(reason="PolicyResolved"), "a"),
        events.observe(key(type_="Normal"), "a"),
        events.observe(key(name="churn"), "a"),
        events.observe(key(uid="uid-2"), "a"),  # a monitor deleted and created again under the same name
    ]
    assert all(not o.patch and o.count == 1 for o in others)
    assert len({first.name, *(o.name for o in others)}) == 6


def test_ten_distinct_messages_of_one_reason_are_combined_into_one_counted_event() -> None:
    clock = Clock()
    events = EventCorrelator(clock=clock)
    singles = [events.observe(key(), f"value {i}") for i in range(9)]
    assert all(not o.patch for o in singles)

    combined = [events.observe(key(), f"value {i}") for i in range(9, 12)]
    assert [o.message for o in combined] == [COMBINED_PREFIX + f"value {i}" for i in range(9, 12)]
    assert [(o.patch, o.count) for o in combined] == [(False, 1), (True, 2), (True, 3)]
    assert len({o.name for o in combined}) == 1

    clock.advance(601)  # ten minutes without one: the reason starts afresh
    fresh = events.observe(key(), "value 99")
    assert fresh.message == "value 99" and not fresh.patch


def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    events = EventCorrelator(clock=Clock(), cache_size=2)
    first = events.observe(key(name="a"), "m")
    events.observe(key(name="b"), "m")
    assert events.observe(key(name="a"), "m").name == first.name  # a is used again: b is now the oldest
    events.observe(key(name="c"), "m")
    assert events.observe(key(name="a"), "m").patch
    again = events.observe(key(name="b"), "m")
    assert not again.patch and again.count == 1  # forgotten: a new Event, as after a restart


def test_posts_from_many_threads_count_every_occurrence_once() -> None:
    events = EventCorrelator(clock=Clock())
    counts: list[int] = []
    lock = threading.Lock()

    def post() -> None:
        for _ in range(200):
            occurrence = events.observe(key(), "same")
            with lock:
                counts.append(occurrence.count)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counts) == list(range(1, 1601))
