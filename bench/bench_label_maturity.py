"""Maturity cohorts (``--label-maturity``): what holding a joined label until its prediction is mature costs.

1. Memory per held outcome: Redis' ``used_memory`` growth and ``MEMORY USAGE`` of the sorted set over N outcomes
   held by the Redis store (a binary model's record, an integer label), and the memory store's Python allocations
   per outcome (tracemalloc; the prediction's record is already in memory, handed over by the join).
2. What the prediction's time adds to each pending prediction in Redis: ``used_memory`` per pending record with
   and without ``predicted_at``, measured in the same run (the baseline: a sidecar without ``--label-maturity``).
3. Sweep throughput: outcomes taken by the sweep script per second per core (CPU of this process and of
   redis-server), beside the join's labels per second per core in the same run.

    python bench/bench_label_maturity.py            # about a minute, writes bench/results/label_maturity.md
    python bench/bench_label_maturity.py --quick    # seconds, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench_label_store import Redis, _cpu, _store, _wait_written
from publish import add_output_arguments, publish

from modelmonitor.sidecar.labels import HeldOutcome, PendingPrediction, decode_held
from modelmonitor.sidecar.labelstore.memory import MemoryLabelStore
from modelmonitor.sidecar.labelstore.redis_store import SWEEP_SCRIPT, RedisLabelStore, RedisStoreSettings

RESULTS = Path(__file__).parent / "results" / "label_maturity.md"


def _held(n: int, due: float) -> list[HeldOutcome]:
    now = time.time()
    return [
        HeldOutcome("1d", due + i * 1e-3, PendingPrediction(i % 2, "f", None, round(now + i * 1e-3, 3)), i % 2)
        for i in range(n)
    ]


def _holding_store(redis: Redis, namespace: str) -> RedisLabelStore:
    """A Redis store that writes held outcomes and never sweeps (no maturities of its own)."""
    import redis as redis_py

    settings = RedisStoreSettings(ttl_seconds=86_400)
    return RedisLabelStore(redis_py.Redis.from_url(redis.url), namespace=namespace, settings=settings, description="")


def _hold(redis: Redis, namespace: str, outcomes: list[HeldOutcome]) -> None:
    store = _holding_store(redis, namespace)
    store.hold(outcomes)
    while redis.redis.zcard(f"{namespace}:m:1d") < len(outcomes):
        time.sleep(0.05)
    store.close()


def bench_memory(redis: Redis, n: int) -> dict[str, float]:
    outcomes = _held(n, time.time() + 86_400)
    before = redis.used_memory()
    _hold(redis, "modelmonitor:bench:held", outcomes)
    held_redis = (redis.used_memory() - before) / n
    usage = redis.redis.memory_usage("modelmonitor:bench:held:m:1d", samples=0) / n
    redis.redis.delete("modelmonitor:bench:held:m:1d")

    pending: dict[str, float] = {}
    for label, predicted_at in (("without", None), ("with", round(time.time(), 3))):
        store = _store("redis", redis.url, label)
        before, keys = redis.used_memory(), redis.redis.dbsize()
        store.add(
            [(f"{i:08x}-7f3e-4c1a-9b2d-{i:012x}", PendingPrediction(i % 2, "f", None, predicted_at)) for i in range(n)]
        )
        while redis.redis.dbsize() < keys + n:
            time.sleep(0.05)
        sample = [f"{i:08x}-7f3e-4c1a-9b2d-{i:012x}" for i in range(0, n, max(1, n // 1000))]
        usage_of = [redis.redis.memory_usage(f"modelmonitor:bench:{label}:p:{r}", samples=0) for r in sample]
        pending[label] = (redis.used_memory() - before) / n
        pending[label + "_usage"] = sum(usage_of) / len(usage_of)
        store.close()

    records = [outcome.record for outcome in _held(n, time.time())]  # the join's: in memory already
    tracemalloc.start()
    memory_store = MemoryLabelStore(ttl=86_400, capacity=n, clock=time.monotonic)
    baseline = tracemalloc.get_traced_memory()[0]
    memory_store.hold([HeldOutcome("1d", time.time() + 86_400, record, 1) for record in records])
    python_bytes = (tracemalloc.get_traced_memory()[0] - baseline) / n
    tracemalloc.stop()
    return {
        "records": n,
        "held_redis": held_redis,
        "held_usage": usage,
        "pending_without": pending["without"],
        "pending_with": pending["with"],
        "pending_usage_without": pending["without_usage"],
        "pending_usage_with": pending["with_usage"],
        "held_memory_store": python_bytes,
    }


def bench_sweep(redis: Redis, n: int) -> dict[str, float]:
    """Outcomes swept per core-second, and labels joined per core-second in the same run (the baseline)."""
    _hold(redis, "modelmonitor:bench:sweep", _held(n, time.time() - n * 1e-3 - 1))  # all due
    sweep = redis.redis.register_script(SWEEP_SCRIPT)  # what a sidecar's sweep runs, then decodes
    mine, server = _cpu(), redis.cpu_seconds()
    taken = 0
    while taken < n:
        answer = sweep(keys=["modelmonitor:bench:sweep:m:1d"], args=[repr(time.time()), 1000])[0]
        taken += len([decode_held(answer[i], "1d", float(answer[i + 1])) for i in range(0, len(answer), 2)])
    sweep_cpu = (_cpu() - mine) + (redis.cpu_seconds() - server)

    join_store = _store("redis", redis.url, "join")
    ids = [f"{i:08x}-7f3e-4c1a-9b2d-{i:012x}" for i in range(n)]
    join_store.add([(request_id, PendingPrediction(i % 2, "f")) for i, request_id in enumerate(ids)])
    _wait_written(join_store)
    mine, server = _cpu(), redis.cpu_seconds()
    for start in range(0, n, 1000):
        join_store.join([(request_id, 1) for request_id in ids[start : start + 1000]])
    join_cpu = (_cpu() - mine) + (redis.cpu_seconds() - server)
    join_store.close()
    return {"outcomes": n, "sweep_per_core": n / sweep_cpu, "join_per_core": n / join_cpu}


def report(memory: dict[str, float], sweep: dict[str, float], quick: bool) -> str:
    per_day = memory["held_redis"] * 1e6 / 2**20
    lines = [
        "# Maturity cohorts benchmark",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores"
        f" (shared with other work), Python {platform.python_version()}, redis-server on loopback"
        f"{' (quick mode: small sizes, rough numbers)' if quick else ''}. "
        "Reproduce with `python bench/bench_label_maturity.py`.",
        "",
        f"## Memory ({memory['records']:,.0f} outcomes / records, a binary model)",
        "",
        "| | bytes |",
        "|---|---:|",
        f"| Redis `used_memory` growth per held outcome (one maturity) | {memory['held_redis']:.0f} |",
        f"| Redis `MEMORY USAGE` of the sorted set per held outcome | {memory['held_usage']:.0f} |",
        f"| memory store, Python allocations per held outcome (the outcome and its heap entry; the record is the "
        f"join's) | "
        f"{memory['held_memory_store']:.0f} |",
        f"| a pending prediction without `--label-maturity` (baseline): `MEMORY USAGE` of its key / `used_memory` "
        f"growth | {memory['pending_usage_without']:.0f} / {memory['pending_without']:.0f} |",
        f"| a pending prediction with it (the prediction's time in the record): `MEMORY USAGE` / `used_memory` | "
        f"{memory['pending_usage_with']:.0f} / {memory['pending_with']:.0f} |",
        "",
        "The prediction's time makes a pending prediction's key "
        f"{memory['pending_usage_with'] / memory['pending_usage_without']:.2f}x as large (`MEMORY USAGE`; the "
        "`used_memory` figures move with the allocator's size classes). 1 million labels a day held for `1d`: "
        f"{per_day:.0f} MiB of Redis memory per maturity.",
        "",
        f"## Sweep ({sweep['outcomes']:,.0f} outcomes due, batches of 1,000)",
        "",
        "Per core: items / (CPU seconds of this process + CPU seconds of redis-server).",
        "",
        "| | per second per core |",
        "|---|---:|",
        f"| labels joined (baseline, the Redis store's join) | {sweep['join_per_core']:,.0f} |",
        f"| held outcomes swept | {sweep['sweep_per_core']:,.0f} |",
        "",
        f"The sweep takes outcomes at {sweep['sweep_per_core'] / sweep['join_per_core']:.2f}x the rate labels join.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_arguments(parser, RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mm-bench-maturity-") as tmp:
        redis = Redis(Path(tmp))
        try:
            n = 10_000 if args.quick else 100_000
            memory = bench_memory(redis, n)
            sweep = bench_sweep(redis, n)
        finally:
            redis.stop()
    text = report(memory, sweep, args.quick)
    publish(text, args, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
