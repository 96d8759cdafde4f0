"""The MLflow model registry behind a small Protocol, over MLflow's REST API (``/api/2.0/mlflow/...``).

Plain HTTP through ``requests`` rather than the ``mlflow-skinny`` client: the operator needs six calls (search
versions by tag, get a version, get/set an alias, set a tag), and ``mlflow-skinny`` would bring a few dozen
packages (protobuf, OpenTelemetry, the Databricks SDK, GitPython, ...) into the operator's image for them
(docs/dependencies.md).

Every failure is a :class:`RegistryError`: ``unreachable`` when no answer came (refused, DNS, TLS, timeout, a
5xx), so the caller retries later; otherwise MLflow's ``error_code`` (``RESOURCE_DOES_NOT_EXIST``,
``INVALID_PARAMETER_VALUE``, ...) and message. Blocking: called from the actions' worker thread.

:class:`RegistryConnections` turns a monitor's ``spec.registry.mlflow`` into a client: credentials from the same
Secret cache and resolution as Prometheus' (`modelmonitor.adapters.connections.read_credentials`), one client per
distinct settings, closed when no monitor uses it any more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from modelmonitor.adapters.connections import CredentialsError, SecretCache, SecretReader, read_credentials
from modelmonitor.adapters.tlsfiles import TlsFiles
from modelmonitor.api import duration_seconds
from modelmonitor.api.registry import MlflowConnection

__all__ = [
    "MlflowRegistry",
    "ModelRegistry",
    "ModelVersion",
    "RegistryConnections",
    "RegistryError",
    "RegistrySettings",
]

_API = "/api/2.0/mlflow"
#: Versions read per page of a search; a model with more versions is read page by page.
_PAGE = 200
#: At most this many pages (so 10,000 versions) per search: a bound on one cycle's work.
_MAX_PAGES = 50


class RegistryError(Exception):
    """A registry call that failed. ``unreachable``: no usable answer (retry later)."""

    def __init__(self, message: str, *, unreachable: bool = False, error_code: str = "", status: int | None = None):
        super().__init__(message)
        self.unreachable = unreachable
        self.error_code = error_code
        self.status = status


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model."""

    model: str
    version: str
    source: str
    run_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


class ModelRegistry(Protocol):
    """What the operator asks of a model registry."""

    def versions(self, model: str, tags: Mapping[str, str] | None = None) -> list[ModelVersion]:
        """Every version of ``model`` (carrying all of ``tags`` when given), lowest version number first."""
        ...

    def version(self, model: str, version: str) -> ModelVersion: ...

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        """The version ``alias`` points at, or None when the alias is not set."""
        ...

    def set_alias(self, model: str, alias: str, version: str) -> None: ...

    def set_tag(self, model: str, version: str, key: str, value: str) -> None: ...


@dataclass(frozen=True)
class RegistrySettings:
    """How to reach one MLflow tracking server. Credentials are excluded from ``repr``."""

    url: str
    bearer_token: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    ca_pem: str | None = field(default=None, repr=False)
    client_cert_pem: str | None = field(default=None, repr=False)
    client_key_pem: str | None = field(default=None, repr=False)
    insecure_skip_verify: bool = False
    timeout_seconds: float = 10.0


def _quote(value: str, what: str) -> str:
    # MLflow's filter grammar has no escape for a quote inside a string literal.
    if "'" in value or "`" in value:
        raise RegistryError(f"{what} {value!r} contains a quote, which MLflow's search filter cannot express")
    return f"'{value}'"


def _version_of(model: str, raw: Mapping[str, Any]) -> ModelVersion:
    tags = {str(t.get("key")): str(t.get("value", "")) for t in raw.get("tags") or [] if isinstance(t, dict)}
    return ModelVersion(
        model=str(raw.get("name") or model),
        version=str(raw.get("version", "")),
        source=str(raw.get("source", "")),
        run_id=str(raw.get("run_id", "")),
        tags=tags,
        aliases=tuple(str(a) for a in raw.get("aliases") or []),
    )


class MlflowRegistry:
    """:class:`ModelRegistry` over MLflow's REST API. Call :meth:`close` when done."""

    def __init__(self, settings: RegistrySettings, *, session: requests.Session | None = None) -> None:
        self.settings = settings
        self._base = settings.url.rstrip("/")
        self._tls = TlsFiles("modelmonitor-mlflow-")
        self.session = session if session is not None else requests.Session()
        self.session.verify = self._tls.verify(
            insecure_skip_verify=settings.insecure_skip_verify, ca_pem=settings.ca_pem
        )
        self.session.cert = self._tls.client_cert(cert_pem=settings.client_cert_pem, key_pem=settings.client_key_pem)
        if settings.bearer_token is not None:
            self.session.headers["Authorization"] = f"Bearer {settings.bearer_token}"
        if settings.basic_auth is not None:
            self.session.auth = settings.basic_auth

    def close(self) -> None:
        self.session.close()
        self._tls.remove()

    # --- the registry -------------------------------------------------------------------------------------

    def versions(self, model: str, tags: Mapping[str, str] | None = None) -> list[ModelVersion]:
        terms = [f"name = {_quote(model, 'model name')}"]
        terms += [f"tags.`{k}` = {_quote(v, f'tag {k}')}" for k, v in sorted((tags or {}).items())]
        found: list[ModelVersion] = []
        token = ""
        for _ in range(_MAX_PAGES):
            params = {"filter": " and ".join(terms), "max_results": str(_PAGE)}
            if token:
                params["page_token"] = token
            answer = self._call("GET", "/model-versions/search", params=params)
            found += [_version_of(model, v) for v in answer.get("model_versions") or []]
            token = str(answer.get("next_page_token") or "")
            if not token:
                break
        # MLflow's tag filter is applied server side; checked again so a server ignoring it cannot mislead us.
        found = [v for v in found if all(v.tags.get(k) == val for k, val in (tags or {}).items())]
        return sorted(found, key=lambda v: int(v.version) if v.version.isdigit() else 0)

    def version(self, model: str, version: str) -> ModelVersion:
        answer = self._call("GET", "/model-versions/get", params={"name": model, "version": version})
        return _version_of(model, answer.get("model_version") or {})

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        try:
            answer = self._call("GET", "/registered-models/alias", params={"name": model, "alias": alias})
        except RegistryError as exc:
            # MLflow 3 answers 400 INVALID_PARAMETER_VALUE "Registered model alias champion not found."
            text = str(exc).lower()
            if exc.status in (400, 404) and f"alias {alias.lower()} not found" in text:
                return None
            raise
        return _version_of(model, answer.get("model_version") or {})

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self._call("POST", "/registered-models/alias", json={"name": model, "alias": alias, "version": version})

    def set_tag(self, model: str, version: str, key: str, value: str) -> None:
        self._call(
            "POST", "/model-versions/set-tag", json={"name": model, "version": version, "key": key, "value": value}
        )

    # --- HTTP ---------------------------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, json: Any = None
    ) -> dict[str, Any]:
        url = f"{self._base}{_API}{path}"
        try:
            response = self.session.request(
                method, url, params=params, json=json, timeout=self.settings.timeout_seconds
            )
        except requests.Timeout:
            raise RegistryError(
                f"no answer from {url} within {self.settings.timeout_seconds:g}s", unreachable=True
            ) from None
        except requests.RequestException as exc:
            raise RegistryError(f"cannot reach {url}: {type(exc).__name__}", unreachable=True) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise RegistryError(
                f"{method} {url}: HTTP {response.status_code} {body.get('message') or response.text[:200]}",
                unreachable=True,
                status=response.status_code,
            )
        if response.status_code >= 400:
            code = str(body.get("error_code") or "")
            raise RegistryError(
                f"{method} {url}: HTTP {response.status_code} {code}: {body.get('message') or response.text[:200]}",
                error_code=code,
                status=response.status_code,
            )
        return body


RegistryFactory = Callable[[RegistrySettings], ModelRegistry]
MonitorKey = tuple[str, str]


class RegistryConnections:
    """Each monitor's registry client, resolved from ``spec.registry.mlflow``; one per distinct settings."""

    def __init__(
        self,
        secrets: SecretReader,
        *,
        secret_ttl_seconds: float = 60.0,
        factory: RegistryFactory = MlflowRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = SecretCache(secrets, secret_ttl_seconds, clock)
        self._factory = factory
        self._clients: dict[Hashable, ModelRegistry] = {}
        self._client_of: dict[MonitorKey, Hashable] = {}
        self._lock = threading.Lock()

    def client(self, namespace: str, monitor: str, connection: MlflowConnection) -> ModelRegistry:
        """The registry client of ``namespace/monitor``. Raises `RegistryError` naming the field, Secret and key
        when a credential cannot be read."""
        try:
            creds = read_credentials(
                self._secrets, namespace, "spec.registry.mlflow", connection.auth, connection.tls, set()
            )
        except CredentialsError as exc:
            raise RegistryError(str(exc)) from exc
        settings = RegistrySettings(
            url=connection.tracking_uri,
            bearer_token=creds.bearer_token,
            basic_auth=creds.basic_auth,
            ca_pem=creds.ca_pem,
            client_cert_pem=creds.client_cert_pem,
            client_key_pem=creds.client_key_pem,
            insecure_skip_verify=creds.insecure_skip_verify,
            timeout_seconds=duration_seconds(connection.timeout),
        )
        key: Hashable = settings
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self._factory(settings)
            self._client_of[(namespace, monitor)] = key
            self._close_unused()
        return client

    def retain(self, monitors: Iterable[MonitorKey]) -> None:
        """Close the clients only monitors not in ``monitors`` (deleted ones) used."""
        keep = set(monitors)
        with self._lock:
            for who in [m for m in self._client_of if m not in keep]:
                del self._client_of[who]
            self._close_unused()

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
            self._client_of.clear()
        for client in clients:
            _close(client)

    def _close_unused(self) -> None:
        used = set(self._client_of.values())
        for key in [k for k in self._clients if k not in used]:
            _close(self._clients.pop(key))


def _close(client: ModelRegistry) -> None:
    close = getattr(client, "close", None)
    if callable(close):
        close()
