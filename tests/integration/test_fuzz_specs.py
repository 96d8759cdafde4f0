"""Fuzzed ModelMonitors against the real API server while a real operator runs.

Ten thousand and more specs, drawn from the CRD's own schema and from mutations of the shipped examples, are
sent to the API server (a server-side dry run: the full validation, schema and CEL rules, of a real create). Each
must be refused with a message naming a field (the mutated one, for mutations) or accepted. A sample of the
accepted ones is then created for real, and the operator must judge every one: `Invalid` with a reason, or
evaluated. Throughout, a well-formed control monitor must keep being evaluated and the operator must neither exit
nor log a traceback.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from fuzzing import Mutation, from_schema, mutations, repaired
from support import Cluster, OperatorProcess, wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modelmonitor.dev_modelmonitors.yaml"
GROUP, VERSION, PLURAL = "modelmonitor.dev", "v1alpha1", "modelmonitors"
BASES = 300
MUTANTS_PER_BASE = 60
CREATED_FOR_REAL = 120
FIELD_IN_MESSAGE = re.compile(r"spec(\.[A-Za-z]|\[)")


def spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def example_specs() -> list[dict[str, Any]]:
    return [
        yaml.safe_load(p.read_text(encoding="utf-8"))["spec"]
        for p in sorted((REPO / "examples/monitors").glob("*.yaml"))
    ]


def body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelMonitor", "metadata": {"name": name}, "spec": spec}


class Outcomes:
    """What the API server said to every spec, and the specs it accepted (kept for real creation)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.accepted: list[dict[str, Any]] = []
        self.unnamed_refusals: list[str] = []
        self.missed_mutations: list[str] = []

    def record(self, spec: dict[str, Any], mutation: Mutation | None, status: int, message: str) -> None:
        if status == 201:
            self.counts["accepted"] += 1
            if mutation is not None:
                self.missed_mutations.append(f"{mutation}: accepted {json.dumps(spec)[:300]}")
            elif len(self.accepted) < CREATED_FOR_REAL and spec not in self.accepted:
                self.accepted.append(spec)
            return
        self.counts[f"refused {status}"] += 1
        if status != 422 or not FIELD_IN_MESSAGE.search(message):
            self.unnamed_refusals.append(f"{status}: {message[:300]}")
        elif mutation is not None and mutation.field not in message:
            self.unnamed_refusals.append(f"{mutation} not named in: {message[:300]}")


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[k8s.CustomObjectsApi]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
    api_client = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    api_client.configuration.connection_pool_maxsize = 8
    yield k8s.CustomObjectsApi(api_client)
    api_client.close()


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """A real operator process watching the test's namespace, stopped however the test ends. It writes every
    status every cycle (no heartbeat spacing), so `lastEvaluationTime` shows the control monitor still evaluated."""
    process = OperatorProcess({**cluster.env(), "MODELMONITOR_STATUS_HEARTBEAT_SECONDS": "0"}, namespace, tmp_path)
    process.start()
    yield process
    process.stop()


def dry_run(api: k8s.CustomObjectsApi, namespace: str, index: int, spec: dict[str, Any]) -> tuple[int, str]:
    try:
        api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body(f"fuzz-{index}", spec), dry_run="All", _request_timeout=30
        )
    except k8s.ApiException as error:
        return int(error.status), str(json.loads(error.body).get("message", error.body) if error.body else error)
    return 201, ""


def monitor_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found = cluster.kubectl("get", "modelmonitor", name, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(found.stdout).get("status") or {}) if found.returncode == 0 else {}


CONTROL = {
    "target": {"name": "control-model"},
    "model": {"name": "control"},
    "interval": "2s",
    "policies": [{"name": "errors", "signal": "errorRate", "window": "1m", "condition": {"op": ">", "threshold": 0.5}}],
}


def test_ten_thousand_fuzzed_specs_are_refused_naming_the_field_or_judged_by_the_operator(
    cluster: Cluster, api: k8s.CustomObjectsApi, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body("control", CONTROL)))
    wait_for(
        "the control monitor evaluated", lambda: monitor_status(cluster, namespace, "control").get("lastEvaluationTime")
    )

    schema = spec_schema()
    examples = example_specs()
    drawn = from_schema(schema)
    bases = st.one_of(st.sampled_from(examples), drawn, drawn.map(repaired))
    outcomes = Outcomes()
    pool = ThreadPoolExecutor(max_workers=4)
    sent = 0

    def send(batch: list[tuple[dict[str, Any], Mutation | None]]) -> list[int]:
        nonlocal sent
        answers = list(pool.map(lambda item: dry_run(api, namespace, sent + item[0], item[1][0]), enumerate(batch)))
        for (spec, mutation), (status, message) in zip(batch, answers, strict=True):
            outcomes.record(spec, mutation, status, message)
        sent += len(batch)
        return [status for status, _ in answers]

    # Each drawn spec is sent; when the server accepts it, so are up to MUTANTS_PER_BASE copies of it with one
    # field broken (mutating a spec the server refuses anyway would not show which error it reports).
    @settings(
        max_examples=BASES,
        phases=[Phase.generate],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(bases, st.randoms(use_true_random=False))
    def fuzz(base: dict[str, Any], random: Any) -> None:
        if send([(base, None)]) == [201]:
            mutants = mutations(base, schema)
            send(random.sample(mutants, min(len(mutants), MUTANTS_PER_BASE)))

    started = time.monotonic()
    fuzz()
    pool.shutdown()
    elapsed = time.monotonic() - started
    print(f"{sent} specs in {elapsed:.0f} s ({sent / elapsed:.0f}/s): {dict(outcomes.counts)}")

    assert sent >= 10_000
    assert outcomes.counts["accepted"] >= 100, outcomes.counts  # the generator reaches the operator, not only refusals
    assert not outcomes.unnamed_refusals, outcomes.unnamed_refusals[:10]
    assert not outcomes.missed_mutations, outcomes.missed_mutations[:10]

    # The accepted ones for real: the operator judges each, and keeps evaluating the control monitor meanwhile.
    names = [f"fuzz-{i}" for i in range(len(outcomes.accepted))]
    for name, spec in zip(names, outcomes.accepted, strict=True):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body(name, spec)))
    control_before = monitor_status(cluster, namespace, "control")["lastEvaluationTime"]

    def unjudged() -> list[str]:
        listed = cluster.kubectl_json("get", "modelmonitors", "-n", namespace)["items"]
        by_name = {item["metadata"]["name"]: item for item in listed}
        waiting = []
        for name in names:
            item = by_name[name]
            status = item.get("status") or {}
            judged = status.get("observedGeneration") == item["metadata"]["generation"] and (
                (status.get("phase") in ("Invalid", "Paused") and status.get("message"))
                or status.get("lastEvaluationTime")
            )
            if not judged:
                waiting.append(name)
        return waiting

    wait_for("every accepted spec Invalid with a reason or evaluated", lambda: not unjudged(), timeout=120)
    wait_for(
        "the control monitor evaluated again",
        lambda: monitor_status(cluster, namespace, "control")["lastEvaluationTime"] != control_before,
        timeout=30,
    )
    phases = Counter(monitor_status(cluster, namespace, n).get("phase") for n in names[:30])
    print(f"{len(names)} created for real; phases of the first 30: {dict(phases)}")
    assert operator.process is not None and operator.process.poll() is None, operator.log_text()[-3000:]
    assert "Traceback" not in operator.log_text(), operator.log_text()[-5000:]
