"""Sharing the monitors among operator replicas: one Kubernetes Lease per replica, rendezvous hashing over the
live ones.

Each replica holds its own ``coordination.k8s.io`` Lease in the operator's namespace and renews it every retry
period (client-go's leader election does the same for one shared Lease; its timings are the defaults here:
Lease duration 15 s, renew deadline 10 s, retry period 2 s). The live replicas are the Leases of the same group
(the same watched namespaces) that are not expired; each monitor belongs to the live replica that ranks first
for it by rendezvous hashing of (replica, namespace, name), so a replica joining or leaving moves only its share.

Safety, without trusting clocks across machines (as client-go: expiry is judged from when this process saw a
Lease change, never from the renewTime another machine wrote):

- a replica acts only while its last complete round (renew its own Lease, then list every Lease of the group)
  started less than the renew deadline ago: one that cannot reach the API server stops acting the renew deadline
  after its last round began, while the others wait for a whole Lease duration from when they saw that renewal,
  so it has stopped before any takeover can begin (the margin is duration - deadline, 5 s by default);
- a replica that joins (or comes back after its Lease lapsed) acts only from one renew deadline after its Lease
  was written: by then every replica allowed to act has listed the Leases since, and counts it in;
- a replica stopping cleanly deletes its Lease, so the others take its share at their next round.

Every timer and idempotency key lives in the monitors' status and the actions' ledgers, so the replica that takes
a monitor over resumes it where the previous owner left it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from modelmonitor.adapters.kubernetes import Kind, KubernetesError

log = logging.getLogger("modelmonitor.sharding")

LEASE = Kind("coordination.k8s.io/v1", "Lease")
#: Labels of every replica's Lease; the group label separates operators watching different namespaces.
COMPONENT_LABELS = {"app.kubernetes.io/name": "modelmonitor", "app.kubernetes.io/component": "operator-replica"}
GROUP_LABEL = "modelmonitor.dev/replica-group"
#: A Lease nobody has renewed for this long (seen from here) belongs to a replica gone for good: it is deleted.
STALE_LEASE_SECONDS = 3600.0


def fraction(*parts: str) -> float:
    """A stable number in [0, 1) for ``parts`` (the same in every process and Python version, unlike hash())."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def owner_of(namespace: str, name: str, replicas: Iterable[str]) -> str | None:
    """The replica a monitor belongs to (rendezvous hashing: the highest score wins), None without replicas."""
    return max(replicas, key=lambda r: (fraction(r, namespace, name), r), default=None)


def group_of(namespaces: Sequence[str]) -> str:
    """The replica group of operators watching ``namespaces`` (all namespaces when empty)."""
    if not namespaces:
        return "all-namespaces"
    return "ns-" + hashlib.blake2b(",".join(sorted(set(namespaces))).encode(), digest_size=6).hexdigest()


def default_replica_name() -> str:
    """``<hostname>-<pid>``, made a valid object name: unique per process on one machine."""
    raw = f"{socket.gethostname()}-{os.getpid()}".lower()
    return re.sub(r"[^a-z0-9.-]+", "-", raw).strip("-.")[:253]


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_micro_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class LeaseStore(Protocol):
    """The Lease calls a replica makes (the real one is `adapters.kubernetes.KubernetesClient`)."""

    def get(self, kind: Kind, namespace: str, name: str, *, subresource: str = "") -> dict[str, Any]: ...

    def list(self, kind: Kind, namespace: str, *, label_selector: str = "") -> list[dict[str, Any]]: ...

    def create(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def replace(self, kind: Kind, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete(self, kind: Kind, namespace: str, name: str, *, resource_version: str = "") -> None: ...


class Ownership(Protocol):
    """Whether this replica evaluates and acts on a monitor now."""

    def owns(self, namespace: str, name: str) -> bool: ...

    def owned(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of the (namespace, name) ``keys`` this replica owns now (one answer for a whole tick)."""
        ...


class Standalone:
    """One replica that owns every monitor (tests of the loop alone; `modelmonitor run` always uses Leases)."""

    def owns(self, namespace: str, name: str) -> bool:
        return True

    def owned(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return set(keys)


@dataclass
class _Seen:
    """Another replica's Lease as last listed, and when (monotonic, this process) it was last seen changing."""

    holder: str
    resource_version: str
    duration: float
    changed_at: float


@dataclass(frozen=True)
class LeaseTimings:
    """client-go's three timings (seconds): see `settings.OperatorSettings` for each."""

    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class Membership:
    """This replica's Lease and its view of the others. `renew` runs one round (blocking: call it from a worker
    thread every retry period); `owns` answers from the last round. Thread-safe."""

    def __init__(
        self,
        store: LeaseStore,
        namespace: str,
        identity: str,
        group: str,
        timings: LeaseTimings = LeaseTimings(),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.identity = identity
        self.group = group
        self.timings = timings
        self.clock = clock
        self.wall = wall
        self.selector = ",".join(f"{k}={v}" for k, v in {**COMPONENT_LABELS, GROUP_LABEL: group}.items())
        self._lock = threading.Lock()
        #: Held through a whole round and through `release`, so a round still in flight when the replica stops
        #: cannot renew the Lease after it was released.
        self._round_lock = threading.Lock()
        self._released = False
        self._lease: dict[str, Any] | None = None
        #: When the last complete round began, and when the current unbroken holding began (monotonic).
        self._round_started: float | None = None
        self._holding_since: float | None = None
        self._seen: dict[str, _Seen] = {}
        self._assignments: dict[tuple[str, str], str | None] = {}
        self._assigned_over: tuple[str, ...] = ()

    # --- one round ---------------------------------------------------------------------------------------------

    def renew(self) -> None:
        """Renew this replica's Lease, then read every Lease of the group. Raises `KubernetesError` when either
        fails; the replica then keeps its last view until the renew deadline, and stops acting after it."""
        with self._round_lock:
            if not self._released:
                self._round()

    def _round(self) -> None:
        started = self.clock()
        resumed = self._write_own()
        written = self.clock()
        leases = self.store.list(LEASE, self.namespace, label_selector=self.selector)
        listed = self.clock()
        stale: list[tuple[str, str]] = []
        with self._lock:
            joining = self._round_started is None or started - self._round_started >= self.timings.renew_deadline
            self._round_started = started
            present: set[str] = set()
            for lease in leases:
                meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
                name = str(meta.get("name", ""))
                if name == self._lease_name:
                    continue
                present.add(name)
                version = str(meta.get("resourceVersion", ""))
                known = self._seen.get(name)
                if known is None or known.resource_version != version:
                    self._seen[name] = known = _Seen(
                        holder=str(spec.get("holderIdentity") or ""),
                        resource_version=version,
                        duration=float(spec.get("leaseDurationSeconds") or self.timings.duration),
                        changed_at=listed,
                    )
                if listed - known.changed_at > STALE_LEASE_SECONDS:
                    stale.append((name, version))
            for gone in set(self._seen) - present:
                del self._seen[gone]
            if joining:
                # A new holding (first round, or back after a lapse). With another replica live, that one may not
                # count us in before its next round: acting waits one renew deadline from our write, when every
                # view still allowed to act was read after it. Alone, there is nobody to wait for: a replica
                # starting at the same moment sees our Lease in its own first list (one of two lists that race
                # must see the other's write), so it waits instead. Our own Lease still live for the others
                # (a restarted container, `resumed`): they never stopped counting us in.
                alone = not any(s.holder and listed - s.changed_at < s.duration for s in self._seen.values())
                wait = 0.0 if resumed or alone else self.timings.renew_deadline
                self._holding_since = written - self.timings.renew_deadline + wait
        for name, version in stale:
            self._delete_stale(name, version)

    @property
    def _lease_name(self) -> str:
        return self.identity

    def _body(self, base: Mapping[str, Any] | None, now: datetime, acquired: bool) -> dict[str, Any]:
        meta = dict((base or {}).get("metadata") or {})
        meta.update(name=self._lease_name, namespace=self.namespace)
        meta["labels"] = {**(meta.get("labels") or {}), **COMPONENT_LABELS, GROUP_LABEL: self.group}
        spec = dict((base or {}).get("spec") or {})
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=math.ceil(self.timings.duration),
            renewTime=_micro_time(now),
        )
        if acquired or "acquireTime" not in spec:
            spec["acquireTime"] = _micro_time(now)
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def _write_own(self) -> bool:
        """Create or renew this replica's Lease. True when it resumes a Lease an earlier process of this replica
        (a restarted container) renewed so recently that no other replica can have counted it out: its renewTime
        is less than renew deadline - retry period old, by this machine's clock, which wrote it."""
        now = self.wall()
        if self._lease is not None:
            try:
                self._lease = self.store.replace(
                    LEASE, self.namespace, self._lease_name, self._body(self._lease, now, acquired=False)
                )
                return False
            except KubernetesError as exc:
                if exc.status not in (404, 409):
                    raise
                log.warning("Lease %s/%s changed or vanished under us: %s", self.namespace, self._lease_name, exc)
                self._lease = None
        try:
            current = self.store.get(LEASE, self.namespace, self._lease_name)
        except KubernetesError as exc:
            if exc.status != 404:
                raise
            self._lease = self.store.create(LEASE, self.namespace, self._body(None, now, acquired=True))
            return False
        # Ours from an earlier process of this replica (a restarted container): take it over.
        spec = current.get("spec") or {}
        renewed = _parse_micro_time(spec.get("renewTime"))
        recent = (
            spec.get("holderIdentity") == self.identity
            and renewed is not None
            and (now - renewed).total_seconds() < self.timings.renew_deadline - self.timings.retry_period
        )
        self._lease = self.store.replace(
            LEASE, self.namespace, self._lease_name, self._body(current, now, acquired=not recent)
        )
        return recent

    def _delete_stale(self, name: str, version: str) -> None:
        try:
            self.store.delete(LEASE, self.namespace, name, resource_version=version)
            log.info("deleted Lease %s/%s: not renewed for over %.0f s", self.namespace, name, STALE_LEASE_SECONDS)
        except KubernetesError as exc:
            if exc.status not in (404, 409):  # gone already, or renewed meanwhile
                log.warning("could not delete the stale Lease %s/%s: %s", self.namespace, name, exc)

    def release(self) -> None:
        """Stop acting at once and delete this replica's Lease, so the others take its share at their next round
        instead of after a Lease duration (on a clean stop: a rolling update, a scale-down)."""
        with self._lock:
            self._round_started = self._holding_since = None
        with self._round_lock:  # after a round in flight, which may have marked this replica live again
            self._released = True
            with self._lock:
                self._round_started = self._holding_since = None
            lease, self._lease = self._lease, None
        if lease is None:
            return
        version = str((lease.get("metadata") or {}).get("resourceVersion", ""))
        try:
            self.store.delete(LEASE, self.namespace, self._lease_name, resource_version=version)
        except KubernetesError as exc:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self._lease_name, exc)

    # --- answers -----------------------------------------------------------------------------------------------

    def renewal_overdue(self) -> float | None:
        """Seconds since the last successful round began, once that is beyond the renew deadline (the replica
        then evaluates nothing); None while renewals keep up, before the first round and after release."""
        with self._lock:
            if self._released or self._round_started is None:
                return None
            age = self.clock() - self._round_started
            return age if age >= self.timings.renew_deadline else None

    def acting(self) -> bool:
        """Whether this replica may evaluate and act now: its last round is fresh and its join wait is over."""
        with self._lock:
            return self._acting(self.clock())

    def _acting(self, now: float) -> bool:
        if self._round_started is None or self._holding_since is None:
            return False
        deadline = self.timings.renew_deadline
        return now - self._round_started < deadline and now - self._holding_since >= deadline

    def live(self) -> tuple[str, ...]:
        """The live replicas as this one sees them (itself included while it holds its Lease), sorted."""
        with self._lock:
            return self._live(self.clock())

    def _live(self, now: float) -> tuple[str, ...]:
        others = {s.holder for s in self._seen.values() if s.holder and now - s.changed_at < s.duration}
        if self._round_started is not None and now - self._round_started < self.timings.renew_deadline:
            others.add(self.identity)
        return tuple(sorted(others))

    def owns(self, namespace: str, name: str) -> bool:
        """Whether this replica evaluates and acts on the monitor now. Asked right before every write."""
        with self._lock:
            now = self.clock()
            if not self._acting(now):
                return False
            live = self._live(now)
            owner = self._assignments.get((namespace, name)) if live == self._assigned_over else None
            return (owner or owner_of(namespace, name, live)) == self.identity

    def owned(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``keys`` (every monitor known) this replica evaluates and acts on now (nothing while it may
        not act). The owners are remembered for these keys only, so monitors deleted since are forgotten."""
        with self._lock:
            now = self.clock()
            if not self._acting(now):
                return set()
            live = self._live(now)
            previous = self._assignments if live == self._assigned_over else {}
            assignments: dict[tuple[str, str], str | None] = {}
            mine: set[tuple[str, str]] = set()
            for key in keys:
                owner = previous.get(key) or owner_of(key[0], key[1], live)
                assignments[key] = owner
                if owner == self.identity:
                    mine.add(key)
            self._assignments, self._assigned_over = assignments, live
            return mine
