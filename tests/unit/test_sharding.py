"""Sharing monitors among replicas by Leases: who owns what, when a replica may act, and that two replicas never
act on the same monitor at the same moment, on a simulated clock and an in-memory Lease store."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelmonitor.adapters.kubernetes import Kind, KubernetesError
from modelmonitor.sharding import LEASE, LeaseTimings, Membership, group_of, owner_of

KEYS = [("ml", f"model-{i:04d}") for i in range(400)]
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.now)


class Store:
    """Leases in memory with the API server's optimistic concurrency (resourceVersion) and label selection."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0

    def _stamp(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj = copy.deepcopy(dict(body))
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    def get(self, kind: Kind, namespace: str, name: str, *, subresource: str = "") -> dict[str, Any]:
        if name not in self.objects:
            raise KubernetesError("get", 404, "not found")
        return copy.deepcopy(self.objects[name])

    def list(self, kind: Kind, namespace: str, *, label_selector: str = "") -> list[dict[str, Any]]:
        wanted = dict(pair.split("=") for pair in label_selector.split(",") if pair)
        return [
            copy.deepcopy(o)
            for o in self.objects.values()
            if all(o["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]

    def create(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        assert kind == LEASE
        if body["metadata"]["name"] in self.objects:
            raise KubernetesError("create", 409, "exists")
        return self._stamp(body)

    def replace(self, kind: Kind, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        current = self.objects.get(name)
        if current is None:
            raise KubernetesError("replace", 404, "not found")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise KubernetesError("replace", 409, "conflict")
        return self._stamp(body)

    def delete(self, kind: Kind, namespace: str, name: str, *, resource_version: str = "") -> None:
        current = self.objects.get(name)
        if current is None:
            raise KubernetesError("delete", 404, "not found")
        if resource_version and resource_version != current["metadata"]["resourceVersion"]:
            raise KubernetesError("delete", 409, "conflict")
        del self.objects[name]


class Reach:
    """One replica's way to the store; cut it and every call fails as with the API server unreachable."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cut = False

    def __getattr__(self, name: str) -> Any:
        if self.cut:

            def unreachable(*_args: Any, **_kwargs: Any) -> Any:
                raise KubernetesError(name, 0, "connection refused")

            return unreachable
        return getattr(self.store, name)


def replica(store: Store | Reach, clock: Clock, identity: str, group: str = "g") -> Membership:
    return Membership(store, "ops", identity, group, LeaseTimings(15, 10, 2), clock=clock, wall=clock.wall)  # type: ignore[arg-type]


def owned(member: Membership) -> set[tuple[str, str]]:
    return {k for k in KEYS if member.owns(*k)}


def run(clock: Clock, seconds: float, *members: Membership, check: Any = None) -> None:
    """Advance the clock in 0.5 s steps; every member runs a round every 2 s (a failed round is skipped)."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now += 0.5
        if clock.now % 2 == 0:
            for member in members:
                with contextlib.suppress(KubernetesError):  # a replica cut off skips its round
                    member.renew()
        if check is not None:
            check()


def test_rendezvous_moves_only_the_leaving_replicas_share() -> None:
    three = {k: owner_of(*k, ["a", "b", "c"]) for k in KEYS}
    two = {k: owner_of(*k, ["a", "b"]) for k in KEYS}
    assert all(two[k] == three[k] for k in KEYS if three[k] != "c"), "monitors of a and b stayed put"
    shares = [sum(1 for o in three.values() if o == r) / len(KEYS) for r in "abc"]
    assert all(0.25 < s < 0.42 for s in shares), shares
    assert owner_of("ml", "x", []) is None


def test_operators_watching_different_namespaces_are_separate_groups() -> None:
    assert group_of(["b", "a"]) == group_of(["a", "b", "a"]) != group_of(["a"]) != group_of([])


def test_a_lone_replica_acts_at_once_and_one_joining_it_waits_the_renew_deadline() -> None:
    clock, store = Clock(), Store()
    alone = replica(store, clock, "a")
    alone.renew()
    assert alone.acting() and owned(alone) == set(KEYS)
    lease = store.objects["a"]
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseDurationSeconds"] == 15
    joining = replica(store, clock, "b")
    joining.renew()
    run(clock, 9.5, alone, joining)
    assert not joining.acting() and owned(joining) == set()
    run(clock, 1, alone, joining)
    assert joining.acting() and owned(joining)


def test_two_replicas_starting_together_never_both_act() -> None:
    """Their first rounds interleave: a writes, b writes and lists (sees a), a lists (sees b)."""
    clock, store = Clock(), Store()
    a, b = replica(store, clock, "a"), replica(store, clock, "b")
    a._write_own()
    b.renew()
    a.renew()  # a's first complete round: it sees b, so it waits like b
    assert not a.acting() and not b.acting()

    def no_overlap() -> None:
        assert not owned(a) & owned(b), f"both act at {clock.now}"

    run(clock, 14, a, b, check=no_overlap)
    assert owned(a) | owned(b) == set(KEYS)


def test_two_replicas_split_the_monitors_and_never_overlap_while_one_joins() -> None:
    clock, store = Clock(), Store()
    a, b = replica(store, clock, "a"), replica(store, clock, "b")
    run(clock, 2, a)
    assert owned(a) == set(KEYS)

    def no_overlap() -> None:
        assert not owned(a) & owned(b), f"both act at {clock.now}"

    run(clock, 14, a, b, check=no_overlap)
    assert owned(a) | owned(b) == set(KEYS)
    assert 0.35 < len(owned(a)) / len(KEYS) < 0.65
    assert a.live() == b.live() == ("a", "b")


def test_a_replica_that_cannot_renew_stops_before_the_other_takes_over() -> None:
    clock, store = Clock(), Store()
    reach = Reach(store)
    a, b = replica(reach, clock, "a"), replica(store, clock, "b")
    run(clock, 14, a, b)
    share = owned(a)
    assert share and owned(b) == set(KEYS) - share
    reach.cut = True
    cut_at = clock.now
    stopped: list[float] = []
    taken: list[float] = []

    def watch() -> None:
        mine, theirs = owned(a), owned(b)
        assert not mine & theirs, f"both act at {clock.now - cut_at} s after the cut"
        if not mine and not stopped:
            stopped.append(clock.now - cut_at)
        if share <= theirs and not taken:
            taken.append(clock.now - cut_at)

    run(clock, 20, a, b, check=watch)
    assert stopped and stopped[0] <= 10, "a stops acting within the renew deadline"
    assert taken and taken[0] <= 15 + 2, "b takes over within one Lease duration (plus one retry period)"
    assert taken[0] - stopped[0] >= 4, "with a margin between the two"

    # a comes back: it waits one renew deadline before acting again, and b gives its share back.
    reach.cut = False
    run(clock, 14, a, b, check=lambda: watch() if reach.cut else None)
    assert owned(a) == share and owned(b) == set(KEYS) - share


def test_a_released_lease_hands_over_at_the_next_round() -> None:
    clock, store = Clock(), Store()
    a, b = replica(store, clock, "a"), replica(store, clock, "b")
    run(clock, 14, a, b)
    a.release()
    assert owned(a) == set() and "a" not in store.objects
    a.renew()  # a round that was already on its way when the replica stopped
    assert "a" not in store.objects and not a.acting()
    run(clock, 2.5, b)
    assert owned(b) == set(KEYS)


def test_a_restarted_replica_resumes_its_recent_lease_without_waiting() -> None:
    clock, store = Clock(), Store()
    before = replica(store, clock, "a")
    run(clock, 12, before)
    clock.now += 3  # killed, restarted 3 s later
    after = replica(store, clock, "a")
    after.renew()
    assert owned(after) == set(KEYS)
    other = replica(store, clock, "b")
    run(clock, 12, after, other)
    clock.now += 30  # a restart long after: the other may have counted it out, so it waits
    late = replica(store, clock, "a")
    late.renew()
    assert not late.acting()


def test_leases_of_other_groups_are_not_counted() -> None:
    clock, store = Clock(), Store()
    a, other = replica(store, clock, "a", group="g"), replica(store, clock, "x", group="h")
    run(clock, 12, a, other)
    assert a.live() == ("a",) and owned(a) == set(KEYS) == owned(other)


def test_a_lease_not_renewed_for_an_hour_is_deleted() -> None:
    clock, store = Clock(), Store()
    a, gone = replica(store, clock, "a"), replica(store, clock, "gone")
    run(clock, 4, a, gone)
    run(clock, 3610, a)
    assert "gone" not in store.objects and "a" in store.objects


@pytest.mark.parametrize("timings", [(15, 15, 2), (15, 10, 10), (10, 12, 2)])
def test_lease_timings_must_leave_a_margin(timings: tuple[float, float, float]) -> None:
    from modelmonitor.settings import OperatorSettings

    duration, deadline, retry = (str(t) for t in timings)
    env = {
        "MODELMONITOR_LEASE_DURATION_SECONDS": duration,
        "MODELMONITOR_LEASE_RENEW_DEADLINE_SECONDS": deadline,
        "MODELMONITOR_LEASE_RETRY_PERIOD_SECONDS": retry,
    }
    with pytest.raises(ValueError, match="MODELMONITOR_LEASE_RETRY_PERIOD_SECONDS <"):
        OperatorSettings.from_env(env)


def test_the_listing_and_the_check_before_a_write_agree_and_deleted_monitors_are_forgotten() -> None:
    clock, store = Clock(), Store()
    a, b = replica(store, clock, "a"), replica(store, clock, "b")
    a.renew()
    b.renew()
    run(clock, 12, a, b)
    listed = a.owned(KEYS)
    assert listed == owned(a) and listed and listed != set(KEYS)
    survivors = KEYS[: len(KEYS) // 2]
    a.owned(survivors)  # the rest were deleted: the next listing no longer names them
    assert set(a._assignments) == set(survivors), "the owners of deleted monitors are not kept"
    assert owned(a) == listed, "a monitor's owner does not depend on what the last listing held"
