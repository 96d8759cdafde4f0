"""A real exporter process for tests: serves modelmonitor_* series whose rates a test changes at run time.

Run as ``python tests/fake_model_exporter.py PORT STATE_FILE``. STATE_FILE is JSON read on every tick:
``{"series": [{"name": ..., "labels": {...}, "rate": per_second}, {"name": ..., "labels": {...}, "value": v}]}``;
a series with ``rate`` is a counter that grows by rate x elapsed seconds, one with ``value`` is a gauge. A series
left out of the file disappears from /metrics (so Prometheus sees it go away).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class StateCollector(Collector):
    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.lock = threading.Lock()
        self.last = time.monotonic()

    def _series(self) -> list[dict]:
        try:
            return list(json.loads(self.state_file.read_text()).get("series", []))
        except (OSError, ValueError):
            return []

    def tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            elapsed, self.last = now - self.last, now
            for series in self._series():
                if "rate" in series:
                    key = (series["name"], tuple(sorted(series.get("labels", {}).items())))
                    self.totals[key] = self.totals.get(key, 0.0) + float(series["rate"]) * elapsed

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        with self.lock:
            for series in self._series():
                labels = dict(series.get("labels", {}))
                name = series["name"]
                if "rate" in series:
                    base = name.removesuffix("_total")
                    family = families.setdefault(name, CounterMetricFamily(base, base, labels=sorted(labels)))
                    key = (name, tuple(sorted(labels.items())))
                    family.add_metric([labels[k] for k in sorted(labels)], self.totals.get(key, 0.0))
                else:
                    family = families.setdefault(name, GaugeMetricFamily(name, name, labels=sorted(labels)))
                    family.add_metric([labels[k] for k in sorted(labels)], float(series["value"]))
        yield from families.values()


def main() -> None:
    port, state_file = int(sys.argv[1]), Path(sys.argv[2])
    registry = CollectorRegistry()
    collector = StateCollector(state_file)
    registry.register(collector)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    while True:
        collector.tick()
        time.sleep(0.2)


if __name__ == "__main__":
    main()
