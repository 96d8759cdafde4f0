"""The HTTP server: push endpoints with a table of bad input, /metrics, /healthz, and the reverse proxy in
front of a tiny real model server (KServe v1 and Open Inference Protocol v2) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from conftest import reference_rows
from modelmonitor.sidecar import Monitor
from modelmonitor.sidecar.payloads import FieldMapping
from modelmonitor.sidecar.profile import Profile
from modelmonitor.sidecar.server import ServerSettings, SidecarServer

M = {"model": "churn", "version": "v3"}


def model_server() -> web.Application:
    """A stand-in model: predicts 1 when age > 40, with probability [1-p, p]."""

    async def v1(request: web.Request) -> web.Response:
        body = await request.json()
        out = []
        for row in body["instances"]:
            age = row["age"] if isinstance(row, dict) else row[0]
            out.append([0.2, 0.8] if age > 40 else [0.9, 0.1])
        return web.json_response({"predictions": out}, headers={"X-Model": "stand-in"})

    async def v2(request: web.Request) -> web.Response:
        body = await request.json()
        tensor = body["inputs"][0]
        n = tensor["shape"][0]
        ages = tensor["data"][:: tensor["shape"][1]] if len(tensor["shape"]) == 2 else tensor["data"]
        return web.json_response(
            {
                "model_name": "churn",
                "id": body.get("id"),
                "outputs": [
                    {"name": "predict", "shape": [n], "datatype": "INT64", "data": [int(a > 40) for a in ages]},
                    {
                        "name": "predict_proba",
                        "shape": [n, 2],
                        "datatype": "FP32",
                        "data": [v for a in ages for v in ((0.2, 0.8) if a > 40 else (0.9, 0.1))],
                    },
                ],
            }
        )

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "model exploded"}, status=500)

    async def text(request: web.Request) -> web.Response:
        return web.Response(text=f"echo:{await request.text()}")

    app = web.Application()
    app.router.add_post("/v1/models/churn:predict", v1)
    app.router.add_post("/v2/models/churn/infer", v2)
    app.router.add_post("/broken", broken)
    app.router.add_post("/text", text)

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app.router.add_get("/v2/health/ready", ready)
    return app


Scenario = Callable[[TestClient, Monitor, Callable[[], Awaitable[dict[str, float]]]], Awaitable[None]]


def run(profile: Profile, scenario: Scenario, *, upstream: bool = False, **settings: Any) -> None:
    async def main() -> None:
        model = TestServer(model_server(), host="127.0.0.1") if upstream else None
        if model is not None:
            await model.start_server()
        monitor = Monitor(profile, model="churn", version="v3")
        upstream_url = str(model.make_url("")).rstrip("/") if model is not None else None
        server = SidecarServer(monitor, ServerSettings(upstream=upstream_url, **settings), CollectorRegistry())
        client = TestClient(TestServer(server.app(), host="127.0.0.1"))
        await client.start_server()

        async def metrics() -> dict[str, float]:
            await asyncio.sleep(0.01)  # let the post-response observation run
            response = await client.get("/metrics")
            assert response.status == 200
            samples: dict[str, float] = {}
            for family in text_string_to_metric_families(await response.text()):
                for sample in family.samples:
                    labels = {k: v for k, v in sample.labels.items() if k not in M}
                    key = sample.name + json.dumps(labels, sort_keys=True) if labels else sample.name
                    samples[key] = sample.value
            return samples

        try:
            await scenario(client, monitor, metrics)
        finally:
            await client.close()
            if model is not None:
                await model.close()

    asyncio.run(main())


def key(name: str, **labels: str) -> str:
    return name + json.dumps(labels, sort_keys=True) if labels else name


def test_push_events_and_labels_then_scrape(profile: Profile) -> None:
    async def scenario(client: TestClient, monitor: Monitor, metrics: Any) -> None:
        rows = reference_rows(3, seed=1)
        events = [{"request_id": f"r{i}", "features": r, "prediction": 1} for i, r in enumerate(rows)]
        response = await client.post("/v1/events", json={"events": events})
        assert response.status == 202 and await response.json() == {"accepted": 3}
        response = await client.post(
            "/v1/labels", json={"labels": [{"request_id": "r0", "label": 1}, {"request_id": "zz", "label": 0}]}
        )
        assert await response.json() == {"joined": 1, "unmatched": 1, "duplicate": 0, "deferred": 0}
        response = await client.post("/v1/labels", json={"request_id": "r1", "label": 0})  # a single label
        assert (await response.json())["joined"] == 1
        seen = await metrics()
        assert seen[key("modelmonitor_requests_total", code="2xx")] == 3
        assert seen[key("modelmonitor_labels_received_total", result="joined")] == 2
        health = await (await client.get("/healthz")).json()
        assert health["status"] == "ok" and health["mode"] == "push" and health["model"] == "churn"

    run(profile, scenario)


BAD_INPUT = [
    (b"{not json", 400, "malformed_json", "not valid JSON at line 1"),
    (b"[1, 2", 400, "malformed_json", "not valid JSON"),
    (b'"events"', 400, "wrong_shape", "expected an object or a list"),
    (b'{"evnts": []}', 400, "wrong_shape", "expected an object with a 'events' list"),
    (b'{"events": {}}', 400, "wrong_shape", "events: expected a list"),
    (b'{"events": [3]}', 400, "wrong_shape", r"events[0]: expected an object"),
    (b'{"events": [{"features": [1, 2, 3]}]}', 400, "wrong_shape", "3 values, the profile has 4 features"),
    (b'{"events": [{"features": {"age": NaN}}]}', 400, "non_finite", "events[0].features.age: NaN or infinite"),
    (b'{"events": [{"features": {"age": Infinity}}]}', 400, "non_finite", "NaN or infinite"),
    (b'{"events": [{"features": {"shoe_size": 44}}]}', 400, "unknown_feature", "'shoe_size' is not a feature"),
    (b'{"events": [{"features": {}, "prediction": {"a": 1}}]}', 400, "bad_value", "prediction: expected a class"),
    (b'{"events": [{"features": {}, "scor": 1}]}', 400, "unknown_field", "unknown field 'scor'"),
    (b'{"events": [], "extra": 1}', 400, "unknown_field", "unknown field(s) 'extra'"),
    (b"[" + b"[" * 100_000 + b"]" * 100_000 + b"]", 400, "malformed_json", "nested too deeply"),
]


@pytest.mark.parametrize(("body", "status", "reason", "message"), BAD_INPUT)
def test_bad_events_get_a_4xx_with_the_reason_and_a_counter(
    profile: Profile, body: bytes, status: int, reason: str, message: str
) -> None:
    async def scenario(client: TestClient, monitor: Monitor, metrics: Any) -> None:
        response = await client.post("/v1/events", data=body, headers={"Content-Type": "application/json"})
        assert response.status == status
        answer = await response.json()
        assert answer["reason"] == reason and message in answer["error"]
        seen = await metrics()
        assert seen[key("modelmonitor_events_rejected_total", reason=reason)] == 1
        # the sidecar keeps serving: a good batch right after is accepted
        good = {"events": [{"features": reference_rows(1, seed=0)[0]}]}
        assert (await client.post("/v1/events", json=good)).status == 202

    run(profile, scenario)


def test_oversized_payloads_and_batches(profile: Profile) -> None:
    async def scenario(client: TestClient, monitor: Monitor, metrics: Any) -> None:
        big = json.dumps({"events": [{"features": r} for r in reference_rows(200, seed=1)]}).encode()
        response = await client.post("/v1/events", data=big)
        assert response.status == 413 and (await response.json())["reason"] == "too_large"
        response = await client.post("/v1/events", json={"events": [{"features": {}}] * 11})
        assert response.status == 413 and (await response.json())["reason"] == "too_many_events"
        # the body is read as JSON whatever the Content-Type (curl -d sends a form type)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert (await client.post("/v1/events", data=b'{"events": []}', headers=form)).status == 202
        seen = await metrics()
        assert seen[key("modelmonitor_events_rejected_total", reason="too_large")] == 1
        assert seen[key("modelmonitor_events_rejected_total", reason="too_many_events")] == 1

    run(profile, scenario, max_body_bytes=10_000, max_events=10)


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (b'{"labels": [{"request_id": "a"}]}', "wrong_shape", "labels[0].label: missing"),
        (b'{"labels": [{"request_id": "", "label": 1}]}', "bad_value", "request_id: expected a non-empty"),
        (b'{"labels": [{"request_id": "a", "label": null}]}', "bad_value", "label: expected a class"),
        (b'{"labels": [{"request_id": "a", "label": 1, "x": 2}]}', "unknown_field", "unknown field 'x'"),
        (b"nope", "malformed_json", "not valid JSON"),
    ],
)
def test_bad_labels(profile: Profile, body: bytes, reason: str, message: str) -> None:
    async def scenario(client: TestClient, monitor: Monitor, metrics: Any) -> None:
        response = await client.post("/v1/labels", data=body)
        answer = await response.json()
        assert response.status == 400 and answer["reason"] == reason and message in answer["error"]
        assert (await metrics())[key("modelmonitor_events_rejected_total", reason=reason)] == 1

    run(profile, scenario)


def test_proxy_kserve_v1_answers_unchanged_and_records(profile: Profile) -> None:
    async def scenario(client: TestClient, monitor: Monitor, metrics: Any) -> None:
        rows = reference_rows(4, seed=2)
        rows[0]["age"], rows[1]["age"] = 55.0, 25.0
        body = {"instances": rows}
        response = await client.post("/v1/models/churn:predict", json=body, headers={"X-Request-Id": "req-1"})
        assert response.status == 200 and response.headers["X-Model"] == "stand-in"
        answer = await response.json()
        assert answer["predictions"][0] == [0.2, 0.8] and answer["predictions"][1] == [0.9, 0.1]
        seen = await metrics()
        assert seen[key("modelmonitor_requests_total", code="2xx")] == 1  # one call of 4 rows
        assert seen["modelmonitor_request_duration_seconds_count"] == 1
        assert seen[key("modelmonitor_feature_value_count", feature="age")] == 4
        assert seen["modelmonitor_prediction_score_count"] == 4  # the positive-class probability
        assert seen[key("modelmonitor_prediction_class_total", **{"class": "1"})] == sum(r["age"] > 40 for r in rows)
        # rows of one call are joinable as <request id>:<row>
        labels = await (
            await client.post(
                "/v1/labels", json=[{"request_id": "req-1:0", "label": 1}, {"request_id": "req-1:1", "label": 1}]
            )
        ).json()
        assert labels["joined"] == 2
        seen = await metrics()
        assert seen[key("modelmonitor_labeled_predictions_total", group=str(rows[0]["gender"]), outcome="tp")] >= 1
        assert seen[key("modelmonitor_labeled_predictions_total", group=str(rows[1]["gender"]), outcome="fn")] >= 1

    run(profile, scenario, upstream=True)


def test_proxy_open_inference_protocol_v2(profile: Profile) -> None:
    async def scenario(client: TestClient, monitor: Monitor, metrics: Any) -> None:
        rows = reference_rows(3, seed=3)
        ages = [61.0, 30.0, 45.0]
        data = []
        for age, row in zip(ages, rows, strict=True):
            data += [age, row["income"], row["country"], row["gender"]]
        body = {"id": "oip-7", "inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "BYTES", "data": data}]}
        response = await client.post("/v2/models/churn/infer", json=body)
        assert response.status == 200
        answer = await response.json()
        assert answer["outputs"][0]["data"] == [1, 0, 1] and answer["id"] == "oip-7"
        seen = await metrics()
        assert seen[key("modelmonitor_feature_value_count", feature="age")] == 3
        assert seen[key("modelmonitor_prediction_class_total", **{"class": "1"})] == 2
        assert seen[key("modelmonitor_prediction_class_total", **{"class": "0"})] == 1
        assert seen["modelmonitor_prediction_score_sum"] == pytest.approx(0.8 + 0.1 + 0.8)
        joined = await (await client.post("/v1/labels", json=[{"request_id": "oip-7:1", "label": 0}])).json()
        assert joined["joined"] == 1
        # a GET passes through and counts as a request, with nothing to monitor
        assert (await client.get("/v2/health/ready")).status == 200

    run(profile, scenario, upstream=True)


def test_proxy_per_feature_tensors_v2(profile: Profile) -> None:
    async def scenario(client: TestClient, monitor: Monitor, metrics: Any) -> None:
        body = {
            "inputs": [
                {"name": "age", "shape": [2], "datatype": "FP64", "data": [50.0, 20.0]},
                {"name": "income", "shape": [2, 1], "datatype": "FP64", "data": [[20000.0], [30000.0]]},
                {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["de", "fr"]},
            ]
        }
        assert (await client.post("/v2/models/churn/infer", json=body)).status == 200
        seen = await metrics()
        assert seen[key("modelmonitor_feature_category_total", feature="country", category="de")] == 1
        assert seen[key("modelmonitor_feature_missing_total", feature="gender")] == 2

    run(profile, scenario, upstream=True)


def test_model_errors_and_unmonitorable_payloads_pass_through(profile: Profile) -> None:
    async def scenario(client: TestClient, monitor: Monitor, metrics: Any) -> None:
        response = await client.post("/broken", json={"instances": reference_rows(1, seed=4)})
        assert response.status == 500 and (await response.json()) == {"error": "model exploded"}
        response = await client.post("/text", data=b"hello there")
        assert response.status == 200 and await response.text() == "echo:hello there"
        seen = await metrics()
        assert seen[key("modelmonitor_requests_total", code="5xx")] == 1
        assert seen["modelmonitor_request_errors_total"] == 1
        assert seen[key("modelmonitor_requests_total", code="2xx")] == 1
        assert seen[key("modelmonitor_proxy_unmonitored_total", reason="unrecognized_payload")] == 1
        # inputs of the failed call were still seen by the model: they are profiled, without predictions
        assert seen[key("modelmonitor_feature_observations_total", feature="age")] == 1

    run(profile, scenario, upstream=True)


def test_field_mapping_for_other_payloads(profile: Profile) -> None:
    async def echo_model(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"result": {"labels": ["1" for _ in body["data"]["rows"]]}})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/score", echo_model)
        model = TestServer(app, host="127.0.0.1")
        await model.start_server()
        monitor = Monitor(profile, model="churn", version="v3")
        registry = CollectorRegistry()
        mapping = FieldMapping(features="data.rows", predictions="result.labels", request_id="meta.id")
        settings = ServerSettings(upstream=str(model.make_url("")).rstrip("/"), mapping=mapping)
        client = TestClient(TestServer(SidecarServer(monitor, settings, registry).app(), host="127.0.0.1"))
        await client.start_server()
        try:
            body = {"meta": {"id": "m-1"}, "data": {"rows": reference_rows(2, seed=5)}}
            assert (await client.post("/score", json=body)).status == 200
            await asyncio.sleep(0.3)  # proxied calls are ingested in batches every 50 ms
            assert registry.get_sample_value("modelmonitor_prediction_class_total", {**M, "class": "1"}) == 2
            assert monitor.log_labels([("m-1:1", 1)]) == {"joined": 1}
        finally:
            await client.close()
            await model.close()

    asyncio.run(main())


def test_upstream_down_is_a_502_and_counted(profile: Profile) -> None:
    async def scenario(client: TestClient, monitor: Monitor, metrics: Any) -> None:
        response = await client.post("/v1/models/churn:predict", json={"instances": []})
        assert response.status == 502
        seen = await metrics()
        assert seen[key("modelmonitor_requests_total", code="5xx")] == 1

    async def main() -> None:
        monitor = Monitor(profile, model="churn", version="v3")
        # port 9 (discard) on loopback: nothing listens there
        server = SidecarServer(monitor, ServerSettings(upstream="http://127.0.0.1:9"), CollectorRegistry())
        client = TestClient(TestServer(server.app(), host="127.0.0.1"))
        await client.start_server()

        async def metrics() -> dict[str, float]:
            text = await (await client.get("/metrics")).text()
            return {
                s.name
                + (
                    json.dumps({k: v for k, v in s.labels.items() if k not in M}, sort_keys=True)
                    if set(s.labels) - set(M)
                    else ""
                ): s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
            }

        try:
            await scenario(client, monitor, metrics)
        finally:
            await client.close()

    asyncio.run(main())
