"""Several replicas' query phases at once: each asking Prometheus for every model (whole queries) against each
asking for its own share only, in one run against one real Prometheus.

What runs (all on 127.0.0.1, started and stopped here): the synthetic sidecar fleet of N models
(``bench/synthetic_exporter.py``) and a Prometheus of the benchmark's own scraping it, as in
``bench/bench_operator_scale.py``; no cluster. The requests are those of the scale benchmark's N monitors (three
built-in-signal policies each), shared out over R replicas by the operator's own rendezvous hashing
(`modelmonitor.sharding.owner_of`).

Each round evaluates both ways at the same instant, one after the other (the order alternates between rounds),
every replica's `measure` in a thread of its own, all replicas at once, as R operator processes would:

* whole: ``measure(share, book=None)``: every query asks for every model and each replica keeps its own (what
  the operator did before it restricted queries below the series budget);
* own share: ``measure(share, book=<the replica's SeriesBook>)``, the operator's way: the first round (not
  counted) answers whole and teaches the book the sizes, the next ones ask for the replica's models only.

Measured per way: the wall time until every replica's queries are answered and measured (median over the
rounds), Prometheus' own time per query (its ``prometheus_http_request_duration_seconds`` for /api/v1/query) and
the largest answer. Every request's measurement must be the same both ways (same instant, same samples), or the
benchmark fails.

Usage::

    python bench/bench_share_queries.py               # 10,000 models, 2 replicas: bench/results/share_queries.md
    python bench/bench_share_queries.py --replicas 3
    python bench/bench_share_queries.py --quick       # 500 models, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench_operator_scale import EXPORTER, CountingQuerier, fleet_requests, http_get, sample_sum, wait_for
from publish import add_output_arguments, publish

from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusSettings
from modelmonitor.settings import OperatorSettings
from modelmonitor.sharding import owner_of
from modelmonitor.signals import CycleMeasurements, SeriesBook, SignalRequest, measure
from modelmonitor_sandbox.devcluster.processes import free_port

RESULTS = Path(__file__).parent / "results" / "share_queries.md"
NAMESPACE = "bench"
INTERVAL = 30


def shares(requests: Sequence[SignalRequest], replicas: int) -> list[list[SignalRequest]]:
    names = [f"replica-{r}" for r in range(replicas)]
    owned: list[list[SignalRequest]] = [[] for _ in names]
    for item in requests:
        owned[names.index(owner_of(item.namespace, item.monitor, names) or names[0])].append(item)
    return owned


@dataclass
class Way:
    name: str
    walls: list[float] = field(default_factory=list)
    queries: int = 0
    prometheus_seconds: float = 0.0
    largest: int = 0
    sent_per_round: int = 0


@contextmanager
def fleet(models: int, scrape_interval: int, workdir: Path) -> Iterator[str]:
    """The exporter and a Prometheus scraping it, every model scraped at least twice; yields Prometheus' URL."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        exporter_port, port = free_port(), free_port()
        processes.append(
            subprocess.Popen(
                [sys.executable, str(EXPORTER), "--port", str(exporter_port), "--models", str(models)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for("the synthetic exporter", lambda: http_get(f"http://127.0.0.1:{exporter_port}/healthz"), 60)
        config = {
            "global": {"scrape_interval": f"{scrape_interval}s", "scrape_timeout": f"{min(scrape_interval, 10)}s"},
            "scrape_configs": [
                {
                    "job_name": "models",
                    "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"], "labels": {"namespace": NAMESPACE}}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))
        processes.append(
            subprocess.Popen(
                [
                    shutil.which("prometheus") or "/usr/bin/prometheus",
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        url = f"http://127.0.0.1:{port}"
        wait_for("the Prometheus to be ready", lambda: http_get(f"{url}/-/ready"), 60)
        client = PrometheusClient(PrometheusSettings(url=url, timeout_seconds=30))
        try:

            def scraped() -> bool:
                answer = client.query("count(count_over_time(modelmonitor_request_errors_total[5m]) >= 3)")
                return answer.ok and bool(answer.samples) and answer.samples[0].value >= models

            print(f"waiting for three scrapes of {models:,} models", file=sys.stderr, flush=True)
            wait_for(f"{models} models scraped three times", scraped, 10 * scrape_interval + 120, interval=1)
        finally:
            client.close()
        yield url
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def query_time(url: str) -> tuple[float, float]:
    """Prometheus' own (count, seconds) of instant queries so far."""
    text = (http_get(f"{url}/metrics") or b"").decode()
    handler = {"handler": "/api/v1/query"}
    return (
        sample_sum(text, "prometheus_http_request_duration_seconds_count", **handler),
        sample_sum(text, "prometheus_http_request_duration_seconds_sum", **handler),
    )


def at_once(
    owned: Sequence[Sequence[SignalRequest]],
    querier: CountingQuerier,
    books: Sequence[SeriesBook | None],
    at: dt.datetime,
) -> tuple[float, list[CycleMeasurements]]:
    """Every replica's measure at once, each in a thread of its own; the wall seconds until all are done."""
    parallel = OperatorSettings().query_parallelism
    out: list[CycleMeasurements | None] = [None] * len(owned)

    def run(r: int) -> None:
        out[r] = measure(owned[r], querier, at=at, max_parallel=parallel, book=books[r])

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(owned))]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    cycles = [cycle for cycle in out if cycle is not None]
    if len(cycles) < len(owned):
        raise SystemExit("a replica's measure failed (its traceback is above)")
    if any(cycle.failed_queries for cycle in cycles):
        raise SystemExit("Prometheus failed a query: both ways would measure the same errors, which shows nothing")
    return wall, cycles


def same(a: Sequence[CycleMeasurements], b: Sequence[CycleMeasurements]) -> bool:
    for left, right in zip(a, b, strict=True):
        for item, measured in left.results.items():
            other = right.results[item]
            if (measured.kind, measured.series, measured.reason) != (other.kind, other.series, other.reason):
                print(f"{item.monitor}/{item.policy}: {measured} != {other}", file=sys.stderr)
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=10_000, help="models and monitors (default 10,000)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas sharing the monitors (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds, both ways each (default 5)")
    parser.add_argument("--scrape-interval", type=int, default=10, help="seconds (default 10)")
    add_output_arguments(parser, RESULTS)
    args = parser.parse_args(argv)
    models = 500 if args.quick else args.models
    if args.replicas < 1 or models < 1 or args.rounds < 1:
        parser.error("--models, --replicas and --rounds must be at least 1")
    owned = shares(fleet_requests(NAMESPACE, models, INTERVAL), args.replicas)
    with (
        tempfile.TemporaryDirectory(prefix="bench-share-") as tmp,
        fleet(models, args.scrape_interval, Path(tmp)) as url,
    ):
        client = PrometheusClient(PrometheusSettings(url=url, timeout_seconds=30))
        querier = CountingQuerier(client)
        budget = OperatorSettings.from_env().max_series_per_answer
        books = [SeriesBook(budget=budget) for _ in owned]
        whole, share = Way("whole queries"), Way("own share")
        try:
            for round_ in range(args.rounds + 1):
                at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
                results: dict[str, list[CycleMeasurements]] = {}
                ways = [(whole, [None] * len(owned)), (share, books)]
                for way, way_books in ways if round_ % 2 == 0 else ways[::-1]:
                    before = query_time(url)
                    querier.take()
                    wall, results[way.name] = at_once(owned, querier, way_books, at)
                    after = query_time(url)
                    if round_ == 0:
                        continue  # the books learn the sizes from whole answers: not counted
                    way.walls.append(wall)
                    way.queries += int(after[0] - before[0])
                    way.prometheus_seconds += after[1] - before[1]
                    way.largest = max(way.largest, querier.take())
                    way.sent_per_round = int(after[0] - before[0])
                if not same(results[whole.name], results[share.name]):
                    raise SystemExit("the two ways measured differently at the same instant")
                if round_:
                    print(
                        f"round {round_}: whole {whole.walls[-1]:.2f} s, own share {share.walls[-1]:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(2)
        finally:
            client.close()
    sizes = [len({item.monitor for item in part}) for part in owned]
    rows = []
    for way in (whole, share):
        rows.append(
            f"| {way.name} | {statistics.median(way.walls):.2f} s ({min(way.walls):.2f}-{max(way.walls):.2f}) | "
            f"{way.sent_per_round} | {1000 * way.prometheus_seconds / way.queries:.0f} ms | {way.largest:,} | "
            f"{statistics.median(way.walls) / statistics.median(whole.walls):.2f} |"
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, cwd=Path(__file__).parent
    ).stdout.strip()
    text = "\n".join(
        [
            "# Several replicas' queries: whole against each replica's own share",
            "",
            f"Generated by `python bench/bench_share_queries.py --models {models} --replicas {args.replicas}` (method "
            f"in its docstring) on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit}: {models:,} models "
            f"of the scale benchmark's fleet (three built-in-signal policies each) in a real Prometheus "
            f"({args.scrape_interval} s scrapes), shared out over {args.replicas} replicas "
            f"({' / '.join(f'{n:,}' for n in sizes)} monitors), every replica's query phase at once, both ways at "
            f"the same instant in each of {args.rounds} rounds (same measurements both ways, checked). "
            f"{os.cpu_count()} cores, Python {platform.python_version()}; Prometheus shares the cores with the "
            "replicas' threads.",
            "",
            "| every replica asks for | query phase, all replicas done (median, range) | queries per round "
            "| Prometheus time per query (server side, mean) | largest answer | ratio |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    publish(text, args, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
