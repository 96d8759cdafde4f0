"""The two Prometheus HTTP API calls the demo makes itself: an instant query and a range query."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

Series = list[tuple[dict[str, str], list[tuple[float, float]]]]


def _get(url: str, path: str, params: dict[str, str]) -> Any:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=30) as response:
        answer = json.loads(response.read())
    if answer.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {params.get('query')}: {answer.get('error')}")
    return answer["data"]


def query(url: str, promql: str) -> list[tuple[dict[str, str], float]]:
    """``/api/v1/query`` now: (labels, value) per series of a vector answer."""
    data = _get(url, "/api/v1/query", {"query": promql})
    return [(dict(item["metric"]), float(item["value"][1])) for item in data.get("result") or []]


def query_range(url: str, promql: str, start: float, end: float, step: float) -> Series:
    """``/api/v1/query_range``: (labels, [(time, value)]) per series; NaN and infinite points dropped."""
    params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    series: Series = []
    for item in _get(url, "/api/v1/query_range", params).get("result") or []:
        points = [(float(t), float(v)) for t, v in item["values"] if v not in ("NaN", "+Inf", "-Inf")]
        series.append((dict(item["metric"]), points))
    return series
