"""Every answer Prometheus (or the network) can give, through the real client with a fake HTTP transport.

The fake is a ``requests`` transport adapter mounted on the client's session: the client, its session,
headers, auth and error handling all run for real; only the socket is replaced.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import urllib3
from requests.adapters import BaseAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError, ReadTimeoutError

from modelmonitor.adapters.prometheus import (
    LONG_QUERY,
    ErrorKind,
    PrometheusClient,
    PrometheusSettings,
    QueryResult,
    parse_answer,
)

URL = "http://prometheus.test:9090"


class FakeTransport(BaseAdapter):
    """Answers every request with ``reply(request)``: a (status, body) pair, or an exception to raise."""

    def __init__(self, reply: Callable[[requests.PreparedRequest], tuple[int, bytes] | Exception]) -> None:
        super().__init__()
        self.reply = reply
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.requests.append(request)
        outcome = self.reply(request)
        if isinstance(outcome, Exception):
            raise outcome
        status, body = outcome
        response = requests.Response()
        response.status_code = status
        # Read as a stream, as from a socket.
        response.raw = urllib3.response.HTTPResponse(body=io.BytesIO(body), status=status, preload_content=False)
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        pass


def client_with(
    reply: Callable[[requests.PreparedRequest], tuple[int, bytes] | Exception] | tuple[int, bytes] | Exception,
    **settings: Any,
) -> tuple[PrometheusClient, FakeTransport]:
    client = PrometheusClient(PrometheusSettings(url=URL, **settings))
    transport = FakeTransport(reply if callable(reply) else (lambda _request: reply))
    client.session.mount(URL, transport)
    return client, transport


def ok(result_type: str, result: Any, **extra: Any) -> tuple[int, bytes]:
    return 200, json.dumps(
        {"status": "success", "data": {"resultType": result_type, "result": result}, **extra}
    ).encode()


def vector_body(result: bytes) -> bytes:
    return b'{"status": "success", "data": {"resultType": "vector", "result": ' + result + b"}}"


def ask(reply: Any, query: str = "up", **settings: Any) -> QueryResult:
    client, _ = client_with(reply, **settings)
    with client:
        return client.query(query)


# --- successful answers ------------------------------------------------------------------------------------


def test_scalar() -> None:
    answer = ask(ok("scalar", [1700000000.5, "0.25"]), "scalar(vector(0.25))")
    assert answer.ok and answer.result_type == "scalar"
    assert answer.values == (0.25,)
    assert dict(answer.samples[0].labels) == {}
    assert answer.samples[0].timestamp == 1700000000.5
    assert answer.query == "scalar(vector(0.25))"


def test_vector_keeps_labels_per_series() -> None:
    answer = ask(
        ok(
            "vector",
            [
                {"metric": {"namespace": "a", "model": 'we"ird\n'}, "value": [1, "0.9"]},
                {"metric": {"namespace": "b", "model": "m"}, "value": [1, "0.5"]},
            ],
        )
    )
    assert answer.result_type == "vector"
    assert [(dict(s.labels), s.value) for s in answer.samples] == [
        ({"namespace": "a", "model": 'we"ird\n'}, 0.9),
        ({"namespace": "b", "model": "m"}, 0.5),
    ]


def test_matrix_gives_every_point_of_every_series() -> None:
    answer = ask(
        ok(
            "matrix",
            [
                {"metric": {"pod": "a"}, "values": [[10, "1"], [20, "2"]]},
                {"metric": {"pod": "b"}, "values": [[10, "5"]]},
            ],
        )
    )
    assert answer.result_type == "matrix"
    assert answer.values == (1.0, 2.0, 5.0)
    assert [s.timestamp for s in answer.samples] == [10.0, 20.0, 10.0]
    assert [s.labels["pod"] for s in answer.samples] == ["a", "a", "b"]


def test_empty_vector_is_empty_never_zero() -> None:
    answer = ask(ok("vector", []))
    assert answer.ok
    assert answer.samples == ()
    assert answer.values == ()


def test_nan_and_infinities_are_kept_as_floats() -> None:
    answer = ask(ok("vector", [{"metric": {}, "value": [1, v]} for v in ("NaN", "+Inf", "-Inf")]))
    assert answer.ok
    assert math.isnan(answer.values[0])
    assert answer.values[1:] == (math.inf, -math.inf)


def test_numeric_string_result_is_a_number() -> None:
    assert ask(ok("string", [1, "42.5"])).values == (42.5,)


def test_text_string_result_is_an_error() -> None:
    answer = ask(ok("string", [1, "hello"]))
    assert answer.error is not None
    assert answer.error.kind is ErrorKind.BAD_RESPONSE
    assert "string result 'hello' is not a number" in answer.error.message


def test_warnings_and_infos_are_kept_on_success() -> None:
    answer = ask(
        ok(
            "vector",
            [{"metric": {}, "value": [1, "3"]}],
            warnings=["PromQL warning: encountered a mix of histograms and floats"],
            infos=["PromQL info: metric might not be a counter"],
        )
    )
    assert answer.ok and answer.values == (3.0,)
    assert answer.warnings == ("PromQL warning: encountered a mix of histograms and floats",)
    assert answer.infos == ("PromQL info: metric might not be a counter",)


# --- Prometheus refusing the query -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "message"),
    [
        (400, "bad_data", '1:10: parse error: unexpected "}"'),
        (422, "execution", "many-to-many matching not allowed"),
        (503, "timeout", "query timed out in expression evaluation"),
    ],
)
def test_promql_errors_keep_type_status_and_message(status: int, error_type: str, message: str) -> None:
    body = json.dumps({"status": "error", "errorType": error_type, "error": message, "warnings": ["w1"]}).encode()
    answer = ask((status, body))
    assert not answer.ok
    assert answer.error is not None
    assert answer.error.kind is ErrorKind.PROMQL
    assert answer.error.error_type == error_type
    assert answer.error.status_code == status
    assert message in answer.error.message
    assert answer.warnings == ("w1",)
    assert answer.samples == ()


# --- HTTP trouble that is not Prometheus speaking ---------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (500, b"<html><body>Internal Server Error</body></html>", "Internal Server Error"),
        (502, b"", "(empty body)"),
        (401, b"Unauthorized", "Unauthorized"),
        (404, b"404 page not found", "404 page not found"),
    ],
)
def test_http_errors_carry_the_status_code(status: int, body: bytes, shown: str) -> None:
    answer = ask((status, body))
    assert answer.error is not None
    assert answer.error.kind is ErrorKind.HTTP
    assert answer.error.status_code == status
    assert f"HTTP {status}" in answer.error.message
    assert shown in answer.error.message


def test_long_error_bodies_are_cut() -> None:
    answer = ask((500, b"x" * 10_000))
    assert answer.error is not None
    assert len(answer.error.message) < 400


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>not json</html>", "not a Prometheus API JSON object"),
        (b"\xff\xfe garbage", "not a Prometheus API JSON object"),
        (b"[1, 2]", "not a Prometheus API JSON object"),
        (b'{"status": "success"}', "'data' is missing"),
        (b'{"status": "weird", "data": {}}', "unexpected status 'weird'"),
        (b'{"status": "success", "data": {"resultType": "vector", "result": {}}}', "is not a list"),
        (b'{"status": "success", "data": {"resultType": "table", "result": []}}', "unknown resultType 'table'"),
        (vector_body(b'[{"metric": {}}]'), "has no 'value'"),
        (
            vector_body(b'[{"metric": {}, "value": [1]}]'),
            "is not a [timestamp, value] pair",
        ),
        (
            vector_body(b'[{"metric": {}, "value": [1, 2]}]'),
            "is not a string",
        ),
        (
            vector_body(b'[{"metric": {}, "value": [1, "x"]}]'),
            "value 'x' is not a number",
        ),
        (
            vector_body(b'[{"metric": {"a": 1}, "value": [1, "1"]}]'),
            "not an object of string labels",
        ),
        (
            vector_body(b'[{"metric": {}, "histogram": [1, {}]}]'),
            "native histogram",
        ),
        # Well-formed series are decoded as they are read; a bad one after them is still named by its position.
        (
            vector_body(b'[{"metric": {}, "value": [1, "1"]}, {"metric": {"a": 1}, "value": [1, "1"]}]'),
            "data.result[1].metric is not an object of string labels",
        ),
        (vector_body(b'[{"metric": {}, "value": [true, "1"]}]'), "data.result[0].value has a non-numeric timestamp"),
        (
            b'{"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "value": [1, "1"]}]}}',
            "data.result[0] has a 'value' in a matrix",
        ),
    ],
)
def test_garbage_is_a_bad_response(body: bytes, problem: str) -> None:
    answer = ask((200, body))
    assert answer.error is not None
    assert answer.error.kind is ErrorKind.BAD_RESPONSE
    assert problem in answer.error.message
    assert answer.samples == ()


# --- the network -------------------------------------------------------------------------------------------


def test_read_timeout() -> None:
    answer = ask(requests.ReadTimeout("read timed out"), timeout_seconds=2.5)
    assert answer.error is not None
    assert answer.error.kind is ErrorKind.TIMEOUT
    assert "within 2.5s" in answer.error.message


def test_read_timeout_reported_through_retries_is_still_a_timeout() -> None:
    # With retries configured, requests reports an exhausted read timeout as a ConnectionError.
    failure = requests.ConnectionError(MaxRetryError(None, "/api/v1/query", ReadTimeoutError(None, "/", "slow")))  # type: ignore[arg-type]
    answer = ask(failure)
    assert answer.error is not None and answer.error.kind is ErrorKind.TIMEOUT


def test_refused_connection_is_a_connection_error() -> None:
    # urllib3's NewConnectionError subclasses ConnectTimeoutError; it is still not a timeout.
    refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    answer = ask(requests.ConnectionError(MaxRetryError(None, "/api/v1/query", refused)))  # type: ignore[arg-type]
    assert answer.error is not None
    assert answer.error.kind is ErrorKind.CONNECTION
    assert "Connection refused" in answer.error.message
    assert "object at 0x" not in answer.error.message


def test_tls_failure_is_a_connection_error() -> None:
    answer = ask(requests.exceptions.SSLError("certificate verify failed"))
    assert answer.error is not None
    assert answer.error.kind is ErrorKind.CONNECTION
    assert "TLS handshake" in answer.error.message


# --- what is sent ------------------------------------------------------------------------------------------


def test_get_sends_query_time_and_server_timeout() -> None:
    client, transport = client_with(ok("vector", []), timeout_seconds=7)
    at = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    client.query('up{model="x"}', at=at)
    sent = transport.requests[0]
    assert sent.method == "GET"
    assert urlparse(sent.url).path == "/api/v1/query"
    params = parse_qs(urlparse(sent.url).query)
    assert params == {"query": ['up{model="x"}'], "time": [f"{at.timestamp():.3f}"], "timeout": ["7s"]}


def test_range_query_sends_start_end_step_and_names_its_endpoint_in_errors() -> None:
    matrix = [{"metric": {"model": "x"}, "values": [[1764669600, "1"], [1764669660, "2"]]}]
    client, transport = client_with(ok("matrix", matrix), timeout_seconds=7)
    start = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    answer = client.query_range("up", start=start, end=start + timedelta(minutes=1), step_seconds=60)
    sent = transport.requests[0]
    assert urlparse(sent.url).path == "/api/v1/query_range"
    assert parse_qs(urlparse(sent.url).query) == {
        "query": ["up"],
        "start": [f"{start.timestamp():.3f}"],
        "end": [f"{start.timestamp() + 60:.3f}"],
        "step": ["60"],
        "timeout": ["7s"],
    }
    assert [(s.timestamp, s.value) for s in answer.samples] == [(1764669600.0, 1.0), (1764669660.0, 2.0)]
    failed, _ = client_with(requests.exceptions.ConnectionError("refused"))
    error = failed.query_range("up", start=start, end=start, step_seconds=60).error
    assert error is not None and f"{URL}/api/v1/query_range" in error.message
    with pytest.raises(ValueError, match="step 0"):
        client.query_range("up", start=start, end=start, step_seconds=0)


def test_a_long_query_goes_by_post_even_when_get_is_set() -> None:
    client, transport = client_with(ok("vector", []))
    short = 'up{model=~"' + "|".join(f"m{i}" for i in range(10)) + '"}'
    long = 'up{model=~"' + "|".join(f"model-{i:05d}" for i in range(1000)) + '"}'
    assert len(short) <= LONG_QUERY < len(long)
    client.query(short)
    client.query(long)
    assert [sent.method for sent in transport.requests] == ["GET", "POST"]
    body = transport.requests[1].body
    assert parse_qs(body if isinstance(body, str) else body.decode())["query"] == [long]  # type: ignore[union-attr]


def test_post_sends_a_form_body() -> None:
    client, transport = client_with(ok("vector", []), method="POST")
    client.query("up")
    sent = transport.requests[0]
    assert sent.method == "POST"
    assert parse_qs(sent.body if isinstance(sent.body, str) else sent.body.decode()) == {  # type: ignore[union-attr]
        "query": ["up"],
        "timeout": ["10s"],
    }


def test_url_path_prefix_is_kept() -> None:
    client = PrometheusClient(PrometheusSettings(url="http://gw.test/prometheus/"))
    transport = FakeTransport(lambda _r: ok("vector", []))
    client.session.mount("http://gw.test/prometheus", transport)
    client.query("up")
    assert urlparse(transport.requests[0].url).path == "/prometheus/api/v1/query"


def test_naive_query_time_is_refused() -> None:
    client, _ = client_with(ok("vector", []))
    with pytest.raises(ValueError, match="timezone-aware"):
        client.query("up", at=datetime(2026, 1, 1))


def test_bearer_token_and_extra_headers() -> None:
    client, transport = client_with(ok("vector", []), bearer_token="s3cret", headers={"X-Scope-OrgID": "tenant-1"})
    client.query("up")
    sent = transport.requests[0].headers
    assert sent["Authorization"] == "Bearer s3cret"
    assert sent["X-Scope-OrgID"] == "tenant-1"


def test_basic_auth() -> None:
    client, transport = client_with(ok("vector", []), basic_auth=("alice", "pw"))
    client.query("up")
    assert transport.requests[0].headers["Authorization"] == "Basic YWxpY2U6cHc="


def test_secrets_are_not_in_repr() -> None:
    settings = PrometheusSettings(url=URL, bearer_token="s3cret-token", client_cert_pem="C", client_key_pem="K")
    assert "s3cret-token" not in repr(settings)
    assert "client_key_pem" not in repr(settings)


def test_pem_material_goes_to_private_files_removed_on_close() -> None:
    client = PrometheusClient(
        PrometheusSettings(url="https://p.test", ca_pem="CA PEM", client_cert_pem="CERT", client_key_pem="KEY")
    )
    ca_path = client.session.verify
    assert isinstance(ca_path, str)
    cert = client.session.cert
    assert isinstance(cert, tuple)
    for path, content in [(ca_path, "CA PEM"), (cert[0], "CERT"), (cert[1], "KEY")]:
        with open(path) as handle:
            assert handle.read() == content
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    client.close()
    assert not os.path.exists(ca_path)


def test_tls_files_and_insecure() -> None:
    with PrometheusClient(PrometheusSettings(url="https://p.test", ca_file="/etc/ca.pem")) as client:
        assert client.session.verify == "/etc/ca.pem"
    with PrometheusClient(PrometheusSettings(url="https://p.test", insecure_skip_verify=True)) as client:
        assert client.session.verify is False
    with PrometheusClient(PrometheusSettings(url="https://p.test")) as client:
        assert client.session.verify is True


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "prometheus:9090"}, "expected an http:// or https:// URL"),
        ({"bearer_token": "t", "basic_auth": ("u", "p")}, "not both"),
        ({"bearer_token": "t", "headers": {"authorization": "x"}}, "Authorization is set by the bearer token"),
        ({"headers": {"X-Tenant": "a\r\nInjected: 1"}}, "contains a line break"),
        ({"ca_pem": "x", "ca_file": "/f"}, "CA as PEM text or as a file"),
        ({"client_cert_pem": "x"}, "needs its key"),
        ({"client_key_file": "/k"}, "needs its key file"),
        ({"timeout_seconds": 0}, "expected seconds > 0"),
        ({"timeout_seconds": math.nan}, "expected seconds > 0"),
        ({"method": "PUT"}, "expected GET or POST"),
        ({"retries": -1}, "expected >= 0"),
    ],
)
def test_settings_errors_name_the_setting(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrometheusSettings(**{"url": URL, **settings})


# --- one real socket: retries hand back the last answer ----------------------------------------------------


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, list[int]]]:
    """A local HTTP server answering 503 (gateway trouble) twice, then a vector."""
    statuses = [503, 503, 200]
    seen: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = statuses[min(len(seen), len(statuses) - 1)]
            seen.append(status)
            body = ok("vector", [{"metric": {}, "value": [1, "7"]}])[1] if status == 200 else b"upstream unavailable"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_gateway_errors_are_retried_then_reported_with_their_status(flaky_server: tuple[str, list[int]]) -> None:
    url, seen = flaky_server
    with PrometheusClient(PrometheusSettings(url=url, retries=1)) as client:
        answer = client.query("up")
    # One retry is not enough to get past two 503s: the last 503 is reported, status and body intact.
    assert seen == [503, 503]
    assert answer.error is not None
    assert answer.error.kind is ErrorKind.HTTP
    assert answer.error.status_code == 503
    assert "upstream unavailable" in answer.error.message
    with PrometheusClient(PrometheusSettings(url=url, retries=1)) as client:
        assert client.query("up").values == (7.0,)


def test_parse_answer_is_usable_without_a_client() -> None:
    answer = parse_answer("q", 200, ok("vector", [{"metric": {"a": "b"}, "value": [1, "2"]}])[1], elapsed_seconds=0.5)
    assert answer.values == (2.0,)
    assert answer.elapsed_seconds == 0.5


def test_an_answer_over_the_size_limit_is_an_error_naming_the_limit() -> None:
    reply = ok("vector", [{"metric": {"pod": f"p{i}"}, "value": [1, "1"]} for i in range(100)])
    result = ask(reply, max_answer_bytes=1000)
    assert result.error is not None and result.error.kind is ErrorKind.BAD_RESPONSE
    assert "more than 1000 bytes, over the limit of 1000 bytes" in result.error.message
    assert result.samples == ()


def test_an_answer_trickling_in_is_cut_at_the_timeout() -> None:
    class Trickle(io.BufferedIOBase):
        """One byte every 50 ms, forever: no single read ever times out."""

        def read1(self, size: int = -1) -> bytes:
            time.sleep(0.05)
            return b" "

        read = read1

        def readable(self) -> bool:
            return True

    def slow(_request: requests.PreparedRequest) -> tuple[int, bytes]:
        return 200, b""

    client, transport = client_with(slow, timeout_seconds=0.3)
    original = transport.send

    def send(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = original(request, **kwargs)
        response.raw = urllib3.response.HTTPResponse(body=Trickle(), status=200, preload_content=False)
        return response

    transport.send = send  # type: ignore[method-assign]
    started = time.monotonic()
    result = client.query("up")
    assert result.error is not None and result.error.kind is ErrorKind.TIMEOUT, result
    assert "no complete answer" in result.error.message and time.monotonic() - started < 2
