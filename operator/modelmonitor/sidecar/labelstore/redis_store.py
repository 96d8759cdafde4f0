"""The label store in Redis (or Valkey), shared by every replica of a model.

Any replica joins any label; pending predictions outlive sidecar restarts; ``--label-ttl`` may be weeks, bounded
by Redis' memory (docs/sidecar.md gives the bytes per pending prediction). One key per pending prediction,
``modelmonitor:{model}:{version}:p:{request_id}``, holding :func:`~modelmonitor.sidecar.labels.encode_pending`'s
bytes with the TTL as its expiry.

- **Exactly once.** A label takes its prediction with ``GETDEL`` inside a Lua script that also leaves a
  short-lived marker (``...:j:{request_id}``), so of two replicas receiving the same label at the same moment one
  joins and the other sees a duplicate.
- **Off the model's path.** :meth:`RedisLabelStore.add` only appends to a bounded in-memory queue; a writer thread
  sends the queue in pipelined batches. While Redis is unreachable the queue keeps what it can (the oldest records
  are dropped beyond its capacity, and counted), the writer retries with a capped backoff, and the model's answers
  are never delayed.
- **No counted label lost to an outage.** A label that arrives while Redis is unreachable is kept in a bounded
  retry queue and joined when Redis answers again; if its prediction is not there yet (another replica may still
  be writing its own queue) it is retried for ``retry_grace`` seconds before it counts as unmatched. Retry queues
  live in the sidecar's memory: a sidecar stopped during an outage loses them (the prediction queue gets a final,
  bounded attempt at shutdown).
- **Maturity cohorts, counted once.** An outcome held for a maturity (``--label-maturity``) is a member of one
  sorted set per maturity, ``modelmonitor:{model}:{version}:m:{maturity}``, scored by its due time (Unix
  seconds), written by the writer thread like the predictions. The same thread sweeps every
  ``sweep_interval_seconds``: a Lua script takes the members due (``ZRANGEBYSCORE`` then ``ZREM``, atomic), so of
  several replicas sweeping one set each outcome goes to exactly one, whose :meth:`RedisLabelStore.matured` hands
  it to the monitor at the next scrape. Held outcomes outlive a sidecar restart; the sweep takes no more than the
  sidecar can keep (``queue_capacity``) and leaves the rest in Redis for later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from modelmonitor.sidecar.labels import (
    HeldOutcome,
    JoinResults,
    PendingPrediction,
    StoreHealth,
    decode_held,
    decode_pending,
    encode_held,
    encode_pending,
)

log = logging.getLogger("modelmonitor.sidecar")
#: What a write queue holds: prediction records or held outcomes.
T = TypeVar("T")

# KEYS: pairs (pending key, joined marker); ARGV[1]: the marker's expiry in seconds. Per pair: the record's bytes
# when it joined, 1 when it was joined before (a duplicate), 0 when unknown. GETDEL is atomic, so a record is
# handed out once however many replicas ask at the same moment.
JOIN_SCRIPT = """
local out = {}
for i = 1, #KEYS, 2 do
  local record = redis.call('GETDEL', KEYS[i])
  if record then
    redis.call('SET', KEYS[i + 1], '1', 'EX', ARGV[1])
    out[#out + 1] = record
  elseif redis.call('EXISTS', KEYS[i + 1]) == 1 then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# KEYS: one sorted set per maturity; ARGV[1]: now (Unix seconds), ARGV[2]: most members per set. Per set: the
# members due, with their scores, removed in the same atomic step, so each is handed to one sweeper only.
SWEEP_SCRIPT = """
local out = {}
for i = 1, #KEYS do
  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
  local members = {}
  for j = 1, #due, 2 do
    members[#members + 1] = due[j]
  end
  if #members > 0 then
    redis.call('ZREM', KEYS[i], unpack(members))
  end
  out[#out + 1] = due
end
return out
"""

DUPLICATE_MEMORY_SECONDS = 86_400
"""At most this long (and never longer than the TTL) a joined request id is remembered, to tell a retried label
(``duplicate``) from an unknown one (``unmatched``); the marker costs memory per joined label."""


@dataclass(frozen=True)
class RedisStoreSettings:
    """Bounds of the sidecar's side of the Redis store."""

    ttl_seconds: float
    """How long a prediction waits in Redis for its label (the key's expiry)."""
    queue_capacity: int = 100_000
    """Most prediction records, and separately most labels, waiting in the sidecar while Redis is unreachable."""
    batch_size: int = 1000
    """Records per pipelined write, labels per join script call."""
    retry_grace_seconds: float = 30.0
    """How long a label that waited out an outage is retried when its prediction is not in Redis yet."""
    max_backoff_seconds: float = 5.0
    """Longest pause between two attempts while Redis is unreachable."""
    close_timeout_seconds: float = 5.0
    """How long shutdown waits to write the queued predictions."""
    maturities: tuple[str, ...] = ()
    """Names of the maturity ages whose held outcomes this sidecar sweeps (``--label-maturity``)."""
    sweep_interval_seconds: float = 2.0
    """How often held outcomes that came due are taken from Redis."""


@dataclass
class _DeferredLabel:
    request_id: str
    label: Any
    retry_until: float | None = None
    """Set when a retry reached Redis and found no prediction: give up after this (monotonic seconds)."""


class RedisLabelStore:
    """Predictions in Redis by request id; see the module docstring.

    Args:
        client: a redis-py client (its own connection pool; thread-safe).
        namespace: key prefix shared by the replicas that join each other's labels (model and version).
        settings: TTL and bounds.
        description: for the startup line (the URL without credentials).
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str,
        settings: RedisStoreSettings,
        description: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.ttl_seconds < 1:
            raise ValueError(f"label ttl: Redis expires keys in whole seconds, got {settings.ttl_seconds}")
        if settings.queue_capacity < 1:
            raise ValueError(f"label store queue: must be >= 1, got {settings.queue_capacity}")
        self.description = f"{description} (shared: any replica of the model joins any label)"
        self._client = client
        self._settings = settings
        self._ttl = int(settings.ttl_seconds)
        self._marker_ttl = min(self._ttl, DUPLICATE_MEMORY_SECONDS)
        self._pending_prefix = f"{namespace}:p:"
        self._joined_prefix = f"{namespace}:j:"
        self._join_script = client.register_script(JOIN_SCRIPT)
        self._sweep_script = client.register_script(SWEEP_SCRIPT)
        self._held_prefix = f"{namespace}:m:"
        self._holds: deque[HeldOutcome] = deque()
        self._matured: list[HeldOutcome] = []
        self._next_sweep = 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, PendingPrediction]] = deque()
        self._deferred: deque[_DeferredLabel] = deque()
        self._settled = JoinResults()
        self._errors = {"write": 0, "join": 0, **({"sweep": 0} if settings.maturities else {})}
        self._dropped = {"prediction": 0, "label": 0, **({"matured": 0} if settings.maturities else {})}
        self._up = True
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._run, name="label-store-writer", daemon=True)
        self._writer.start()

    # --- the LabelStore protocol ----------------------------------------------------------------------------

    def add(self, predictions: Sequence[tuple[str, PendingPrediction]]) -> None:
        if not predictions:
            return
        with self._lock:
            self._queue.extend(predictions)
            self._trim_queue()
        self._wake.set()

    def join(self, labels: Sequence[tuple[str, Any]]) -> JoinResults:
        results = JoinResults()
        size = self._settings.batch_size
        for start in range(0, len(labels), size):
            chunk = labels[start : start + size]
            try:
                answers = self._take([request_id for request_id, _ in chunk])
            except redis.RedisError as error:
                self._failed("join", error)
                results.deferred += self._defer([_DeferredLabel(str(rid), label) for rid, label in chunk])
                continue
            for (_, label), answer in zip(chunk, answers, strict=True):
                if isinstance(answer, bytes):
                    results.joined.append((decode_pending(answer), label))
                elif answer == 1:
                    results.duplicate += 1
                else:
                    results.unmatched += 1
        if results.deferred:
            self._wake.set()
        return results

    def settled(self) -> JoinResults:
        with self._lock:
            settled, self._settled = self._settled, JoinResults()
        return settled

    def hold(self, outcomes: Sequence[HeldOutcome]) -> None:
        if not outcomes:
            return
        with self._lock:
            self._holds.extend(outcomes)
            overflow = len(self._holds) - self._settings.queue_capacity
            for _ in range(max(0, overflow)):
                self._holds.popleft()
            self._dropped["matured"] = self._dropped.get("matured", 0) + max(0, overflow)
        self._wake.set()

    def matured(self) -> list[HeldOutcome]:
        with self._lock:
            matured, self._matured = self._matured, []
        return matured

    def local_counts(self) -> None:
        return None  # Redis expires records itself; pending counts live in Redis (docs/sidecar.md)

    def health(self) -> StoreHealth:
        with self._lock:
            return StoreHealth(
                up=self._up,
                queued_predictions=len(self._queue),
                queued_labels=len(self._deferred),
                errors=dict(self._errors),
                dropped=dict(self._dropped),
            )

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._writer.join(timeout=self._settings.close_timeout_seconds + 1)
        self._client.close()

    # --- Redis calls ---------------------------------------------------------------------------------------

    def _take(self, request_ids: Sequence[str]) -> list[Any]:
        keys: list[str] = []
        for request_id in request_ids:
            keys.append(self._pending_prefix + request_id)
            keys.append(self._joined_prefix + request_id)
        return list(self._join_script(keys=keys, args=[self._marker_ttl]))

    def _write(self, batch: Sequence[tuple[str, PendingPrediction]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for request_id, record in batch:
            pipe.set(self._pending_prefix + request_id, encode_pending(record), ex=self._ttl)
        pipe.execute()

    def _write_held(self, batch: Sequence[HeldOutcome]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for outcome in batch:
            pipe.zadd(self._held_prefix + outcome.maturity, {encode_held(outcome): outcome.due})
        pipe.execute()

    def _take_due(self, now: float, limit: int) -> tuple[list[HeldOutcome], bool]:
        """The outcomes due at ``now``, at most ``limit`` per maturity; and whether a maturity had more."""
        maturities = self._settings.maturities
        keys = [self._held_prefix + name for name in maturities]
        answers = self._sweep_script(keys=keys, args=[repr(now), limit])
        due: list[HeldOutcome] = []
        for name, answer in zip(maturities, answers, strict=True):
            for index in range(0, len(answer), 2):
                due.append(decode_held(answer[index], name, float(answer[index + 1])))
        return due, any(len(answer) // 2 >= limit for answer in answers)

    # --- the writer thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            if backoff:
                self._stop.wait(backoff)
            else:
                # Woken by new records; every second anyway (or every sweep interval, when shorter), to retry
                # deferred labels and sweep held outcomes.
                self._wake.wait(timeout=min(1.0, self._settings.sweep_interval_seconds))
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._flush() and self._retry_labels() and self._flush_holds() and self._sweep():
                backoff = 0.0
            else:
                backoff = min(self._settings.max_backoff_seconds, max(0.2, backoff * 2))
        deadline = self._clock() + self._settings.close_timeout_seconds
        while self._queue and self._clock() < deadline and self._flush():
            pass
        with self._lock:
            # Swept but not counted by a scrape yet: back to Redis, for another replica or the next start.
            self._holds.extend(self._matured)
            self._matured = []
        while self._holds and self._clock() < deadline and self._flush_holds():
            pass
        if self._queue or self._deferred or self._holds:
            log.warning(
                "label store: stopping with %d predictions unwritten, %d labels unjoined and %d matured outcomes "
                "unwritten",
                len(self._queue),
                len(self._deferred),
                len(self._holds),
            )

    def _flush(self) -> bool:
        """Write the queued prediction records; False when Redis failed."""
        return self._drain(self._queue, self._write, after_failure=self._trim_queue)

    def _flush_holds(self) -> bool:
        """Write the held outcomes; False when Redis failed."""
        return self._drain(self._holds, self._write_held)

    def _drain(
        self, queue: deque[T], write: Callable[[list[T]], None], *, after_failure: Callable[[], None] | None = None
    ) -> bool:
        """Write ``queue`` in batches; False when Redis failed (the batch goes back to the queue's front, then
        ``after_failure`` runs under the lock)."""
        while True:
            with self._lock:
                if not queue:
                    return True
                batch = [queue.popleft() for _ in range(min(self._settings.batch_size, len(queue)))]
            try:
                write(batch)
            except redis.RedisError as error:
                self._failed("write", error)
                with self._lock:
                    queue.extendleft(reversed(batch))
                    if after_failure is not None:
                        after_failure()
                return False
            self._succeeded()

    def _sweep(self) -> bool:
        """Take the held outcomes that came due, when the sweep interval has passed; False when Redis failed."""
        settings = self._settings
        if not settings.maturities or self._clock() < self._next_sweep:
            return True
        self._next_sweep = self._clock() + settings.sweep_interval_seconds
        while True:
            with self._lock:
                room = settings.queue_capacity - len(self._matured)
            limit = min(settings.batch_size, room // len(settings.maturities))
            if limit <= 0:
                return True  # the rest stays in Redis until a scrape has counted what this sidecar holds
            try:
                due, more = self._take_due(time.time(), limit)
            except redis.RedisError as error:
                self._failed("sweep", error)
                return False
            self._succeeded()
            with self._lock:
                self._matured.extend(due)
            if not more:
                return True

    def _retry_labels(self) -> bool:
        """Offer every deferred label once more; False when Redis failed (the rest stay deferred)."""
        with self._lock:
            remaining = len(self._deferred)
        while remaining > 0:
            with self._lock:
                size = min(self._settings.batch_size, remaining, len(self._deferred))
                batch = [self._deferred.popleft() for _ in range(size)]
            if not batch:
                return True
            remaining -= len(batch)
            try:
                answers = self._take([item.request_id for item in batch])
            except redis.RedisError as error:
                self._failed("join", error)
                with self._lock:
                    self._deferred.extendleft(reversed(batch))
                return False
            self._succeeded()
            self._settle(batch, answers)
        return True

    def _settle(self, batch: list[_DeferredLabel], answers: list[Any]) -> None:
        now = self._clock()
        again: list[_DeferredLabel] = []
        settled = JoinResults()
        for item, answer in zip(batch, answers, strict=True):
            if isinstance(answer, bytes):
                settled.joined.append((decode_pending(answer), item.label))
            elif answer == 1:
                settled.duplicate += 1
            elif item.retry_until is None or now < item.retry_until:
                # Its prediction may still sit in another replica's write queue, waiting out the same outage.
                if item.retry_until is None:
                    item.retry_until = now + self._settings.retry_grace_seconds
                again.append(item)
            else:
                settled.unmatched += 1
        with self._lock:
            self._settled.merge(settled)
            self._deferred.extend(again)

    def _defer(self, items: list[_DeferredLabel]) -> int:
        """Keep labels for a retry; returns how many were kept (the oldest are dropped beyond capacity)."""
        with self._lock:
            self._deferred.extend(items)
            overflow = len(self._deferred) - self._settings.queue_capacity
            for _ in range(max(0, overflow)):
                self._deferred.popleft()
            self._dropped["label"] += max(0, overflow)
        return len(items) - max(0, overflow)

    def _trim_queue(self) -> None:
        overflow = len(self._queue) - self._settings.queue_capacity
        for _ in range(max(0, overflow)):
            self._queue.popleft()
        self._dropped["prediction"] += max(0, overflow)

    def _failed(self, operation: str, error: Exception) -> None:
        with self._lock:
            self._errors[operation] += 1
            was_up, self._up = self._up, False
        if was_up:
            log.warning("label store unreachable (%s): %s; queueing and retrying", operation, error)

    def _succeeded(self) -> None:
        with self._lock:
            was_up, self._up = self._up, True
        if not was_up:
            log.info("label store reachable again")


def connect(url: str, *, password: str | None, namespace: str, settings: RedisStoreSettings) -> RedisLabelStore:
    """A store on the Redis at ``url`` (``redis://host:port/db`` or ``rediss://``; no password in the URL)."""
    # Short timeouts and no client-side retries: the writer thread has its own backoff, and a label request
    # should learn fast that it must defer.
    client = redis.Redis.from_url(
        url,
        password=password,
        socket_connect_timeout=2.0,
        socket_timeout=2.0,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )
    return RedisLabelStore(client, namespace=namespace, settings=settings, description=_without_credentials(url))


def _without_credentials(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
