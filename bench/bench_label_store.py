"""The label store: joins per second per core, the proxy's added latency and the memory per pending prediction,
the Redis store measured beside the in-memory store in the same run.

1. Join throughput: ``Monitor.log_labels`` (the work of ``POST /v1/labels`` after JSON decoding: take each
   prediction from the store, count its outcome) on N stored predictions, in batches of 1,000 labels, with the
   memory store and with the Redis store on a real redis-server. Per core = labels / (CPU seconds of this process
   + CPU seconds of redis-server), so the server's share of the work is counted too.
2. Proxy latency: two real sidecar processes in proxy mode in front of one stand-in model server, one with the
   memory store and one with the Redis store, alternating one-second slices of open-loop load; every call carries
   a fresh ``X-Request-Id``, so every call leaves a record to store.
3. Memory per pending prediction: Redis' ``MEMORY USAGE`` of the keys, and ``used_memory`` before and after
   storing N records (which includes the key space's own overhead); the memory store's Python allocations per
   record (tracemalloc).

    python bench/bench_label_store.py            # full run (a few minutes), writes bench/results/label_store.md
    python bench/bench_label_store.py --quick    # seconds, prints only
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from bench_sidecar import MODEL_SERVER, _load, free_port, spawn, stop, wait_http
from publish import add_output_arguments, publish

from modelmonitor_sandbox.devcluster.redis_server import RedisServer

RESULTS = Path(__file__).parent / "results" / "label_store.md"


FEATURES = 4


def build_profile_file(workdir: Path, rng: np.random.Generator) -> Path:
    """A small numerical profile built by the real CLI (the label store's costs do not depend on the features)."""
    columns = {f"f{j}": rng.normal(j, 1, 5_000) for j in range(FEATURES)}
    columns["label"] = rng.integers(0, 2, 5_000)
    np.savez(workdir / "reference.npz", **columns)
    profile = workdir / "profile.json"
    subprocess.run(
        [sys.executable, "-m", "modelmonitor", "profile", "build", str(workdir / "reference.npz"), "-o", str(profile),
         "--label", "label", "--n-boot", "50", "--window-size", "200", "--sketch-size", "200"],
        check=True, capture_output=True,
    )  # fmt: skip
    return profile


class Redis(RedisServer):
    """The benchmark's redis-server (no persistence), with what the figures read from it."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir / "redis", durable=False)
        self.start()
        self.redis = self.client()

    def cpu_seconds(self) -> float:
        info = self.redis.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def used_memory(self) -> int:
        return int(self.redis.info("memory")["used_memory"])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _store(kind: str, redis_url: str, namespace: str) -> Any:
    from modelmonitor.sidecar.labelstore import open_label_store

    return open_label_store(
        "memory" if kind == "memory" else redis_url,
        model="bench",
        version=namespace,
        ttl_seconds=86_400.0,
        capacity=2_000_000,
    )


def _wait_written(store: Any) -> None:
    health = store.health()
    while health is not None and health.queued_predictions:
        time.sleep(0.05)
        health = store.health()


def bench_join(profile_path: Path, redis: Redis, n: int) -> dict[str, Any]:
    from modelmonitor.sidecar import Monitor, load_profile
    from modelmonitor.sidecar.labels import PendingPrediction

    profile = load_profile(profile_path)
    out: dict[str, Any] = {"labels": n}
    for kind in ("memory", "redis"):
        store = _store(kind, redis.url, f"join-{kind}")
        monitor = Monitor(profile, model="bench", version="v1", label_store=store)
        ids = [f"req-{i:09d}" for i in range(n)]
        records = [(i, PendingPrediction(predicted_positive=k % 2, group="__none__")) for k, i in enumerate(ids)]
        cpu = _cpu()
        for first in range(0, n, 100):  # the proxy hands the store a batch per 50 ms flush
            store.add(records[first : first + 100])
        _wait_written(store)  # sleeps while the writer thread works: only CPU counts
        stored_cpu = _cpu() - cpu
        labels = [(request_id, k % 3 == 0) for k, request_id in enumerate(ids)]
        cpu, server, wall = _cpu(), redis.cpu_seconds(), time.perf_counter()
        joined = 0
        for first in range(0, n, 1000):
            joined += monitor.log_labels(labels[first : first + 1000]).get("joined", 0)
        wall = time.perf_counter() - wall
        cpu = _cpu() - cpu
        server = redis.cpu_seconds() - server if kind == "redis" else 0.0
        store.close()
        if joined != n:
            raise RuntimeError(f"{kind}: joined {joined} of {n}")
        out[kind] = {
            "store_cpu_us": stored_cpu / n * 1e6,
            "per_core": n / (cpu + server),
            "per_second_wall": n / wall,
            "sidecar_cpu_us": cpu / n * 1e6,
            "redis_cpu_us": server / n * 1e6,
        }
    out["ratio"] = out["redis"]["per_core"] / out["memory"]["per_core"]
    return out


def bench_proxy(profile_path: Path, redis: Redis, workdir: Path, rate: float, seconds: int) -> dict[str, Any]:
    model_port, memory_port, redis_port = free_port(), free_port(), free_port()
    (workdir / "model_server.py").write_text(MODEL_SERVER)
    model = spawn([sys.executable, str(workdir / "model_server.py"), str(model_port)], workdir / "model.log")
    common = [sys.executable, "-m", "modelmonitor", "sidecar", "--profile", str(profile_path), "--model", "bench",
              "--version", "proxy", "--upstream", f"http://127.0.0.1:{model_port}",
              "--label-capacity", "1000000"]  # fmt: skip
    memory = spawn([*common, "--listen", f"127.0.0.1:{memory_port}"], workdir / "sidecar-memory.log")
    shared = spawn(
        [*common, "--listen", f"127.0.0.1:{redis_port}", "--label-store", redis.url], workdir / "sidecar-redis.log"
    )
    try:
        for port in (memory_port, redis_port):
            wait_http(f"http://127.0.0.1:{port}/healthz")
        body = json.dumps({"instances": [[round(float(v), 3) for v in np.arange(FEATURES)]]}).encode()
        memory_url = f"http://127.0.0.1:{memory_port}/v1/models/bench:predict"
        redis_url = f"http://127.0.0.1:{redis_port}/v1/models/bench:predict"
        asyncio.run(_load(memory_url, redis_url, rate, 2, body, request_ids=True))  # warm-up
        latencies = asyncio.run(_load(memory_url, redis_url, rate, seconds, body, request_ids=True))
        load = os.getloadavg()[0]
        time.sleep(1)  # the writer's last batch
        stored = sum(1 for _ in redis.redis.scan_iter(match="modelmonitor:bench:proxy:p:*", count=10_000))
    finally:
        stop(shared)
        stop(memory)
        stop(model)
    out: dict[str, Any] = {"rate": rate, "seconds": seconds, "stored": stored, "load": load}
    out["median_slice_p99"] = {
        kind: float(np.median(latencies.pop(f"{kind}_slice_p99"))) * 1000 for kind in ("direct", "proxy")
    }
    for kind, values in latencies.items():
        ms = np.array(values) * 1000
        out[kind] = {"n": ms.size, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}
    out["added_p50"] = out["proxy"]["p50"] - out["direct"]["p50"]
    out["added_p99"] = out["proxy"]["p99"] - out["direct"]["p99"]
    return out


def bench_memory(redis: Redis, n: int) -> dict[str, Any]:
    from modelmonitor.sidecar.labels import PendingPrediction
    from modelmonitor.sidecar.labelstore.memory import MemoryLabelStore

    records = [
        (f"{i:08x}-7f3e-4c1a-9b2d-{i:012x}", PendingPrediction(predicted_positive=i % 2, group="f")) for i in range(n)
    ]  # UUID-shaped request ids, as most clients send
    before = redis.used_memory()
    store = _store("redis", redis.url, "memory")
    store.add(records)
    _wait_written(store)
    after = redis.used_memory()
    sample = [request_id for request_id, _ in records[:: max(1, n // 1000)]]
    usage = [redis.redis.memory_usage(f"modelmonitor:bench:memory:p:{r}", samples=0) for r in sample]
    store.join([(request_id, 1) for request_id in sample])  # leaves the duplicate markers
    markers = [redis.redis.memory_usage(f"modelmonitor:bench:memory:j:{r}", samples=0) for r in sample]
    store.close()

    del records
    tracemalloc.start()
    memory_store = MemoryLabelStore(ttl=86_400, capacity=n, clock=time.monotonic)
    baseline = tracemalloc.get_traced_memory()[0]
    # the request id strings and records counted too: the store keeps them alive
    memory_store.add(
        [(f"{i:08x}-7f3e-4c1a-9b2d-{i:012x}", PendingPrediction(predicted_positive=i % 2, group="f")) for i in range(n)]
    )
    python_bytes = (tracemalloc.get_traced_memory()[0] - baseline) / n
    tracemalloc.stop()
    return {
        "records": n,
        "memory_usage_bytes": float(np.mean(usage)),
        "used_memory_bytes": (after - before) / n,
        "marker_bytes": float(np.mean(markers)),
        "memory_store_bytes": python_bytes,
    }


def report(join: dict[str, Any], proxy: dict[str, Any], memory: dict[str, Any], quick: bool) -> str:
    per_day_30 = memory["used_memory_bytes"] * 30e6 / 2**30
    m, r = join["memory"], join["redis"]
    lines = [
        "# Label store benchmark",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores"
        f" (shared with other work), Python {platform.python_version()}, redis-server on loopback"
        f"{' (quick mode: small sizes, rough numbers)' if quick else ''}. "
        "Reproduce with `python bench/bench_label_store.py`.",
        "",
        f"## Joins: {join['labels']:,} labels through `Monitor.log_labels`, batches of 1,000",
        "",
        "Per core: labels / (CPU seconds of the joining process + CPU seconds of redis-server).",
        "",
        "| store | labels joined/s per core | labels/s (wall, one thread) | sidecar CPU per label "
        "| Redis CPU per label |",
        "|---|---:|---:|---:|---:|",
        f"| memory (baseline) | {m['per_core']:,.0f} | {m['per_second_wall']:,.0f} | "
        f"{m['sidecar_cpu_us']:.1f} us | - |",
        f"| Redis | {r['per_core']:,.0f} | {r['per_second_wall']:,.0f} | {r['sidecar_cpu_us']:.1f} us | "
        f"{r['redis_cpu_us']:.1f} us |",
        "",
        f"The Redis store joins at {join['ratio']:.2f}x the memory store's rate per core.",
        "",
        "Storing a prediction (the work serving adds, in batches of 100 as the proxy's flush hands them over), CPU "
        f"of the sidecar process per record: memory store {m['store_cpu_us']:.1f} us; Redis store "
        f"{r['store_cpu_us']:.1f} us, of which the request path does only the append to the queue and the writer "
        "thread the rest (pipelined `SET ... EX`).",
        "",
        f"## Proxy latency at {proxy['rate']:.0f} requests/s, every call with a fresh request id",
        "",
        f"Open-loop load for {proxy['seconds']} s, alternating one-second slices between a sidecar with the memory "
        f"store and one with the Redis store, same stand-in model server. Records in Redis afterwards: "
        f"{proxy['stored']:,}.",
        "",
        "| | requests | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|",
        f"| sidecar, memory store (baseline) | {proxy['direct']['n']} | {proxy['direct']['p50']:.2f} | "
        f"{proxy['direct']['p99']:.2f} |",
        f"| sidecar, Redis store | {proxy['proxy']['n']} | {proxy['proxy']['p50']:.2f} | {proxy['proxy']['p99']:.2f} |",
        f"| **added by the Redis store** | | **{proxy['added_p50']:.2f}** | **{proxy['added_p99']:.2f}** |",
        "",
        f"Median over the one-second slices of each slice's p99: memory {proxy['median_slice_p99']['direct']:.2f} ms, "
        f"Redis {proxy['median_slice_p99']['proxy']:.2f} ms. 1-minute load average after the run: "
        f"{proxy['load']:.1f} on {os.cpu_count()} cores (the load generator, the model server, both sidecars and "
        "redis-server share them with other work).",
        "",
        f"## Memory per pending prediction ({memory['records']:,} records, UUID-shaped request ids)",
        "",
        "| | bytes |",
        "|---|---:|",
        f"| Redis `MEMORY USAGE` of one pending key (mean of a sample) | {memory['memory_usage_bytes']:.0f} |",
        f"| Redis `used_memory` growth / records (with the key space's and expiry table's overhead) | "
        f"{memory['used_memory_bytes']:.0f} |",
        f"| Redis, a joined id remembered for duplicates (`MEMORY USAGE`) | {memory['marker_bytes']:.0f} |",
        f"| memory store, Python allocations per record, id and record included (tracemalloc) | "
        f"{memory['memory_store_bytes']:.0f} |",
        "",
        f"1 million predictions a day kept 30 days: {per_day_30:.1f} GiB of Redis memory "
        "(at the `used_memory` figure).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_arguments(parser, RESULTS)
    parser.add_argument("--rate", type=float, default=200, help="proxied calls per second (200)")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    with tempfile.TemporaryDirectory(prefix="mm-bench-labels-") as tmp:
        workdir = Path(tmp)
        profile = build_profile_file(workdir, rng)
        redis = Redis(workdir)
        try:
            join = bench_join(profile, redis, n=5_000 if args.quick else 100_000)
            print(json.dumps(join, indent=1), flush=True)
            proxy = bench_proxy(profile, redis, workdir, rate=args.rate, seconds=4 if args.quick else 30)
            print(json.dumps(proxy, indent=1), flush=True)
            memory = bench_memory(redis, n=10_000 if args.quick else 100_000)
            print(json.dumps(memory, indent=1), flush=True)
        finally:
            redis.stop()
    text = report(join, proxy, memory, args.quick)
    publish(text, args, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
