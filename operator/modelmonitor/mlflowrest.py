"""MLflow's REST API (``/api/2.0/mlflow/...`` and the artifact proxy ``/api/2.0/mlflow-artifacts/...``) over
``requests``: the few calls ModelMonitor makes of a model registry, shared by the operator (alias moves,
promotions: `modelmonitor.adapters.registry`), ``modelmonitor profile build`` (storing a version's reference
profile) and the sidecar (loading the profile of the version it serves). A leaf module, so the sidecar, which
imports nothing of the operator side, can use it.

Plain HTTP rather than the ``mlflow-skinny`` client (docs/dependencies.md). Every failure is a
:class:`RegistryError`: ``unreachable`` when no usable answer came (refused, DNS, TLS, timeout, a 5xx), so the
caller retries later; otherwise MLflow's ``error_code`` (``RESOURCE_DOES_NOT_EXIST``, ``INVALID_PARAMETER_VALUE``,
...) and message. Blocking.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from modelmonitor.tlsfiles import TlsFiles

#: The tag on a registered version naming its reference profile (an ``mlflow-artifacts:/`` URI).
PROFILE_TAG = "modelmonitor.dev/profile"
_ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts/"
#: The scheme of URIs in the tracking server's artifact store (its artifact proxy).
ARTIFACT_SCHEME = "mlflow-artifacts:/"

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

    def serving(self, model: str, source: str) -> ModelVersion | None:
        """The version of ``model`` whose source is ``source`` (the newest, should two share it), or None."""
        matching = [v for v in self.versions(model) if v.source == source]
        return matching[-1] if matching else None

    # --- artifacts (the tracking server's artifact proxy, on by default since MLflow 2) -----------------------

    def upload_artifact(self, path: str, data: bytes) -> str:
        """Store ``data`` at ``path`` in the server's artifact store; its ``mlflow-artifacts:/`` URI."""
        clean = path.strip("/")
        self._request("PUT", f"{self._base}{_ARTIFACTS}{quote(clean)}", data=data)
        return f"{ARTIFACT_SCHEME}{clean}"

    def download_artifact(self, uri: str) -> bytes:
        """The bytes of an ``mlflow-artifacts:/`` URI."""
        if not uri.startswith(ARTIFACT_SCHEME):
            raise RegistryError(f"{uri!r} is not an {ARTIFACT_SCHEME} URI this server can serve")
        path = uri[len(ARTIFACT_SCHEME) :].lstrip("/")
        return self._request("GET", f"{self._base}{_ARTIFACTS}{quote(path)}").content

    # --- HTTP ---------------------------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, json: Any = None
    ) -> dict[str, Any]:
        response = self._request(method, f"{self._base}{_API}{path}", params=params, json=json)
        try:
            body = response.json()
        except ValueError:
            body = None
        return body if isinstance(body, dict) else {}

    def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
    ) -> requests.Response:
        try:
            response = self.session.request(
                method, url, params=params, json=json, data=data, timeout=self.settings.timeout_seconds
            )
        except requests.Timeout:
            raise RegistryError(
                f"no answer from {url} within {self.settings.timeout_seconds:g}s", unreachable=True
            ) from None
        except requests.RequestException as exc:
            raise RegistryError(f"cannot reach {url}: {type(exc).__name__}", unreachable=True) from None
        if response.status_code < 400:
            return response
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        message = body.get("message") or response.text[:200]
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise RegistryError(
                f"{method} {url}: HTTP {response.status_code} {message}", unreachable=True, status=response.status_code
            )
        code = str(body.get("error_code") or "")
        raise RegistryError(
            f"{method} {url}: HTTP {response.status_code} {code}: {message}",
            error_code=code,
            status=response.status_code,
        )


def settings_from_env(url: str, timeout_seconds: float = 30.0) -> RegistrySettings:
    """Settings for command-line tools, credentials from MLflow's own variables: ``MLFLOW_TRACKING_TOKEN``, or
    ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``; ``MLFLOW_TRACKING_SERVER_CERT_PATH`` (a CA
    bundle) and ``MLFLOW_TRACKING_INSECURE_TLS=true``."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    ca_path = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    ca_pem = None
    if ca_path:
        with open(ca_path, encoding="utf-8") as handle:
            ca_pem = handle.read()
    return RegistrySettings(
        url=url,
        bearer_token=os.environ.get("MLFLOW_TRACKING_TOKEN") or None,
        basic_auth=(user, password) if user and password else None,
        ca_pem=ca_pem,
        insecure_skip_verify=os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true",
        timeout_seconds=timeout_seconds,
    )
