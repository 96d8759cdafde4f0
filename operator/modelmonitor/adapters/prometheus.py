"""Prometheus behind a small Protocol: ask for an instant query (or a range query), get plain numbers or a typed error.

Every answer Prometheus can give is turned into numbers in ONE place, :func:`parse_answer`:

* ``scalar`` -> one sample without labels; ``vector`` -> one sample per series; ``matrix`` (a range selector or
  subquery evaluated at an instant) -> one sample per point of every series, timestamps kept, so a policy's
  ``reduce`` applies over the window; ``string`` -> a sample when the text is a number, otherwise an error.
* ``NaN`` and ``±Inf`` are kept as floats: deciding that NaN means "no data" is the caller's job, and this
  layer never invents a value. An empty answer is an empty tuple, never ``0`` (KEDA's ``ignoreNullValues``
  turned an empty answer into 0 and scaled production down during a Prometheus outage).
* Failures are values, not exceptions, each with its own :class:`ErrorKind`: ``http`` (a non-2xx status that
  is not a Prometheus API error: an auth proxy's 401, a gateway's 502, a wrong path's 404), ``connection``
  (refused, DNS, TLS), ``timeout`` (the whole answer took longer than the configured timeout), ``promql``
  (Prometheus answered ``status: error`` with its ``errorType`` and ``error``: a parse error, an execution
  error, its own query timeout) and ``badResponse`` (not JSON, not the shape of the query API, or larger than
  ``max_answer_bytes``, which is never read past).
* Warnings (and Prometheus 3 ``infos``) are kept on the result, on success and on error, for the caller to
  surface in status and Events.

The client is blocking (``requests`` underneath). The operator calls :meth:`PrometheusClient.query` from a
worker thread (``asyncio.to_thread`` or an executor), never on the event loop; one client may be shared by
several threads (the connection pool is thread-safe).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from modelmonitor.tlsfiles import TlsFiles

__all__ = [
    "LONG_QUERY",
    "ErrorKind",
    "PrometheusClient",
    "PrometheusQuerier",
    "PrometheusSettings",
    "QueryError",
    "QueryResult",
    "Sample",
    "parse_answer",
]

# How much of an unexpected body goes into an error message: enough to recognise an HTML error page or a proxy's
# text, short enough for a status field.
_BODY_SNIPPET = 300


class ErrorKind(StrEnum):
    """Why a query produced no numbers. The policy engine records every kind as an Error, never as a value."""

    HTTP = "http"
    CONNECTION = "connection"
    TIMEOUT = "timeout"
    PROMQL = "promql"
    BAD_RESPONSE = "badResponse"


@dataclass(frozen=True)
class QueryError:
    """A failed query: the kind, a message a user can act on, and what Prometheus or HTTP said."""

    kind: ErrorKind
    message: str
    status_code: int | None = None
    #: Prometheus' ``errorType`` (``bad_data``, ``execution``, ``timeout``, ``canceled``, ``internal``,
    #: ``unavailable``, ``not_found``) for kind ``promql``.
    error_type: str | None = None

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


@dataclass(frozen=True, slots=True)
class Sample:
    """One number from an answer: the series' labels (``__name__`` included when Prometheus kept it)."""

    labels: Mapping[str, str]
    value: float
    timestamp: float


@dataclass(frozen=True)
class QueryResult:
    """The outcome of one instant query: samples, or an error; warnings either way."""

    query: str
    #: ``scalar``, ``vector``, ``matrix`` or ``string``; ``None`` when the query failed.
    result_type: str | None = None
    samples: tuple[Sample, ...] = ()
    warnings: tuple[str, ...] = ()
    infos: tuple[str, ...] = ()
    error: QueryError | None = None
    elapsed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when Prometheus answered the query (the answer may still be empty)."""
        return self.error is None

    @property
    def values(self) -> tuple[float, ...]:
        """The numbers of all samples, in answer order."""
        return tuple(sample.value for sample in self.samples)


class PrometheusQuerier(Protocol):
    """Anything that evaluates an instant PromQL query; the real client and the test fakes."""

    def query(self, promql: str, *, at: datetime | None = None) -> QueryResult:
        """Evaluate ``promql`` at ``at`` (timezone-aware; the server's "now" when ``None``)."""
        ...


# --- the one place where answers become numbers ----------------------------------------------------------


class _Malformed(Exception):
    """The answer does not have the query API's shape; the message says where."""


def parse_answer(query: str, status_code: int, body: bytes, *, elapsed_seconds: float = 0.0) -> QueryResult:
    """Turn an HTTP status and body from ``/api/v1/query`` into a :class:`QueryResult`.

    Pure (no I/O), so every answer shape is testable without a server.
    """

    def failed(error: QueryError, warnings: tuple[str, ...] = (), infos: tuple[str, ...] = ()) -> QueryResult:
        return QueryResult(query=query, error=error, warnings=warnings, infos=infos, elapsed_seconds=elapsed_seconds)

    decoder = _SeriesDecoder()
    try:
        document = json.loads(body, object_hook=decoder)
    except (ValueError, UnicodeDecodeError):
        document = None
    if not isinstance(document, dict):
        snippet = _snippet(body)
        if not 200 <= status_code < 300:
            return failed(QueryError(ErrorKind.HTTP, f"HTTP {status_code}: {snippet}", status_code=status_code))
        return failed(
            QueryError(
                ErrorKind.BAD_RESPONSE,
                f"the answer is not a Prometheus API JSON object: {snippet}",
                status_code=status_code,
            )
        )

    warnings = _strings(document.get("warnings"))
    infos = _strings(document.get("infos"))
    if document.get("status") == "error":
        error_type = str(document.get("errorType") or "unknown")
        message = str(document.get("error") or "(no message)")
        return failed(
            QueryError(
                ErrorKind.PROMQL,
                f"Prometheus refused the query ({error_type}): {message}",
                status_code=status_code,
                error_type=error_type,
            ),
            warnings,
            infos,
        )
    if not 200 <= status_code < 300:
        return failed(
            QueryError(ErrorKind.HTTP, f"HTTP {status_code}: {_snippet(body)}", status_code=status_code),
            warnings,
            infos,
        )
    if document.get("status") != "success":
        return failed(
            QueryError(
                ErrorKind.BAD_RESPONSE,
                f"unexpected status {document.get('status')!r} (expected 'success' or 'error')",
                status_code=status_code,
            ),
            warnings,
            infos,
        )
    try:
        result_type, samples = _samples(document.get("data"), decoder)
    except _Malformed as problem:
        return failed(
            QueryError(ErrorKind.BAD_RESPONSE, f"malformed answer: {problem}", status_code=status_code),
            warnings,
            infos,
        )
    return QueryResult(
        query=query,
        result_type=result_type,
        samples=samples,
        warnings=warnings,
        infos=infos,
        elapsed_seconds=elapsed_seconds,
    )


class _SeriesDecoder:
    """The decoder's hook for JSON objects: each well-formed instant-vector series becomes its `Sample` as soon as it
    is decoded, so an answer of 100,000 series is never held as 100,000 decoded objects at once (about three
    times the memory of the samples). Everything else, malformed series included, is left as decoded for
    `_samples` to check and report with its position.

    One string object per distinct label value, and one float per distinct timestamp (an instant vector has one): a
    batched answer repeats the same namespaces, models and outcomes across up to 100,000 series."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.instants: dict[float, float] = {}

    def __call__(self, decoded: dict[str, Any]) -> Any:
        if len(decoded) != 2 or "metric" not in decoded or "value" not in decoded:
            return decoded
        try:
            # No position in the message: a malformed series is checked again, with it, by `_samples`.
            labels = _labels(decoded["metric"], "", self.strings)
            timestamp, value = _point(decoded["value"], "")
        except _Malformed:
            return decoded
        return Sample(labels, value, self.instants.setdefault(timestamp, timestamp))


def _samples(data: Any, decoder: _SeriesDecoder) -> tuple[str, tuple[Sample, ...]]:
    if not isinstance(data, dict):
        raise _Malformed("'data' is missing or not an object")
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type in ("scalar", "string"):
        timestamp, value = _point(result, "data.result", allow_text=result_type == "string")
        return result_type, (Sample({}, value, timestamp),)
    if result_type not in ("vector", "matrix"):
        raise _Malformed(f"unknown resultType {result_type!r}")
    if not isinstance(result, list):
        raise _Malformed(f"data.result of a {result_type} is not a list")
    samples: list[Sample] = []
    strings, instants = decoder.strings, decoder.instants
    for index, series in enumerate(result):
        where = f"data.result[{index}]"
        if type(series) is Sample:  # decoded and checked by `_SeriesDecoder`
            if result_type != "vector":
                raise _Malformed(f"{where} has a 'value' in a matrix, whose series have 'values'")
            samples.append(series)
            continue
        if not isinstance(series, dict):
            raise _Malformed(f"{where} is not an object")
        labels = _labels(series.get("metric", {}), where, strings)
        if result_type == "vector":
            if "value" not in series:
                if "histogram" in series:
                    raise _Malformed(
                        f"{where} is a native histogram; wrap it in histogram_quantile(), histogram_count() or "
                        "histogram_sum() to get a number"
                    )
                raise _Malformed(f"{where} has no 'value'")
            timestamp, value = _point(series["value"], f"{where}.value")
            samples.append(Sample(labels, value, instants.setdefault(timestamp, timestamp)))
        else:
            points = series.get("values", [])
            if not isinstance(points, list):
                raise _Malformed(f"{where}.values is not a list")
            if "histograms" in series and not points:
                raise _Malformed(f"{where} holds native histograms only; wrap them in a function returning numbers")
            for position, point in enumerate(points):
                timestamp, value = _point(point, f"{where}.values[{position}]")
                samples.append(Sample(labels, value, timestamp))
    return result_type, tuple(samples)


def _point(point: Any, where: str, *, allow_text: bool = False) -> tuple[float, float]:
    if not isinstance(point, list) or len(point) != 2:
        raise _Malformed(f"{where} is not a [timestamp, value] pair")
    timestamp, text = point
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise _Malformed(f"{where} has a non-numeric timestamp {timestamp!r}")
    if not isinstance(text, str):
        # The API sends values as strings ("NaN", "+Inf" would not survive JSON numbers).
        raise _Malformed(f"{where} value {text!r} is not a string")
    try:
        value = float(text)
    except ValueError:
        kind = "string result" if allow_text else "value"
        raise _Malformed(f"{where}: {kind} {text[:80]!r} is not a number") from None
    return float(timestamp), value


def _labels(metric: Any, where: str, strings: dict[str, str]) -> Mapping[str, str]:
    # Hot path (one call per series; a fleet-wide drift answer holds hundreds of thousands): JSON object keys
    # are always strings (and the decoder already shares equal keys), so only the values need a look; the
    # freshly parsed dict is handed out as is, its values replaced by the first equal string in ``strings``.
    if type(metric) is not dict:
        raise _Malformed(f"{where}.metric is not an object of string labels")
    for name, value in metric.items():
        if type(value) is not str:
            raise _Malformed(f"{where}.metric is not an object of string labels")
        metric[name] = strings.setdefault(value, value)
    return metric


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(item) for item in value)
    return ()


def _snippet(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return "(empty body)"
    return text if len(text) <= _BODY_SNIPPET else text[:_BODY_SNIPPET] + "…"


#: Queries longer than this (characters) are sent by POST whatever the method set: a query split by models
#: lists thousands of names, and servers and proxies cap the length of a URL (8 KiB is common).
LONG_QUERY = 4000


# --- the real client ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrometheusSettings:
    """How to reach one Prometheus (or a Prometheus-compatible API: Thanos, Mimir, VictoriaMetrics).

    Credentials are excluded from ``repr`` so settings can be logged.
    """

    #: Base URL, path prefix included (``https://prom.example/prometheus``); ``/api/v1/query`` is appended.
    url: str
    #: Extra request headers, e.g. a tenant id (``X-Scope-OrgID``).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Sent as ``Authorization: Bearer <token>``.
    bearer_token: str | None = field(default=None, repr=False)
    #: HTTP basic auth (username, password).
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    #: CA bundle to verify the server, as PEM text (from a Secret) or as a file path; neither: system CAs.
    ca_pem: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    #: Client certificate and key for mutual TLS, as PEM text or file paths.
    client_cert_pem: str | None = field(default=None, repr=False)
    client_key_pem: str | None = field(default=None, repr=False)
    client_cert_file: str | None = None
    client_key_file: str | None = None
    #: Skip server certificate verification (test setups only).
    insecure_skip_verify: bool = False
    #: Seconds to wait for a connection and for the answer; also sent to Prometheus as the query's own
    #: ``timeout`` so it stops evaluating a query nobody waits for.
    timeout_seconds: float = 10.0
    #: ``GET`` or ``POST`` (form-encoded; for long queries behind proxies that cap URL length). Queries longer
    #: than ``LONG_QUERY`` characters go by POST either way.
    method: Literal["GET", "POST"] = "GET"
    #: Retries after a refused connection or a 502/503/504, with a short backoff. Never after a read timeout:
    #: re-sending a slow query doubles the load on a struggling Prometheus.
    retries: int = 1
    #: The largest answer read, in bytes (after decompression): a bigger one is a ``badResponse`` error naming
    #: its size, read no further, so a runaway query (or a broken proxy) cannot exhaust the operator's memory.
    #: 64 MiB holds a fleet-wide answer of a few hundred thousand series.
    max_answer_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ValueError(f"prometheus url {self.url!r}: expected an http:// or https:// URL")
        if self.bearer_token is not None and self.basic_auth is not None:
            raise ValueError("prometheus auth: set a bearer token or basic auth, not both")
        if self.bearer_token is not None and any(name.lower() == "authorization" for name in self.headers):
            raise ValueError("prometheus headers: Authorization is set by the bearer token; do not set it twice")
        for name, value in self.headers.items():
            if "\n" in name or "\r" in name or "\n" in value or "\r" in value:
                raise ValueError(f"prometheus headers: {name!r} contains a line break")
        if self.ca_pem is not None and self.ca_file is not None:
            raise ValueError("prometheus tls: set the CA as PEM text or as a file, not both")
        if (self.client_cert_pem is None) != (self.client_key_pem is None):
            raise ValueError("prometheus tls: a client certificate needs its key (and the key its certificate)")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("prometheus tls: a client certificate file needs its key file (and vice versa)")
        if self.client_cert_pem is not None and self.client_cert_file is not None:
            raise ValueError("prometheus tls: set the client certificate as PEM text or as files, not both")
        if not (math.isfinite(self.timeout_seconds) and self.timeout_seconds > 0):
            raise ValueError(f"prometheus timeout {self.timeout_seconds!r}: expected seconds > 0")
        if self.method not in ("GET", "POST"):
            raise ValueError(f"prometheus method {self.method!r}: expected GET or POST")
        if self.retries < 0:
            raise ValueError(f"prometheus retries {self.retries!r}: expected >= 0")
        if self.max_answer_bytes < 1:
            raise ValueError(f"prometheus max_answer_bytes {self.max_answer_bytes!r}: expected >= 1")


class PrometheusClient:
    """:class:`PrometheusQuerier` over HTTP, built on prometheus-api-client's ``PrometheusConnect``.

    ``PrometheusConnect`` holds the connection: URL, headers, basic auth, TLS verification, retry policy and
    timeout on one ``requests`` session. Queries go to ``/api/v1/query`` through that same session rather than
    through ``PrometheusConnect.custom_query``, because ``custom_query`` keeps only ``data.result``: it drops
    ``resultType`` (a scalar and a one-series vector look alike), the ``warnings``, and the ``errorType`` of a
    refused query, all of which this adapter must tell apart.

    Blocking: call :meth:`query` from a worker thread. Call :meth:`close` when done (it also removes the
    temporary files holding PEM material).
    """

    def __init__(self, settings: PrometheusSettings, *, session: requests.Session | None = None) -> None:
        self.settings = settings
        self._base = settings.url.rstrip("/")
        self._tls = TlsFiles("modelmonitor-prometheus-")
        session = session if session is not None else requests.Session()
        session.verify = self._tls.verify(
            insecure_skip_verify=settings.insecure_skip_verify, ca_pem=settings.ca_pem, ca_file=settings.ca_file
        )
        session.cert = self._tls.client_cert(
            cert_pem=settings.client_cert_pem,
            key_pem=settings.client_key_pem,
            cert_file=settings.client_cert_file,
            key_file=settings.client_key_file,
        )
        headers = dict(settings.headers)
        if settings.bearer_token is not None:
            headers["Authorization"] = f"Bearer {settings.bearer_token}"
        retry = Retry(
            total=settings.retries,
            connect=settings.retries,
            read=0,
            status=settings.retries,
            other=0,
            backoff_factor=0.2,
            status_forcelist=(502, 503, 504),
            allowed_methods=frozenset({"GET", "POST"}),
            # Hand back the last response instead of raising, so its status and body reach the error message.
            raise_on_status=False,
        )
        self.connection = PrometheusConnect(
            url=self._base,
            headers=headers or None,
            disable_ssl=settings.insecure_skip_verify,
            retry=retry,
            auth=settings.basic_auth,
            session=session,
            timeout=settings.timeout_seconds,  # annotated int by the library; requests takes float seconds
            method=settings.method,
        )
        self.session = session

    def query(self, promql: str, *, at: datetime | None = None) -> QueryResult:
        """Evaluate an instant query; never raises for anything Prometheus or the network does."""
        params: dict[str, str] = {"query": promql, "timeout": f"{self.settings.timeout_seconds:g}s"}
        if at is not None:
            params["time"] = _epoch(at)
        return self._call("query", params, promql)

    def query_range(self, promql: str, *, start: datetime, end: datetime, step_seconds: float) -> QueryResult:
        """Evaluate ``promql`` at ``start``, ``start + step``, ... up to ``end`` (``/api/v1/query_range``): the
        answer is a matrix whose point at each step is what an instant query at that time returns. Prometheus
        refuses more than 11,000 points per series and expressions that are not an instant vector or a scalar
        (a ``promql`` error). Never raises for anything Prometheus or the network does."""
        if not (math.isfinite(step_seconds) and step_seconds > 0):
            raise ValueError(f"query step {step_seconds!r}: expected seconds > 0")
        params = {
            "query": promql,
            "start": _epoch(start),
            "end": _epoch(end),
            "step": f"{step_seconds:g}",
            "timeout": f"{self.settings.timeout_seconds:g}s",
        }
        return self._call("query_range", params, promql)

    def _call(self, endpoint: str, params: Mapping[str, str], promql: str) -> QueryResult:
        connection = self.connection
        method = "POST" if len(promql) > LONG_QUERY else self.settings.method
        started = time.monotonic()
        try:
            response = self.session.request(
                method=method,
                url=f"{self._base}/api/v1/{endpoint}",
                params=params if method == "GET" else None,
                data=params if method == "POST" else None,
                headers=connection.headers,
                auth=connection.auth,
                timeout=self.settings.timeout_seconds,
                verify=self.session.verify,
                cert=self.session.cert,
                stream=True,  # read by `_read_bounded`, within the size and time limits
            )
            try:
                body = self._read_bounded(response, started, endpoint)
            finally:
                response.close()
        except requests.RequestException as failure:
            return QueryResult(
                query=promql, error=self._classify(failure, endpoint), elapsed_seconds=time.monotonic() - started
            )
        except _Unreadable as problem:
            return QueryResult(query=promql, error=problem.error, elapsed_seconds=time.monotonic() - started)
        return parse_answer(promql, response.status_code, body, elapsed_seconds=time.monotonic() - started)

    def _read_bounded(self, response: requests.Response, started: float, endpoint: str) -> bytes:
        """The body, read in chunks: at most ``max_answer_bytes``, and all of it within ``timeout_seconds`` of
        the start (``requests``' timeout bounds each read, so an answer trickling in would otherwise never end)."""
        limit, timeout = self.settings.max_answer_bytes, self.settings.timeout_seconds
        where = f"{self._base}/api/v1/{endpoint}"
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _Unreadable(_too_large(where, f"{int(declared)} bytes (Content-Length)", limit, response))
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                # read1 returns what has arrived (iter_content would wait for a whole chunk, however slowly it
                # trickles in); urllib3's errors are mapped here, as requests maps them for a whole read.
                chunk = response.raw.read1(256 * 1024, decode_content=True)
            except ReadTimeoutError:
                raise _Unreadable(
                    QueryError(ErrorKind.TIMEOUT, f"no answer from {where} within {timeout:g}s")
                ) from None
            except HTTPError as failure:
                raise _Unreadable(
                    QueryError(ErrorKind.CONNECTION, f"the answer from {where} broke off after {size} bytes: {failure}")
                ) from None
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise _Unreadable(_too_large(where, f"more than {limit} bytes", limit, response))
            if time.monotonic() - started > timeout:
                raise _Unreadable(
                    QueryError(
                        ErrorKind.TIMEOUT, f"no complete answer from {where} within {timeout:g}s ({size} bytes read)"
                    )
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Close the HTTP session and delete temporary PEM files."""
        self.connection.close()
        self._tls.remove()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _classify(self, failure: requests.RequestException, endpoint: str) -> QueryError:
        where = f"{self._base}/api/v1/{endpoint}"
        timeout = self.settings.timeout_seconds
        if isinstance(failure, requests.exceptions.SSLError):
            return QueryError(ErrorKind.CONNECTION, f"TLS handshake with {where} failed: {_reason(failure)}")
        if isinstance(failure, requests.Timeout):
            return QueryError(ErrorKind.TIMEOUT, f"no answer from {where} within {timeout:g}s: {_reason(failure)}")
        if isinstance(failure, requests.ConnectionError):
            cause = failure.args[0] if failure.args else None
            # requests reports a read timeout exhausted through urllib3's retries as a ConnectionError.
            # (urllib3's NewConnectionError, a refused connection, subclasses ConnectTimeoutError: rule it out.)
            reason = cause.reason if isinstance(cause, MaxRetryError) else None
            if isinstance(reason, ReadTimeoutError | ConnectTimeoutError) and not isinstance(
                reason, NewConnectionError
            ):
                return QueryError(ErrorKind.TIMEOUT, f"no answer from {where} within {timeout:g}s")
            return QueryError(ErrorKind.CONNECTION, f"cannot connect to {where}: {_reason(failure)}")
        if isinstance(failure, requests.exceptions.RetryError):
            return QueryError(ErrorKind.HTTP, f"{where} kept failing after retries: {_reason(failure)}")
        return QueryError(ErrorKind.CONNECTION, f"request to {where} failed: {_reason(failure)}")


def _epoch(moment: datetime) -> str:
    """A query time as the API takes it (Unix seconds); naive datetimes are refused, not guessed."""
    if moment.tzinfo is None:
        raise ValueError(f"query time {moment!r}: expected a timezone-aware datetime")
    return f"{moment.timestamp():.3f}"


class _Unreadable(Exception):
    """The answer was abandoned while being read (too large, too slow); ``error`` says why."""

    def __init__(self, error: QueryError) -> None:
        super().__init__(str(error))
        self.error = error


def _too_large(where: str, size: str, limit: int, response: requests.Response) -> QueryError:
    return QueryError(
        ErrorKind.BAD_RESPONSE,
        f"the answer from {where} is {size}, over the limit of {limit} bytes ({limit // (1024 * 1024)} MiB): "
        "narrow the query (fewer series, a shorter range)",
        status_code=response.status_code,
    )


def _reason(failure: BaseException) -> str:
    """The innermost useful text of a requests/urllib3 exception chain, without the object reprs."""
    cause: Any = failure.args[0] if failure.args else failure
    if isinstance(cause, MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    text = str(cause)
    # urllib3 messages look like "<urllib3.connection.HTTPConnection object at 0x...>: Failed to ...".
    if ">: " in text:
        text = text.split(">: ", 1)[1]
    return text
