"""The label join's contract: the record a prediction leaves while it waits for its true label, and the store
it waits in.

Two stores implement :class:`LabelStore` (``modelmonitor sidecar --label-store``): ``memory``
(:mod:`modelmonitor.sidecar.labelstore.memory`, one replica's own memory: labels must reach the replica that
served) and ``redis://`` (:mod:`modelmonitor.sidecar.labelstore.redis_store`, shared by every replica of a
model: any replica joins any label, exactly once, and pending predictions outlive a sidecar restart).

A store never computes outcomes: it hands back the :class:`PendingPrediction` a label belongs to, and the
monitor counts. What a record holds, and how it is written to a shared store, is defined here once
(:func:`encode_pending`, :func:`decode_pending`): adding a field is one edit to :class:`PendingPrediction`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import orjson

from modelmonitor import durations

OUTCOMES = ("tp", "fp", "tn", "fn")
"""Confusion outcomes, in the order of their codes 0..3."""


@dataclass(frozen=True, slots=True)
class PendingPrediction:
    """What the label join needs of one prediction. Every field has a default, so a record written by an older
    sidecar (fewer fields) still decodes; values are plain JSON types, since other replicas read them."""

    predicted_positive: int = -1
    """1 / 0 when the prediction was (not) the positive class, -1 when it cannot be told."""
    group: str = ""
    """The group attribute's label value (a name, not a code: each replica numbers its groups itself)."""
    predicted_value: float | None = None
    """The predicted class code (multiclass: codes come from the profile's class list, the same on every replica)
    or the predicted value (regression); None for binary models or when the prediction had none."""
    predicted_at: float | None = None
    """When the prediction was made, in Unix seconds (wall clock: replicas compare it), for the maturity cohorts;
    None when the sidecar counts no cohort (``--label-maturity`` unset), which keeps the record short."""


_FIELDS = tuple(f.name for f in fields(PendingPrediction))


def encode_pending(record: PendingPrediction) -> bytes:
    """The bytes a shared store keeps: a JSON array of the fields in declaration order (names cost memory)."""
    return orjson.dumps([getattr(record, name) for name in _FIELDS])


def decode_pending(raw: bytes) -> PendingPrediction:
    """The record back; fields a newer sidecar appended are ignored, fields an older one lacked get defaults."""
    values = orjson.loads(raw)
    if not isinstance(values, list):
        raise ValueError(f"pending prediction: expected a JSON array, got {raw[:80]!r}")
    return PendingPrediction(*values[: len(_FIELDS)])


@dataclass(frozen=True)
class Maturity:
    """One maturity age of ``--label-maturity``: outcomes are counted when their prediction is this old."""

    name: str
    """The duration normalized (:func:`modelmonitor.durations.normalized`): the ``maturity`` label value, which a
    policy's ``labelDelay`` selects."""
    seconds: float


def parse_maturities(text: str) -> tuple[Maturity, ...]:
    """``"1h,1d"``: the maturity ages, without repeats; ValueError naming the bad item."""
    found: dict[str, Maturity] = {}
    for item in (part.strip() for part in text.split(",")):
        try:
            name = durations.normalized(item)
        except ValueError as problem:
            raise ValueError(f"--label-maturity: {problem}") from None
        seconds = durations.seconds(name)
        if seconds < 1:
            raise ValueError(f"--label-maturity: {item!r}: expected at least 1s")
        found.setdefault(name, Maturity(name, seconds))
    return tuple(found.values())


@dataclass(frozen=True, slots=True)
class HeldOutcome:
    """A joined label waiting for its prediction to reach a maturity age, to be counted then (and only then)."""

    maturity: str
    """The :attr:`Maturity.name` it is held for."""
    due: float
    """predicted_at + the maturity, Unix seconds."""
    record: PendingPrediction
    label: Any


def hold_or_late(
    joined: Sequence[tuple[PendingPrediction, Any]], maturities: Sequence[Maturity], now: float
) -> tuple[list[HeldOutcome], dict[str, int]]:
    """For each joined label and maturity m: held until predicted_at + m when it joined by then, else late.

    Returns (the outcomes to hold, late labels per maturity name). A record without ``predicted_at`` (written
    before cohorts were on) has no age: it takes part in no cohort, rather than a guessed one.
    """
    held: list[HeldOutcome] = []
    late: dict[str, int] = {}
    for record, label in joined:
        if record.predicted_at is None:
            continue
        for maturity in maturities:
            due = record.predicted_at + maturity.seconds
            if now <= due:
                held.append(HeldOutcome(maturity.name, due, record, label))
            else:
                late[maturity.name] = late.get(maturity.name, 0) + 1
    return held, late


def encode_held(outcome: HeldOutcome) -> bytes:
    """The bytes a shared store keeps per held outcome (its maturity and due time are the key and the score): a
    random nonce, so that equal outcomes stay distinct members of a set, the label, then the record's fields."""
    values = [secrets.token_hex(4), outcome.label, *(getattr(outcome.record, name) for name in _FIELDS)]
    return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_held(raw: bytes, maturity: str, due: float) -> HeldOutcome:
    """:func:`encode_held`'s outcome back."""
    values = orjson.loads(raw)
    if not isinstance(values, list) or len(values) < 2:
        raise ValueError(f"held outcome: expected a JSON array, got {raw[:80]!r}")
    return HeldOutcome(maturity, due, PendingPrediction(*values[2 : 2 + len(_FIELDS)]), values[1])


@dataclass
class JoinResults:
    """What offering a batch of labels did. ``joined`` pairs each label with its prediction, in input order."""

    joined: list[tuple[PendingPrediction, Any]] = field(default_factory=list)
    unmatched: int = 0
    """Labels whose prediction is unknown (never seen, expired, or served by a replica that kept it to itself)."""
    duplicate: int = 0
    """Labels whose prediction was joined already (a retried label)."""
    deferred: int = 0
    """Labels kept for a retry because the store could not be reached (counted when the retry settles them)."""

    def merge(self, other: JoinResults) -> None:
        """Add ``other``'s results to these."""
        self.joined.extend(other.joined)
        self.unmatched += other.unmatched
        self.duplicate += other.duplicate
        self.deferred += other.deferred

    def counts(self) -> dict[str, int]:
        """Labels per settled result (``joined``, ``unmatched``, ``duplicate``), only those that occurred."""
        counts = {"joined": len(self.joined), "unmatched": self.unmatched, "duplicate": self.duplicate}
        return {result: count for result, count in counts.items() if count}


@dataclass(frozen=True)
class LocalCounts:
    """What only a store in this replica's memory can count (a shared store expires records on its own)."""

    pending: int
    """Predictions waiting for a label."""
    expired: int
    """Predictions that left unlabeled (TTL or capacity), since start."""
    joined: int
    """Labels joined, since start."""
    held_dropped: int = 0
    """Outcomes not held for a maturity cohort because the store was full (capacity), since start."""

    @property
    def coverage(self) -> float | None:
        """Joined labels / predictions that left the store (joined or expired); None before any left."""
        left = self.joined + self.expired
        return None if left == 0 else self.joined / left


@dataclass(frozen=True)
class StoreHealth:
    """How a store that lives outside the sidecar is doing, for ``modelmonitor_label_store_*``."""

    up: bool
    """The last call to the store succeeded."""
    queued_predictions: int
    """Prediction records waiting in the sidecar to be written."""
    queued_labels: int
    """Labels waiting in the sidecar for a retry (the store was unreachable when they came)."""
    errors: dict[str, int]
    """Failed calls to the store, by operation (``write``, ``join``), since start."""
    dropped: dict[str, int]
    """Records given up because the sidecar's bounded queue was full, by kind (``prediction``, ``label``)."""


class LabelStore(Protocol):
    """Where predictions wait for their labels, by request id. Implementations are thread-safe."""

    description: str
    """For the startup line: which store, and what it means for where labels must be sent."""

    def add(self, predictions: Sequence[tuple[str, PendingPrediction]]) -> None:
        """Keep predictions by request id (a repeated id replaces the older one). Never blocks on I/O and never
        raises for an unreachable store: it runs on the path of the model's answer."""

    def join(self, labels: Sequence[tuple[str, Any]]) -> JoinResults:
        """Take the prediction of each ``(request_id, label)``: each prediction is handed out once, whichever
        replica asks. May block on I/O (call it off the event loop)."""

    def settled(self) -> JoinResults:
        """Results of deferred labels settled since the last call (empty for a store that never defers)."""

    def hold(self, outcomes: Sequence[HeldOutcome]) -> None:
        """Keep outcomes until their due time, for the maturity cohorts. Never blocks on I/O and never raises for
        an unreachable store (a shared store queues them)."""

    def matured(self) -> list[HeldOutcome]:
        """Held outcomes whose due time has passed, each handed out once whichever replica asks; removed from the
        store. Never blocks on I/O (a shared store sweeps in the background)."""

    def local_counts(self) -> LocalCounts | None:
        """Counts only this replica can know, or None for a shared store."""

    def health(self) -> StoreHealth | None:
        """The connection's state, or None for a store in this replica's memory."""

    def close(self) -> None:
        """Write what is queued (bounded wait) and release connections."""
