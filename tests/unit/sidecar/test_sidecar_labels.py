"""The label join: outcomes per group, TTL, capacity, duplicates and label coverage."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from conftest import reference_rows
from modelmonitor.sidecar import Monitor, MonitorSettings
from modelmonitor.sidecar.labels import JoinResults, LocalCounts, PendingPrediction, decode_pending, encode_pending
from modelmonitor.sidecar.labelstore import open_label_store
from modelmonitor.sidecar.labelstore.memory import MemoryLabelStore
from modelmonitor.sidecar.profile import Profile

M = {"model": "churn", "version": "v3"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(profile: Profile, clock: Clock, **settings: object) -> tuple[Monitor, CollectorRegistry]:
    monitor = Monitor(
        profile,
        model="churn",
        version="v3",
        settings=MonitorSettings(**settings),
        clock=clock,  # type: ignore[arg-type]
    )
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    return monitor, registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**M, **labels})


def test_outcomes_per_group_and_quality(profile: Profile) -> None:
    monitor, registry = setup(profile, Clock())
    rows = reference_rows(6, seed=1)
    for i, gender in enumerate(["f", "f", "f", "m", "m", "m"]):
        rows[i]["gender"] = gender
    predictions = [1, 1, 0, 0, 1, 0]
    labels = [1, 0, 0, 1, 1, 0]  # f: tp fp tn; m: fn tp tn
    monitor.log_events(
        [
            {"request_id": f"r{i}", "features": r, "prediction": p}
            for i, (r, p) in enumerate(zip(rows, predictions, strict=True))
        ]
    )
    assert monitor.log_labels([(f"r{i}", label) for i, label in enumerate(labels)]) == {"joined": 6}
    expected = {
        ("f", "tp"): 1,
        ("f", "fp"): 1,
        ("f", "tn"): 1,
        ("f", "fn"): 0,
        ("m", "tp"): 1,
        ("m", "fp"): 0,
        ("m", "tn"): 1,
        ("m", "fn"): 1,
    }
    for (group, outcome), count in expected.items():
        assert value(registry, "modelmonitor_labeled_predictions_total", group=group, outcome=outcome) == count
    # tp=2 fp=1 tn=2 fn=1
    assert value(registry, "modelmonitor_quality", metric="accuracy") == pytest.approx(4 / 6)
    assert value(registry, "modelmonitor_quality", metric="precision") == pytest.approx(2 / 3)
    assert value(registry, "modelmonitor_quality", metric="recall") == pytest.approx(2 / 3)
    assert value(registry, "modelmonitor_quality", metric="f1") == pytest.approx(2 / 3)
    assert value(registry, "modelmonitor_labels_received_total", result="joined") == 6
    assert value(registry, "modelmonitor_label_coverage_ratio") == 1.0


def test_string_labels_and_scores_decide_the_outcome(profile: Profile) -> None:
    monitor, registry = setup(profile, Clock())
    rows = reference_rows(2, seed=2)
    # no class, only a score: at or above the decision threshold (0.5) is a positive prediction
    monitor.log_events(
        [
            {"request_id": "a", "features": rows[0], "score": 0.5},
            {"request_id": "b", "features": rows[1], "score": 0.49},
        ]
    )
    monitor.log_labels([("a", "1"), ("b", True)])  # True is the class "true", not the positive class "1"
    group_a, group_b = str(rows[0]["gender"]), str(rows[1]["gender"])
    assert value(registry, "modelmonitor_labeled_predictions_total", group=group_a, outcome="tp") == 1
    assert value(registry, "modelmonitor_labeled_predictions_total", group=group_b, outcome="tn") == 1


def test_unmatched_duplicate_and_coverage(profile: Profile) -> None:
    clock = Clock()
    monitor, registry = setup(profile, clock, label_ttl_seconds=60)
    monitor.log_events(
        [{"request_id": f"r{i}", "features": r, "prediction": 1} for i, r in enumerate(reference_rows(4, seed=3))]
    )
    assert monitor.log_labels([("r0", 1), ("r0", 1), ("nope", 0)]) == {"joined": 1, "duplicate": 1, "unmatched": 1}
    clock.now += 61  # r1..r3 expire unlabeled
    assert monitor.log_labels([("r1", 1)]) == {"unmatched": 1}
    assert value(registry, "modelmonitor_predictions_expired_total") == 3
    assert value(registry, "modelmonitor_label_coverage_ratio") == pytest.approx(1 / 4)
    assert value(registry, "modelmonitor_labels_received_total", result="duplicate") == 1
    assert value(registry, "modelmonitor_labels_received_total", result="unmatched") == 2


def records(*pairs: tuple[str, int]) -> list[tuple[str, PendingPrediction]]:
    return [(request_id, PendingPrediction(predicted_positive=positive, group="f")) for request_id, positive in pairs]


def test_label_store_capacity_evicts_the_oldest() -> None:
    clock = Clock()
    store = MemoryLabelStore(ttl=3600, capacity=3, clock=clock)
    store.add(records(("a", 1), ("b", 1), ("c", 1)))
    clock.now += 1
    store.add(records(("d", 0), ("e", 0)))
    assert store.local_counts() == LocalCounts(pending=3, expired=2, joined=0)
    assert store.join([("a", 1)]).unmatched == 1
    joined = store.join([("d", 1)]).joined
    assert joined == [(PendingPrediction(predicted_positive=0, group="f"), 1)]


def test_label_store_ttl_is_per_entry() -> None:
    clock = Clock()
    store = MemoryLabelStore(ttl=10, capacity=100, clock=clock)
    store.add(records(("old", 1)))
    clock.now += 6
    store.add(records(("new", 1)))
    clock.now += 5  # old is 11 s old, new 5 s
    assert store.local_counts().pending == 1
    assert len(store.join([("new", 0)]).joined) == 1
    assert store.local_counts().coverage == pytest.approx(1 / 2)


def test_repeated_request_id_keeps_the_newer_prediction() -> None:
    clock = Clock()
    store = MemoryLabelStore(ttl=10, capacity=100, clock=clock)
    store.add([("x", PendingPrediction(0, "f"))])
    store.add([("x", PendingPrediction(1, "m"))])
    assert len(store) == 1
    assert store.join([("x", 1)]).joined == [(PendingPrediction(1, "m"), 1)]


def test_a_label_joins_once() -> None:
    store = MemoryLabelStore(ttl=10, capacity=100, clock=Clock())
    store.add(records(("x", 1)))
    results = store.join([("x", 1), ("x", 1), ("y", 0)])
    assert (len(results.joined), results.duplicate, results.unmatched) == (1, 1, 1)
    assert results.counts() == {"joined": 1, "duplicate": 1, "unmatched": 1}


def test_store_rejects_silly_bounds() -> None:
    with pytest.raises(ValueError, match="capacity"):
        MemoryLabelStore(ttl=1, capacity=0, clock=Clock())
    with pytest.raises(ValueError, match="ttl"):
        MemoryLabelStore(ttl=0, capacity=1, clock=Clock())


def test_pending_records_round_trip_and_tolerate_other_versions() -> None:
    record = PendingPrediction(predicted_positive=1, group="f", predicted_value=2.0)
    assert decode_pending(encode_pending(record)) == record
    assert decode_pending(b"[0]") == PendingPrediction(predicted_positive=0)  # written by an older sidecar
    newer = b'[1, "m", 3.5, 1700000000.5, "a field from a newer sidecar"]'
    assert decode_pending(newer) == PendingPrediction(1, "m", 3.5, 1700000000.5)
    with pytest.raises(ValueError, match="JSON array"):
        decode_pending(b'{"predicted_positive": 1}')


def test_fairness_gaps_with_group_samples(profile: Profile) -> None:
    monitor, registry = setup(profile, Clock(), min_group_rows=10)
    rows = reference_rows(200, seed=4)
    for i, row in enumerate(rows):
        row["gender"] = "f" if i < 100 else "m"
    # f is predicted positive 60% of the time, m 30%
    predictions = [1 if (i < 60 or 100 <= i < 130) else 0 for i in range(200)]
    monitor.log_events(
        [
            {"request_id": f"r{i}", "features": r, "prediction": p}
            for i, (r, p) in enumerate(zip(rows, predictions, strict=True))
        ]
    )
    # every f positive is labelled positive; half of the m positives were missed (fn)
    labels = [(f"r{i}", 1 if predictions[i] == 1 or (100 <= i < 130) or (130 <= i < 160) else 0) for i in range(200)]
    monitor.log_labels(labels)
    assert value(registry, "modelmonitor_fairness_gap", metric="demographic_parity_difference") == pytest.approx(0.3)
    assert value(registry, "modelmonitor_fairness_gap", metric="disparate_impact_ratio") == pytest.approx(0.5)
    assert value(registry, "modelmonitor_fairness_gap", metric="equal_opportunity_difference") == pytest.approx(0.5)
    assert (
        value(registry, "modelmonitor_fairness_group_samples", metric="demographic_parity_difference", group="f") == 100
    )
    assert value(
        registry, "modelmonitor_fairness_group_rate", metric="equal_opportunity_difference", group="m"
    ) == pytest.approx(0.5)


def test_the_label_store_url_is_checked() -> None:
    options = {"model": "churn", "version": "v3", "ttl_seconds": 60.0, "capacity": 10}
    assert isinstance(open_label_store("memory", **options), MemoryLabelStore)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected memory, redis://"):
        open_label_store("postgres://db/labels", **options)
    with pytest.raises(ValueError, match="no password in the URL"):
        open_label_store("redis://:hunter2@127.0.0.1:6379/0", **options)


def test_a_redis_store_starts_without_redis_and_names_itself_without_credentials() -> None:
    # Nothing listens on port 1: the sidecar must still start (the store connects lazily and queues).
    store = open_label_store(
        "redis://labeler@127.0.0.1:1/2", model="churn", version="v3", ttl_seconds=60.0, capacity=10
    )
    try:
        assert store.description.startswith("redis://127.0.0.1:1/2 (shared")
        store.add(records(("a", 1)))
        health = store.health()
        assert health is not None and health.queued_predictions <= 1
    finally:
        store.close()


class DeferringStore(MemoryLabelStore):
    """A memory store that, like the Redis store during an outage, defers every label until `settle()`."""

    def __init__(self) -> None:
        super().__init__(ttl=3600, capacity=100, clock=Clock())
        self.waiting: list[tuple[str, object]] = []
        self.ready = JoinResults()

    def join(self, labels: Sequence[tuple[str, object]]) -> JoinResults:
        self.waiting.extend(labels)
        return JoinResults(deferred=len(labels))

    def settle(self) -> None:
        self.ready.merge(super().join(self.waiting))
        self.waiting = []

    def settled(self) -> JoinResults:
        ready, self.ready = self.ready, JoinResults()
        return ready


def test_deferred_labels_count_once_when_settled_at_the_next_scrape(profile: Profile) -> None:
    store = DeferringStore()
    monitor = Monitor(profile, model="churn", version="v3", label_store=store)
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    rows = reference_rows(2, seed=5)
    for row in rows:
        row["gender"] = "m"
    monitor.log_events([{"request_id": f"r{i}", "features": r, "prediction": 1} for i, r in enumerate(rows)])

    assert monitor.log_labels([("r0", 1), ("r1", 0)]) == {"deferred": 2}
    assert value(registry, "modelmonitor_labels_received_total", result="joined") == 0
    store.settle()

    assert value(registry, "modelmonitor_labels_received_total", result="joined") == 2
    assert value(registry, "modelmonitor_labeled_predictions_total", group="m", outcome="tp") == 1
    assert value(registry, "modelmonitor_labeled_predictions_total", group="m", outcome="fp") == 1
    assert value(registry, "modelmonitor_labels_received_total", result="joined") == 2  # counted once
