"""Fuzzed input to a real sidecar process in proxy mode, in front of a real model-server process.

Ten thousand and more generated bodies go to ``/v1/events``, ``/v1/labels`` and through the proxy as KServe v1
and Open Inference Protocol v2 calls: well-formed ones, ones with wrong types and values in every field, random
JSON, and bytes that are not JSON at all. The sidecar must never fail (no 5xx of its own, never exit); every
refusal is a 4xx whose body says what was wrong; every proxied answer is byte for byte the one the model gives
for the same body; and the counters on its /metrics add up to what it accepted and refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import urllib3
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from modelmonitor_sandbox.devcluster.processes import free_port
from support import build_churn_profile, wait_for

pytestmark = pytest.mark.cluster

TESTS = Path(__file__).resolve().parents[1]
BODIES_PER_DRAW = 20
DRAWS = 510  # 10,200 bodies: the issue asks for at least 10,000
FEATURES = ("age", "income", "country", "gender")

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
feature_values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from(["us", "de", "fr", "f", "m", "atlantis", "", "NaN"]),
    json_values,
)
feature_rows = st.dictionaries(st.one_of(st.sampled_from(FEATURES), st.text(max_size=8)), feature_values, max_size=6)
# Mostly ids from a small pool, so labels meet the predictions they belong to (and some meet them twice).
known_ids = st.sampled_from([f"r{i}" for i in range(200)])
request_ids = st.one_of(
    known_ids,
    known_ids,
    known_ids,
    st.text(min_size=1, max_size=12),
    st.integers(),
    st.none(),
    st.text(min_size=257, max_size=300),
)
event = st.fixed_dictionaries(
    {"features": st.one_of(feature_rows, json_values)},
    optional={
        "request_id": request_ids,
        "prediction": st.one_of(st.sampled_from([0, 1, "yes", "no"]), json_scalars),
        "score": st.one_of(st.floats(min_value=0, max_value=1), json_scalars),
        "group": st.one_of(st.sampled_from(["f", "m"]), json_values),
        "error": st.one_of(st.booleans(), json_scalars),
        "latency_seconds": st.one_of(st.floats(min_value=0, max_value=30), json_scalars),
        "surprise": json_values,
    },
)
label = st.fixed_dictionaries(
    {"request_id": request_ids, "label": st.one_of(st.sampled_from([0, 1, True, "1"]), json_values)},
    optional={"extra": json_values},
)


def documents(key: str, item: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Bodies for one endpoint: its documents (good and bad items) most often, then other JSON, truncated JSON and
    bytes that are not JSON."""
    document = st.fixed_dictionaries({key: st.lists(item, max_size=8)}).map(lambda d: json.dumps(d).encode())
    as_json = st.one_of(document, json_values.map(lambda d: json.dumps(d).encode()))
    return st.one_of(
        document,
        document,
        document,
        as_json,
        as_json.flatmap(lambda raw: st.integers(0, max(len(raw) - 1, 0)).map(lambda cut: raw[:cut])),
        st.binary(max_size=200),
    )


v1_row = st.one_of(feature_rows, st.lists(feature_values, max_size=5), json_values)
v2_input = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from([*FEATURES, "input-0"]), json_scalars),
        "shape": st.one_of(st.lists(st.integers(0, 4), min_size=1, max_size=2), json_values),
        "datatype": st.one_of(st.sampled_from(["FP32", "INT64", "BYTES"]), json_scalars),
        "data": st.one_of(st.lists(feature_values, max_size=8), json_values),
    }
)
# (path, body): pushed events and labels, and calls the sidecar forwards to the model.
calls = st.one_of(
    documents("events", event).map(lambda body: ("/v1/events", body)),
    documents("labels", label).map(lambda body: ("/v1/labels", body)),
    documents("instances", v1_row).map(lambda body: ("/v1/models/churn:predict", body)),
    documents("inputs", v2_input).map(lambda body: ("/v2/models/churn/infer", body)),
)


class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("wb") as log:
            self.running[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        return self.running[name]

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for process in self.running.values():
            process.terminate()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Processes]]:
    """(sidecar URL, model server URL, the processes): a sidecar in proxy mode in front of the model server."""
    workdir = tmp_path_factory.mktemp("fuzz-sidecar")
    build_churn_profile(workdir, rows=1500)
    model_port, sidecar_port = free_port(), free_port()
    processes = Processes(workdir)
    model = processes.spawn("model", [sys.executable, str(TESTS / "echo_model_server.py"), str(model_port)])
    sidecar = processes.spawn("sidecar", [
        sys.executable, "-m", "modelmonitor", "sidecar", "--profile", "profile.json",
        "--listen", f"127.0.0.1:{sidecar_port}", "--upstream", f"http://127.0.0.1:{model_port}",
        "--model", "churn", "--version", "v1", "--max-body-bytes", "100000",
    ])  # fmt: skip
    http = urllib3.PoolManager()
    for name, process, port in (("model", model, model_port), ("sidecar", sidecar, sidecar_port)):
        wait_for(
            f"the {name} answering",
            lambda p=process, n=name, port=port: (
                (p.poll() is None or pytest.fail(f"{n} exited: {processes.log(n)}"))
                and _up(http, f"http://127.0.0.1:{port}/healthz")
            ),
            timeout=60,
        )
    yield f"http://127.0.0.1:{sidecar_port}", f"http://127.0.0.1:{model_port}", processes
    processes.stop()


def _up(http: urllib3.PoolManager, url: str) -> bool:
    try:
        return bool(http.request("GET", url, timeout=2, retries=False).status == 200)
    except urllib3.exceptions.HTTPError:
        return False


def counters(text: str) -> Counter[tuple[str, str]]:
    """(series name, the label that matters) -> value, from a /metrics page."""
    found: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.labels.get("reason") or sample.labels.get("result") or sample.labels.get("code") or ""
            found[(sample.name, key)] += sample.value
    return found


def test_ten_thousand_fuzzed_bodies_never_break_the_sidecar_and_are_counted(
    proxy: tuple[str, str, Processes],
) -> None:
    sidecar, model, processes = proxy
    http = urllib3.PoolManager(maxsize=8)
    seen: Counter[str] = Counter()
    expected: Counter[str] = Counter()  # what the sidecar's counters must add up to
    failures: list[str] = []

    def post(url: str, body: bytes) -> urllib3.BaseHTTPResponse:
        return http.request(
            "POST", url, body=body, headers={"Content-Type": "application/json"}, timeout=30, retries=False
        )

    def exchange(
        call: tuple[str, bytes],
    ) -> tuple[str, bytes, urllib3.BaseHTTPResponse, urllib3.BaseHTTPResponse | None]:
        path, body = call
        answer = post(sidecar + path, body)
        direct = None if path in ("/v1/events", "/v1/labels") else post(model + path, body)
        return path, body, answer, direct

    def check(
        path: str, body: bytes, answer: urllib3.BaseHTTPResponse, direct: urllib3.BaseHTTPResponse | None
    ) -> None:
        seen[f"{path} {answer.status // 100}xx"] += 1
        if direct is not None:
            if (answer.status, answer.data) != (direct.status, direct.data):
                failures.append(
                    f"{path} {body[:200]!r}: {answer.status} {answer.data[:200]!r} != {direct.data[:200]!r}"
                )
            expected["requests"] += 1
        elif answer.status >= 400:
            refusal = json.loads(answer.data)
            if not (400 <= answer.status < 500 and refusal.get("error") and refusal.get("reason")):
                failures.append(f"{path} {body[:200]!r}: {answer.status} {answer.data[:300]!r}")
            expected["rejected"] += 1
        elif path == "/v1/events":
            document = json.loads(body)
            events = document["events"] if isinstance(document, dict) else document
            if answer.status != 202 or json.loads(answer.data) != {"accepted": len(events)}:
                failures.append(f"events {body[:200]!r}: {answer.status} {answer.data[:300]!r}")
            expected["requests"] += len(events)
        else:
            results = json.loads(answer.data)
            for result in ("joined", "unmatched", "duplicate"):
                expected[result] += results[result]

    pool = ThreadPoolExecutor(max_workers=4)

    @settings(
        max_examples=DRAWS,
        phases=[Phase.generate],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(calls, min_size=BODIES_PER_DRAW, max_size=BODIES_PER_DRAW))
    def send(batch: list[tuple[str, bytes]]) -> None:
        for exchanged in pool.map(exchange, batch):
            check(*exchanged)
        if processes.running["sidecar"].poll() is not None:
            pytest.fail(f"the sidecar exited: {processes.log('sidecar')}")

    started = time.monotonic()
    send()
    pool.shutdown()
    elapsed = time.monotonic() - started
    total = sum(seen.values())
    print(f"{total} bodies in {elapsed:.0f} s ({total / elapsed:.0f}/s): {dict(sorted(seen.items()))}")

    assert total >= 10_000
    assert not failures, failures[:10]
    assert all(not key.endswith(" 5xx") for key in seen if key.startswith("/v1/events") or key.startswith("/v1/labels"))
    # every kind of answer was reached: the generator is not stuck on refusals
    assert {"/v1/events 2xx", "/v1/events 4xx", "/v1/labels 2xx", "/v1/labels 4xx"} <= set(seen)
    # and well-formed predictions on both protocols got through; how many varies with the draws (unseeded: 87 of
    # about 1,600 v2 calls in one run, several hundred in others), so this asks only that they are not rare.
    assert seen["/v1/models/churn:predict 2xx"] >= 20 and seen["/v2/models/churn/infer 2xx"] >= 20, seen

    found = counters(http.request("GET", sidecar + "/metrics").data.decode())
    assert found[("modelmonitor_proxy_unmonitored_total", "monitoring_error")] == 0, processes.log("sidecar")
    assert sum(v for (name, _), v in found.items() if name == "modelmonitor_requests_total") == expected["requests"]
    assert (
        sum(v for (name, _), v in found.items() if name == "modelmonitor_events_rejected_total") == expected["rejected"]
    )
    for result in ("joined", "unmatched", "duplicate"):
        assert found[("modelmonitor_labels_received_total", result)] == expected[result], result
    assert processes.running["sidecar"].poll() is None
