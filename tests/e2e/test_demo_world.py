"""What the demo's story rests on, checked without the cluster: the model versions behave as the story says, and
a model server has a finite capacity (requests queue, then get 503) so that load raises latency and replicas
lower it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from modelmonitor_sandbox.demo.fleet import model_uri
from modelmonitor_sandbox.demo.manifests import ACCURACY_CLEAR, ACCURACY_THRESHOLD
from modelmonitor_sandbox.demo.world import AFTER, BEFORE, fit, sample
from modelmonitor_sandbox.devcluster.processes import free_port

pytestmark = pytest.mark.e2e


def test_the_versions_fit_the_story() -> None:
    rng = np.random.default_rng(3)
    v1 = fit(sample(rng, 5000, BEFORE), "v1", "before")
    fresh = sample(rng, 3000, AFTER)
    v2 = fit(fresh, "v2", "after")
    v3 = fit(fresh, "v3", "after", negate_velocity=True)
    after = sample(rng, 20_000, AFTER)
    # v1 keeps most answers right after the drift: only the drift policy fires, not the accuracy one.
    assert v1.accuracy(after) > ACCURACY_CLEAR
    assert v2.accuracy(after) > v1.accuracy(after)
    # v3 is clearly worse: the accuracy policy fires on it.
    assert v3.accuracy(after) < ACCURACY_THRESHOLD - 0.1
    # The drift is in the inputs: amounts moved by more than one standard deviation.
    assert np.mean(after.numbers[:, 0]) - np.mean(sample(rng, 20_000, BEFORE).numbers[:, 0]) > 1.0


def test_the_pod_serves_the_model_uri_of_its_model_container() -> None:
    uri = "mlflow-artifacts:/fraud-detector/v2"
    pod = {
        "spec": {
            "containers": [
                {"name": "sidecar", "image": "mm:0.1", "env": [{"name": "MODEL_URI", "value": "elsewhere"}]},
                {"name": "model", "image": "fraud-model-server:1.0", "env": [{"name": "MODEL_URI", "value": uri}]},
            ]
        }
    }
    assert model_uri(pod, "model") == uri
    assert model_uri({"spec": {"containers": [{"name": "model", "image": "fraud-model-server:1.0"}]}}, "model") is None


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[str]:
    model = fit(sample(np.random.default_rng(1), 2000, BEFORE), "v1", "before")
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model.to_json()))
    port = free_port()
    argv = [
        sys.executable, "-m", "modelmonitor_sandbox.demo.modelserver",
        "--model", str(path), "--listen", f"127.0.0.1:{port}",
        "--service-ms", "50", "--per-row-ms", "0", "--max-queue", "10",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v1/models/fraud", timeout=1) as response:
                assert json.loads(response.read())["version"] == "v1"
                break
        except OSError:
            assert time.monotonic() < deadline, "the model server did not start"
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)


async def _burst(url: str, n: int) -> list[tuple[int, float, dict[str, object]]]:
    body = {"instances": sample(np.random.default_rng(2), 3, BEFORE).instances()}

    async def one(session: aiohttp.ClientSession) -> tuple[int, float, dict[str, object]]:
        started = time.monotonic()
        async with session.post(f"{url}/v1/models/fraud:predict", json=body) as response:
            return response.status, time.monotonic() - started, await response.json()

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(one(session) for _ in range(n))))


def test_a_model_server_answers_kserve_v1_and_queues_beyond_its_capacity(model_server: str) -> None:
    [(status, alone, answer)] = asyncio.run(_burst(model_server, 1))
    assert status == 200 and alone < 0.5
    predictions = answer["predictions"]
    assert isinstance(predictions, list) and len(predictions) == 3
    assert all(p["prediction"] in (0, 1) and 0 <= p["score"] <= 1 for p in predictions)

    # 30 at once: one is served, 10 wait (served one after the other, 50 ms each), the rest are shed with 503
    # (a few more are served if the burst takes longer to arrive than one service time).
    results = asyncio.run(_burst(model_server, 30))
    served = sorted(seconds for status, seconds, _ in results if status == 200)
    shed = [status for status, _, _ in results if status != 200]
    assert shed and set(shed) == {503} and 11 <= len(served) <= 15
    assert served[-1] >= 10 * 0.05  # the last one waited for the ten before it
    # Queued behind the others, not slow alike: a loaded host slows the first one too (0.30 s in one run).
    assert served[-1] - served[0] >= 9 * 0.05
