"""The sidecar: ingest throughput, proxy overhead and memory over a soak, each measured side by side in one run.

1. Ingest, one process on one core, batches of ``batch`` events with 20 numerical features, a prediction and a
   request id each (every event goes into the feature histograms, the drift window and the label store):
   * vectorized columns: ``Monitor.log_batch`` with a numpy matrix (the in-process API);
   * push events: ``Monitor.log_events`` with JSON-decoded event objects (the ``/v1/events`` path minus HTTP);
   * push over HTTP: the JSON body decoded, validated and ingested (what ``/v1/events`` does per request);
   * baseline: a straightforward per-event Python loop doing the same counting (bisect into the reference
     bounds, range and missing checks, a window deque, a dict label store).
2. Proxy overhead: a stand-in model server (aiohttp, its own process) called at a fixed rate (open loop),
   directly and through a real sidecar process in proxy mode, alternating one-second slices so both see the
   same machine load; latency percentiles of both and their difference.
3. Soak: a real sidecar process in push mode receiving events with fresh request ids (and some labels) for
   ``soak`` seconds while being scraped every second; its RSS after warm-up and at the end.

Usage::

    python bench/bench_sidecar.py            # full run (a few minutes), writes bench/results/sidecar.md
    python bench/bench_sidecar.py --quick    # seconds, prints only
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from publish import add_output_arguments, publish

FEATURES = 20
RESULTS = Path(__file__).parent / "results" / "sidecar.md"
SOAK_LABEL_CAPACITY = 20_000
"""Small enough that the label store and the joined-id memory are full well before the soak's warm-up ends."""


# --- shared -------------------------------------------------------------------------------------------------


def build_profile_file(workdir: Path, rng: np.random.Generator) -> Path:
    """A 20-feature numerical profile built by the real CLI from a .npz of reference rows."""
    columns = {f"f{j}": rng.normal(j, 1 + j / 10, 20_000) for j in range(FEATURES)}
    columns["label"] = rng.integers(0, 2, 20_000)
    np.savez(workdir / "reference.npz", **columns)
    profile = workdir / "profile.json"
    subprocess.run(
        [sys.executable, "-m", "modelmonitor", "profile", "build", str(workdir / "reference.npz"), "-o", str(profile),
         "--label", "label", "--n-boot", "200", "--window-size", "1000"],
        check=True, capture_output=True,
    )  # fmt: skip
    return profile


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- 1. ingest ----------------------------------------------------------------------------------------------


class NaiveMonitor:
    """The per-event loop a first implementation would write: same counts, one event and one value at a time."""

    def __init__(self, bounds: list[list[float]], minimum: list[float], maximum: list[float], window: int,
                 capacity: int) -> None:  # fmt: skip
        self.bounds = bounds
        self.minimum, self.maximum = minimum, maximum
        self.buckets = [[0] * (len(b) + 1) for b in bounds]
        self.sums = [0.0] * len(bounds)
        self.missing = [0] * len(bounds)
        self.range_violations = [0] * len(bounds)
        self.window: deque[tuple[float, ...]] = deque(maxlen=window)
        self.classes: dict[str, int] = {}
        self.labels: dict[str, tuple[float, int]] = {}
        self.capacity = capacity

    def log(self, request_id: str, features: dict[str, float | None], prediction: int) -> None:
        row = []
        for j, name in enumerate(self.names):
            value = features.get(name)
            if value is None:
                self.missing[j] += 1
                row.append(float("nan"))
                continue
            self.buckets[j][bisect.bisect_left(self.bounds[j], value)] += 1
            self.sums[j] += value
            if value < self.minimum[j] or value > self.maximum[j]:
                self.range_violations[j] += 1
            row.append(value)
        self.window.append(tuple(row))
        key = str(prediction)
        self.classes[key] = self.classes.get(key, 0) + 1
        self.labels[request_id] = (time.monotonic(), prediction)
        if len(self.labels) > self.capacity:
            del self.labels[next(iter(self.labels))]

    names: list[str] = [f"f{j}" for j in range(FEATURES)]


def bench_ingest(profile_path: Path, batch: int, batches: int, rng: np.random.Generator) -> dict[str, Any]:
    from modelmonitor.sidecar import Monitor, load_profile
    from modelmonitor.sidecar.events import decode_json, parse_event_document

    profile = load_profile(profile_path)
    names = list(profile.feature_names)
    refs = [profile.feature(n).reference for n in names]
    data = [rng.normal(np.arange(FEATURES), 1 + np.arange(FEATURES) / 10, (batch, FEATURES)) for _ in range(batches)]
    predictions = [rng.integers(0, 2, batch) for _ in range(batches)]
    ids = [[f"b{b}-{i}" for i in range(batch)] for b in range(batches)]
    events = [
        [{"request_id": ids[b][i], "features": dict(zip(names, data[b][i].tolist(), strict=True)),
          "prediction": int(predictions[b][i])} for i in range(batch)]
        for b in range(batches)
    ]  # fmt: skip
    bodies = [json.dumps({"events": e}).encode() for e in events]
    total = batch * batches
    results: dict[str, Any] = {"events": total, "batch": batch}

    def timed(run: Any) -> float:
        started = time.process_time()  # CPU time of this process: events per second per core
        run()
        return total / (time.process_time() - started)

    monitor = Monitor(profile, model="bench", version="v1")
    results["columns"] = timed(lambda: [monitor.log_batch(data[b], predictions=predictions[b], request_ids=ids[b])
                                        for b in range(batches)])  # fmt: skip
    monitor = Monitor(profile, model="bench", version="v1")
    results["events_api"] = timed(lambda: [monitor.log_events(e) for e in events])
    monitor = Monitor(profile, model="bench", version="v1")

    def over_http_path() -> None:
        for body in bodies:
            monitor.ingest(parse_event_document(decode_json(body), monitor.encoder, max_events=batch))

    results["json_body"] = timed(over_http_path)
    naive = NaiveMonitor(
        [list(r.bounds) for r in refs],
        [r.minimum for r in refs],
        [r.maximum for r in refs],
        1000,
        100_000,  # type: ignore[union-attr]
    )
    results["naive"] = timed(lambda: [naive.log(e["request_id"], e["features"], e["prediction"])
                                      for batch_events in events for e in batch_events])  # fmt: skip
    # the naive loop and the monitor agree on the counts (same work, checked)
    check = Monitor(profile, model="bench", version="v1")
    for b in range(batches):
        check.log_batch(data[b], predictions=predictions[b], request_ids=ids[b])
    assert [list(c) for c in check.counters.feature_buckets] == naive.buckets
    return results


# --- 2. proxy overhead --------------------------------------------------------------------------------------

MODEL_SERVER = """
import sys
from aiohttp import web

async def predict(request):
    body = await request.json()
    return web.json_response({"predictions": [[0.3, 0.7] if row[0] > 0 else [0.8, 0.2] for row in body["instances"]]})

app = web.Application()
app.router.add_post("/v1/models/bench:predict", predict)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def _load(
    url_direct: str, url_proxy: str, rate: float, seconds: int, body: bytes, *, request_ids: bool = False
) -> dict[str, list[float]]:
    """Open-loop load alternating one-second slices; ``request_ids``: a fresh ``X-Request-Id`` on every call."""
    import uuid

    import aiohttp

    latencies: dict[str, list[float]] = {"direct": [], "proxy": []}
    slices: dict[str, list[list[float]]] = {"direct": [], "proxy": []}
    failures = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(kind: str, url: str, bucket: list[float]) -> None:
            nonlocal failures
            headers = {"Content-Type": "application/json"}
            if request_ids:
                headers["X-Request-Id"] = str(uuid.uuid4())
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    failures += 1
            latencies[kind].append(time.perf_counter() - started)
            bucket.append(time.perf_counter() - started)

        tasks = []
        interval = 1.0 / rate
        start = time.perf_counter()
        for second in range(seconds):
            kind, url = ("direct", url_direct) if second % 2 == 0 else ("proxy", url_proxy)
            bucket: list[float] = []
            slices[kind].append(bucket)
            for i in range(int(rate)):
                # open loop: requests leave on schedule, whatever the answers are doing
                due = start + second + i * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(kind, url, bucket)))
        await asyncio.gather(*tasks)
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    # per-second p99s, to tell a steady overhead from a few seconds of machine contention
    latencies["direct_slice_p99"] = [float(np.percentile(b, 99)) for b in slices["direct"]]
    latencies["proxy_slice_p99"] = [float(np.percentile(b, 99)) for b in slices["proxy"]]
    return latencies


def bench_proxy(profile_path: Path, workdir: Path, rate: float, seconds: int) -> dict[str, Any]:
    model_port, sidecar_port = free_port(), free_port()
    model_script = workdir / "model_server.py"
    model_script.write_text(MODEL_SERVER)
    model = spawn([sys.executable, str(model_script), str(model_port)], workdir / "model.log")
    sidecar = spawn(
        [sys.executable, "-m", "modelmonitor", "sidecar", "--profile", str(profile_path), "--model", "bench",
         "--version", "v1", "--listen", f"127.0.0.1:{sidecar_port}", "--upstream", f"http://127.0.0.1:{model_port}"],
        workdir / "sidecar-proxy.log",
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{sidecar_port}/healthz")
        row = [round(float(v), 3) for v in np.arange(FEATURES)]
        body = json.dumps({"instances": [row]}).encode()
        direct = f"http://127.0.0.1:{model_port}/v1/models/bench:predict"
        proxied = f"http://127.0.0.1:{sidecar_port}/v1/models/bench:predict"
        asyncio.run(_load(direct, proxied, rate, 2, body))  # warm-up: connections, code paths
        latencies = asyncio.run(_load(direct, proxied, rate, seconds, body))
        load = os.getloadavg()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{sidecar_port}/metrics") as response:
            metrics = response.read().decode()
        seen = next(
            float(line.split()[-1]) for line in metrics.splitlines()
            if line.startswith("modelmonitor_requests_total{") and 'code="2xx"' in line
        )  # fmt: skip
    finally:
        stop(sidecar)
        stop(model)
    out: dict[str, Any] = {"rate": rate, "seconds": seconds, "monitored": seen, "load": load}
    out["median_slice_p99"] = {
        kind: float(np.median(latencies.pop(f"{kind}_slice_p99"))) * 1000 for kind in ("direct", "proxy")
    }
    for kind, values in latencies.items():
        ms = np.array(values) * 1000
        out[kind] = {"n": ms.size, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}
    out["overhead_p50"] = out["proxy"]["p50"] - out["direct"]["p50"]
    out["overhead_p99"] = out["proxy"]["p99"] - out["direct"]["p99"]
    return out


# --- 3. soak ------------------------------------------------------------------------------------------------


def bench_soak(profile_path: Path, workdir: Path, seconds: int, rng: np.random.Generator) -> dict[str, Any]:
    port = free_port()
    sidecar = spawn(
        [sys.executable, "-m", "modelmonitor", "sidecar", "--profile", str(profile_path), "--model", "bench",
         "--version", "v1", "--listen", f"127.0.0.1:{port}", "--label-capacity", str(SOAK_LABEL_CAPACITY)],
        workdir / "sidecar-soak.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    sent = 0
    samples: list[tuple[float, int]] = []
    try:
        wait_http(f"{url}/healthz")
        names = [f"f{j}" for j in range(FEATURES)]
        rows = rng.normal(np.arange(FEATURES), 1, (1000, FEATURES)).round(3).tolist()
        started = time.monotonic()
        next_scrape = started
        batch_number = 0
        while (now := time.monotonic()) - started < seconds:
            events = [{"request_id": f"s{batch_number}-{i}", "features": dict(zip(names, row, strict=True)),
                       "prediction": i % 2} for i, row in enumerate(rows)]  # fmt: skip
            request = urllib.request.Request(f"{url}/v1/events", data=json.dumps({"events": events}).encode())
            with urllib.request.urlopen(request) as response:
                assert response.status == 202
            labels = [{"request_id": f"s{batch_number}-{i}", "label": 1} for i in range(0, 1000, 10)]
            urllib.request.urlopen(urllib.request.Request(f"{url}/v1/labels", data=json.dumps(labels).encode())).read()
            sent += 1000
            batch_number += 1
            if now >= next_scrape:
                urllib.request.urlopen(f"{url}/metrics").read()
                samples.append((now - started, rss_kib(sidecar.pid)))
                next_scrape += 1.0
    finally:
        stop(sidecar)
    warm = [rss for t, rss in samples if t >= seconds * 0.25]
    timeline = [(round(t), rss // 1024) for t, rss in samples[:: max(1, len(samples) // 8)]]
    return {
        "timeline_mib": timeline,
        "seconds": seconds,
        "events": sent,
        "rss_start_kib": warm[0],
        "rss_end_kib": warm[-1],
        "rss_max_kib": max(warm),
        "growth_pct": 100.0 * (warm[-1] - warm[0]) / warm[0],
    }


# --- report -------------------------------------------------------------------------------------------------


def report(ingest: dict[str, Any], proxy: dict[str, Any], soak: dict[str, Any], quick: bool) -> str:
    base = ingest["naive"]
    lines = [
        "# Sidecar benchmark",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores"
        f" (shared with other work), Python {platform.python_version()}"
        f"{' (quick mode: small sizes, rough numbers)' if quick else ''}. "
        "Reproduce with `python bench/bench_sidecar.py`.",
        "",
        f"## Ingest: {ingest['events']:,} events of {FEATURES} numerical features, batches of {ingest['batch']:,}",
        "",
        "Events per second of CPU time of one process (one core). Every event is binned into its feature",
        "histograms, range- and missing-checked, written to the drift window and stored for the label join.",
        "",
        "| path | events/s per core | vs per-event loop |",
        "|---|---:|---:|",
        f"| vectorized columns (`Monitor.log_batch`, numpy matrix) | {ingest['columns']:,.0f} | "
        f"{ingest['columns'] / base:.1f}x |",
        f"| push events (`Monitor.log_events`, decoded JSON objects) | {ingest['events_api']:,.0f} | "
        f"{ingest['events_api'] / base:.1f}x |",
        f"| push body (`/v1/events` work: JSON decode + validate + ingest) | {ingest['json_body']:,.0f} | "
        f"{ingest['json_body'] / base:.1f}x |",
        f"| baseline: per-event Python loop, same counting | {base:,.0f} | 1.0x |",
        "",
        f"## Proxy overhead at {proxy['rate']:.0f} requests/s (KServe v1, one instance per request)",
        "",
        f"Open-loop load for {proxy['seconds']} s, alternating one-second slices direct / through the sidecar, "
        f"same stand-in model server. The sidecar recorded {proxy['monitored']:,.0f} proxied calls.",
        "",
        "| | requests | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|",
        f"| direct to the model server | {proxy['direct']['n']} | {proxy['direct']['p50']:.2f} | "
        f"{proxy['direct']['p99']:.2f} |",
        f"| through the sidecar | {proxy['proxy']['n']} | {proxy['proxy']['p50']:.2f} | {proxy['proxy']['p99']:.2f} |",
        f"| **overhead** | | **{proxy['overhead_p50']:.2f}** | **{proxy['overhead_p99']:.2f}** |",
        "",
        f"Median over the one-second slices of each slice's p99: direct {proxy['median_slice_p99']['direct']:.2f} ms, "
        f"through the sidecar {proxy['median_slice_p99']['proxy']:.2f} ms (overhead "
        f"{proxy['median_slice_p99']['proxy'] - proxy['median_slice_p99']['direct']:.2f} ms). The machine's "
        f"1-minute load average after the run was {proxy['load']:.1f} on {os.cpu_count()} cores: the load "
        "generator, the model server and the sidecar share them with other work, so a second of contention "
        "shows in the overall p99 (the extra hop suffers it twice).",
        "",
        f"## Memory over a {soak['seconds']} s soak",
        "",
        f"{soak['events']:,} events with fresh request ids (and a label for every tenth) pushed in batches of "
        f"1,000 while Prometheus-style scrapes ran every second; label store capped at {SOAK_LABEL_CAPACITY:,} "
        "(full after a few seconds, as is the memory of joined ids), drift window at 1,000 rows.",
        "",
        "| RSS after warm-up (25% of the run) | RSS at the end | max after warm-up | growth |",
        "|---:|---:|---:|---:|",
        f"| {soak['rss_start_kib'] / 1024:.1f} MiB | {soak['rss_end_kib'] / 1024:.1f} MiB | "
        f"{soak['rss_max_kib'] / 1024:.1f} MiB | {soak['growth_pct']:+.1f}% |",
        "",
        "RSS over the run (seconds, MiB): " + ", ".join(f"{t} s {m}" for t, m in soak["timeline_mib"]) + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_arguments(parser, RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    with tempfile.TemporaryDirectory(prefix="mm-bench-sidecar-") as tmp:
        workdir = Path(tmp)
        profile = build_profile_file(workdir, rng)
        ingest = bench_ingest(profile, batch=10_000, batches=2 if args.quick else 10, rng=rng)
        print(json.dumps(ingest, indent=1), flush=True)
        proxy = bench_proxy(profile, workdir, rate=500, seconds=4 if args.quick else 30)
        print(json.dumps(proxy, indent=1), flush=True)
        soak = bench_soak(profile, workdir, seconds=6 if args.quick else 150, rng=rng)
        print(json.dumps(soak, indent=1), flush=True)
    text = report(ingest, proxy, soak, args.quick)
    publish(text, args, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
