"""Maturity cohorts (``--label-maturity``): a joined label counted again when its prediction reaches a maturity
age, if it joined by then; later labels counted late. The memory store, and the Redis store on a real
redis-server (two sweepers on one Redis take each held outcome exactly once)."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from test_sidecar_label_kinds import build, objects

from conftest import reference_rows
from modelmonitor.sidecar import Monitor, MonitorSettings
from modelmonitor.sidecar.labels import (
    HeldOutcome,
    Maturity,
    PendingPrediction,
    decode_held,
    encode_held,
    hold_or_late,
    parse_maturities,
)
from modelmonitor.sidecar.labelstore.memory import MemoryLabelStore
from modelmonitor.sidecar.labelstore.redis_store import RedisLabelStore, RedisStoreSettings
from modelmonitor.sidecar.profile import Profile

M = {"model": "churn", "version": "v3"}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_maturities_are_normalized_durations_without_repeats() -> None:
    assert parse_maturities("1h, 60m,1d,90s") == (Maturity("1h", 3600), Maturity("1d", 86400), Maturity("1m30s", 90))
    with pytest.raises(ValueError, match="--label-maturity: 'soon' is not a duration"):
        parse_maturities("1h,soon")
    with pytest.raises(ValueError, match="at least 1s"):
        parse_maturities("500ms")


def test_a_label_is_held_until_its_prediction_is_mature_or_counted_late() -> None:
    hour, day = Maturity("1h", 3600), Maturity("1d", 86400)
    quick = PendingPrediction(1, "f", None, 1000.0)
    slow = PendingPrediction(0, "m", None, 1000.0 - 7200)  # two hours old when its label joins
    unknown_age = PendingPrediction(1, "f")  # written by a sidecar without --label-maturity
    held, late = hold_or_late([(quick, 1), (slow, 0), (unknown_age, 1)], [hour, day], now=1000.0 + 60)
    assert held == [
        HeldOutcome("1h", 1000.0 + 3600, quick, 1),
        HeldOutcome("1d", 1000.0 + 86400, quick, 1),
        HeldOutcome("1d", 1000.0 - 7200 + 86400, slow, 0),
    ]
    assert late == {"1h": 1}  # the slow label missed the 1h cohort; the unknown age takes part in none


def test_held_outcomes_round_trip_and_equal_ones_stay_distinct() -> None:
    outcome = HeldOutcome("1h", 4600.0, PendingPrediction(1, "f", 2.0, 1000.0), "cat")
    first, second = encode_held(outcome), encode_held(outcome)
    assert first != second  # two equal outcomes are two members of a Redis set
    assert decode_held(first, "1h", 4600.0) == outcome


def setup(profile: Profile, wall: Clock, maturities: str = "1h,1d") -> tuple[Monitor, CollectorRegistry]:
    monitor = Monitor(
        profile,
        model="churn",
        version="v3",
        settings=MonitorSettings(label_maturities=parse_maturities(maturities)),
        clock=Clock(0.0),
        wall_clock=wall,
    )
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    return monitor, registry


def matured(registry: CollectorRegistry, maturity: str, outcome: str, group: str = "f") -> float | None:
    return registry.get_sample_value(
        "modelmonitor_matured_labeled_predictions_total",
        {**M, "group": group, "outcome": outcome, "maturity": maturity},
    )


def predict(monitor: Monitor, ids: list[str], predictions: list[int]) -> None:
    rows = reference_rows(len(ids), seed=11)
    for row in rows:
        row["gender"] = "f"
    monitor.log_events(
        [
            {"request_id": rid, "features": row, "prediction": p}
            for rid, row, p in zip(ids, rows, predictions, strict=True)
        ]
    )


def test_matured_outcomes_count_when_the_prediction_reaches_its_age(profile: Profile) -> None:
    wall = Clock(10_000.0)
    monitor, registry = setup(profile, wall)
    # exported at 0 from the first scrape, so Prometheus' increase() counts the first cohort
    assert matured(registry, "1h", "tp") == 0 and matured(registry, "1d", "fn") == 0
    assert registry.get_sample_value("modelmonitor_labels_late_total", {**M, "maturity": "1h"}) == 0
    predict(monitor, ["a", "b", "c"], [1, 1, 0])

    wall.now += 600  # ten minutes later: labels for a (tp) and b (fp)
    assert monitor.log_labels([("a", 1), ("b", 0)]) == {"joined": 2}
    assert (
        registry.get_sample_value("modelmonitor_labeled_predictions_total", {**M, "group": "f", "outcome": "tp"}) == 1
    )
    assert matured(registry, "1h", "tp") == 0  # joined, but the prediction is not an hour old yet

    wall.now += 3000 + 1  # the predictions are an hour old
    assert (matured(registry, "1h", "tp"), matured(registry, "1h", "fp")) == (1, 1)
    assert matured(registry, "1d", "tp") == 0

    wall.now += 3600  # two hours: c's label (fn) comes too late for the 1h cohort, in time for 1d
    monitor.log_labels([("c", 1)])
    assert registry.get_sample_value("modelmonitor_labels_late_total", {**M, "maturity": "1h"}) == 1
    assert matured(registry, "1h", "fn") == 0
    wall.now = 10_000.0 + 86_400
    assert [matured(registry, "1d", o) for o in ("tp", "fp", "tn", "fn")] == [1, 1, 0, 1]
    assert [matured(registry, "1h", o) for o in ("tp", "fp", "tn", "fn")] == [1, 1, 0, 0]  # counted once


def test_without_maturities_records_carry_no_age_and_no_cohort_is_exported(profile: Profile) -> None:
    monitor = Monitor(profile, model="churn", version="v3")
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    predict(monitor, ["a"], [1])
    store = monitor.labels
    assert isinstance(store, MemoryLabelStore)
    assert store.join([("a", 1)]).joined[0][0].predicted_at is None
    assert registry.get_sample_value("modelmonitor_labels_late_total", {**M, "maturity": "1h"}) is None


def outcome_samples(registry: CollectorRegistry, prefix: str, names: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """The samples of the counters ``prefix + name`` for ``names``, by name and labels (``maturity`` left out)."""
    found: dict[tuple[str, ...], float] = {}
    for family in registry.collect():
        for sample in family.samples:
            name = sample.name.removeprefix(prefix).removesuffix("_total")
            if sample.name.startswith(prefix) and name in names:
                labels = sorted(f"{k}={v}" for k, v in sample.labels.items() if k != "maturity")
                found[(name, *labels)] = sample.value
    return found


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_multiclass_and_regression_cohorts_are_counted_by_the_same_code_as_joins(task: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=900)
    if task == "multiclass":
        profile = build({"x": x, "y": objects([str(c) for c in rng.choice(["cat", "dog", "bird"], size=900)])},
                        label_column="y")  # fmt: skip
        predicted: list[object] = ["cat", "dog", "bird", "cat"]
        truth: list[object] = ["cat", "cat", "bird", "dog"]
        names: tuple[str, ...] = ("class_outcomes",)
    else:
        profile = build({"x": x, "pred": 2 * x, "y": 2 * x + rng.normal(size=900)},
                        label_column="y", prediction_column="pred")  # fmt: skip
        predicted, truth = [1.0, 2.0, 3.0, 4.0], [1.5, 0.0, 3.0, 10.0]
        names = ("regression_absolute_error", "regression_squared_error", "regression_labeled_predictions")
    assert profile.task == task
    wall = Clock(50_000.0)
    settings = MonitorSettings(label_maturities=parse_maturities("1h"))
    monitor = Monitor(profile, model="churn", version="v3", settings=settings, wall_clock=wall)
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    ids = [f"r{i}" for i in range(4)]
    monitor.log_batch({"x": [0.0] * 4}, predictions=predicted, request_ids=ids)
    wall.now += 60
    monitor.log_labels(list(zip(ids, truth, strict=True)))

    joined = outcome_samples(registry, "modelmonitor_", names)
    assert any(joined.values())
    matured = outcome_samples(registry, "modelmonitor_matured_", names)
    assert matured.keys() == joined.keys() and not any(matured.values())  # exported at 0; not an hour old yet
    wall.now += 3600
    assert outcome_samples(registry, "modelmonitor_matured_", names) == joined


def test_the_memory_store_holds_at_most_its_capacity_and_counts_the_rest() -> None:
    wall = Clock(100.0)
    store = MemoryLabelStore(ttl=60, capacity=2, clock=Clock(0.0), wall_clock=wall)
    record = PendingPrediction(1, "f", None, 0.0)
    store.hold([HeldOutcome("1h", due, record, 1) for due in (300.0, 200.0, 400.0)])
    assert store.local_counts().held_dropped == 1
    wall.now = 250.0
    assert [o.due for o in store.matured()] == [200.0]
    wall.now = 1000.0
    assert [o.due for o in store.matured()] == [300.0]
    assert store.matured() == []


# --- the Redis store on a real redis-server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs Debian's redis-server (modelmonitor cluster build installs it)")
    from modelmonitor_sandbox.devcluster.redis_server import RedisServer

    server = RedisServer(Path(tmp_path_factory.mktemp("redis")), durable=False).start()
    try:
        yield server.url
    finally:
        server.stop()


def redis_store(
    url: str, namespace: str, *, maturities: tuple[str, ...] = ("1h", "1d"), batch: int = 1000
) -> RedisLabelStore:
    import redis

    settings = RedisStoreSettings(ttl_seconds=60, maturities=maturities, sweep_interval_seconds=0.05, batch_size=batch)
    return RedisLabelStore(redis.Redis.from_url(url), namespace=namespace, settings=settings, description="test")


def outcomes(n: int, due: float) -> list[HeldOutcome]:
    return [
        HeldOutcome("1h" if i % 2 else "1d", due, PendingPrediction(i % 2, "f", float(i), 0.0), i) for i in range(n)
    ]


def collect(stores: list[RedisLabelStore], expected: int) -> list[list[HeldOutcome]]:
    taken: list[list[HeldOutcome]] = [[] for _ in stores]
    deadline = time.monotonic() + 20
    while sum(map(len, taken)) < expected and time.monotonic() < deadline:
        for index, store in enumerate(stores):
            taken[index].extend(store.matured())
        time.sleep(0.05)
    time.sleep(0.3)  # a few more sweeps: nothing may come twice
    for index, store in enumerate(stores):
        taken[index].extend(store.matured())
    return taken


def test_two_sweepers_on_one_redis_take_each_due_outcome_exactly_once(redis_url: str) -> None:
    import redis

    # The writer only holds; the two sweepers take small batches, so their sweeps of one set interleave.
    writer = redis_store(redis_url, "mm:once", maturities=())
    first, second = (redis_store(redis_url, "mm:once", batch=20) for _ in range(2))
    try:
        due_soon = outcomes(10_000, time.time() + 3.0)
        not_yet = outcomes(50, time.time() + 3600)
        writer.hold(due_soon + not_yet)
        client = redis.Redis.from_url(redis_url)
        wait = time.monotonic() + 10
        while client.zcard("mm:once:m:1h") + client.zcard("mm:once:m:1d") < 10_050 and time.monotonic() < wait:
            time.sleep(0.05)
        assert first.matured() == [] and second.matured() == []  # nothing is due yet
        due_now = due_soon
        taken = collect([first, second], expected=len(due_now))
        values = Counter((o.maturity, o.label) for batch in taken for o in batch)
        assert sum(values.values()) == len(due_now)
        assert set(values.values()) == {1}  # each exactly once
        assert values == Counter((o.maturity, o.label) for o in due_now)
        assert all(taken), "every sweeper took a share"  # they raced, and the script kept them apart
        assert client.zcard("mm:once:m:1h") + client.zcard("mm:once:m:1d") == len(not_yet)
    finally:
        for store in (writer, first, second):
            store.close()


def test_held_outcomes_outlive_the_sidecar_that_held_them(redis_url: str) -> None:
    held = redis_store(redis_url, "mm:restart")
    held.hold(outcomes(20, time.time() + 1.0))
    held.close()  # stops before they are due; the queue is written on the way out

    later = redis_store(redis_url, "mm:restart")
    try:
        taken = collect([later], expected=20)[0]
        assert sorted(o.label for o in taken) == list(range(20))
        assert all(o.due <= time.time() for o in taken)
    finally:
        later.close()


def test_outcomes_swept_but_not_counted_go_back_to_redis_at_shutdown(redis_url: str) -> None:
    first = redis_store(redis_url, "mm:shutdown")
    first.hold(outcomes(10, time.time() - 1))
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = ("mm:shutdown:m:1h", "mm:shutdown:m:1d")
    deadline = time.monotonic() + 10
    while (sum(client.zcard(k) for k in keys) or not first._matured) and time.monotonic() < deadline:
        time.sleep(0.05)  # written, then swept into the sidecar, not yet handed to a scrape
    first.close()
    assert sum(client.zcard(k) for k in keys) == 10

    second = redis_store(redis_url, "mm:shutdown")
    try:
        assert sorted(o.label for o in collect([second], expected=10)[0]) == list(range(10))
    finally:
        second.close()
