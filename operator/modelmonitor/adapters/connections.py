"""How a monitor reaches its Prometheus: credentials from Secrets, and one pooled client per distinct connection.

:class:`Connections` turns a monitor's ``spec.prometheus`` into a :class:`~.prometheus.PrometheusQuerier`:

* **Secrets from a shared cache.** Each referenced Secret is read with one ``get`` per (namespace, name) per
  ``ttl_seconds``, whatever the number of monitors naming it and however often they are evaluated; a rotated
  Secret is picked up at the next read after the TTL. A cache rather than a watch keeps the operator's RBAC at
  ``get`` on Secrets: a watch needs ``list`` and ``watch``, which hand the operator every Secret of every watched
  namespace, while ``get`` reaches only the Secrets a monitor names. A refresh that fails for a passing reason
  (API server unreachable, 5xx) keeps serving the last value read; a Secret that is gone (404) or no longer
  readable (403) is an error at once.
* **Clients pooled by settings.** Monitors whose resolved settings are equal (URL, headers, credentials, TLS,
  timeout) share one client and its connection pool. A client is closed (its ``requests`` session, and the
  temporary directory holding PEM files) as soon as no monitor uses it any more: a monitor's settings changed
  (a rotated token, a new URL) or the monitor is gone (:meth:`Connections.retain`).

Blocking, like the clients. The loop calls :meth:`Connections.querier` and :meth:`Connections.retain` from the
thread that runs a cycle, before the cycle's queries start; a client is only closed by those calls, so it is
never closed under a query of the same cycle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from modelmonitor.adapters.kubernetes import KubernetesError
from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusQuerier, PrometheusSettings
from modelmonitor.api import PrometheusConnection, duration_seconds
from modelmonitor.api.auth import HttpAuth, HttpTLS

__all__ = [
    "Connections",
    "CredentialsError",
    "HttpCredentials",
    "PrometheusConnectionError",
    "PrometheusFactory",
    "SecretCache",
    "SecretReader",
    "read_credentials",
]

MonitorKey = tuple[str, str]
PrometheusFactory = Callable[[PrometheusSettings], PrometheusQuerier]


class CredentialsError(ValueError):
    """A credential a monitor names cannot be read; the message names the field, Secret and key."""


class PrometheusConnectionError(CredentialsError):
    """A monitor's Prometheus connection cannot be built; the message names the field, Secret and key."""


@dataclass(frozen=True)
class HttpCredentials:
    """What ``auth`` and ``tls`` of a connection (`HttpAuth`, `HttpTLS`) resolve to, Secrets read."""

    bearer_token: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    ca_pem: str | None = field(default=None, repr=False)
    client_cert_pem: str | None = field(default=None, repr=False)
    client_key_pem: str | None = field(default=None, repr=False)
    insecure_skip_verify: bool = False


def read_credentials(
    secrets: SecretCache,
    namespace: str,
    where: str,
    auth: HttpAuth | None,
    tls: HttpTLS | None,
    named: set[tuple[str, str]],
) -> HttpCredentials:
    """The credentials of a connection at ``where`` (``spec.prometheus``, ``spec.registry.mlflow``) in
    ``namespace``. Every Secret named is added to ``named``, even when reading it fails. Raises
    `CredentialsError` naming the field, the Secret and the key."""

    def secret(field: str, name: str, key: str) -> str:
        named.add((namespace, name))
        try:
            data = secrets.get(namespace, name)
        except KubernetesError as exc:
            raise CredentialsError(f"{field}: cannot read Secret {namespace}/{name}: {exc}") from exc
        if key not in data:
            raise CredentialsError(f"{field}: Secret {namespace}/{name} has no key {key!r}")
        try:
            return data[key].decode("utf-8")
        except UnicodeDecodeError:
            raise CredentialsError(f"{field}: key {key!r} of Secret {namespace}/{name} is not UTF-8 text") from None

    bearer = basic = ca = cert = key = None
    if auth is not None:
        if (ref := auth.bearer_token_secret_ref) is not None:
            # A token file written with `echo` ends in a newline that must not reach the header.
            bearer = secret(f"{where}.auth.bearerTokenSecretRef", ref.name, ref.key).strip()
        if (basic_ref := auth.basic_auth_secret_ref) is not None:
            field = f"{where}.auth.basicAuthSecretRef"
            basic = (
                secret(field, basic_ref.name, basic_ref.username_key),
                secret(field, basic_ref.name, basic_ref.password_key),
            )
    insecure = False
    if tls is not None:
        insecure = tls.insecure_skip_verify
        if (ca_ref := tls.ca_secret_ref) is not None:
            ca = secret(f"{where}.tls.caSecretRef", ca_ref.name, ca_ref.key)
        if (cert_ref := tls.cert_secret_ref) is not None:
            field = f"{where}.tls.certSecretRef"
            cert = secret(field, cert_ref.name, cert_ref.cert_key)
            key = secret(field, cert_ref.name, cert_ref.key_key)
    return HttpCredentials(bearer, basic, ca, cert, key, insecure)


class SecretReader(Protocol):
    """Reads one Secret's data (values decoded from base64). Raises `KubernetesError` with the HTTP status."""

    def read_secret(self, namespace: str, name: str) -> Mapping[str, bytes]: ...


@runtime_checkable
class _Closable(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True)
class _Read:
    """One read of a Secret: its data, or the error that read got, and when it was made."""

    at: float
    data: Mapping[str, bytes] | None
    error: KubernetesError | None


class SecretCache:
    """Secrets by (namespace, name), each read at most once per ``ttl_seconds``. Thread-safe."""

    def __init__(self, reader: SecretReader, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl_seconds > 0:
            raise ValueError(f"secret ttl {ttl_seconds!r}: expected seconds > 0")
        self._reader = reader
        self._ttl = ttl_seconds
        self._clock = clock
        self._reads: dict[tuple[str, str], _Read] = {}
        self._lock = threading.Lock()

    def get(self, namespace: str, name: str) -> Mapping[str, bytes]:
        """The Secret's data, from the cache while the last read is younger than the TTL.

        Raises `KubernetesError` when the Secret cannot be read (a failed read is cached for the TTL too, so a
        missing Secret named by a thousand monitors costs one GET per TTL, not a thousand per cycle).
        """
        key = (namespace, name)
        # One lock for reads and fetches: the loop resolves connections from one thread, and a second caller
        # for the same Secret must wait for the read under way rather than send its own.
        with self._lock:
            now = self._clock()
            last = self._reads.get(key)
            if last is None or now - last.at >= self._ttl:
                last = self._reads[key] = self._fetch(namespace, name, now, last)
        if last.error is not None:
            raise last.error
        assert last.data is not None
        return last.data

    def forget_unused(self, used: Iterable[tuple[str, str]]) -> None:
        """Drop every cached Secret not in ``used`` (Secrets no monitor names any more)."""
        keep = set(used)
        with self._lock:
            for key in [k for k in self._reads if k not in keep]:
                del self._reads[key]

    def _fetch(self, namespace: str, name: str, now: float, last: _Read | None) -> _Read:
        try:
            return _Read(now, dict(self._reader.read_secret(namespace, name)), None)
        except KubernetesError as exc:
            gone = exc.status in (403, 404)
            if last is not None and last.data is not None and not gone:
                # The API server had a hiccup: the credentials read before are still the best we know.
                return _Read(now, last.data, None)
            return _Read(now, None, exc)


def _settings_key(settings: PrometheusSettings) -> Hashable:
    """Everything that makes two clients differ (credentials included: a rotated token is a new client)."""
    return (
        settings.url,
        tuple(sorted(settings.headers.items())),
        settings.bearer_token,
        settings.basic_auth,
        settings.ca_pem,
        settings.ca_file,
        settings.client_cert_pem,
        settings.client_key_pem,
        settings.client_cert_file,
        settings.client_key_file,
        settings.insecure_skip_verify,
        settings.timeout_seconds,
        settings.method,
        settings.retries,
    )


class Connections:
    """Each monitor's Prometheus client: resolved from its spec, credentials from the Secret cache, pooled."""

    def __init__(
        self,
        secrets: SecretReader,
        *,
        default_url: str | None,
        secret_ttl_seconds: float,
        factory: PrometheusFactory = PrometheusClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default_url = default_url
        self._secrets = SecretCache(secrets, secret_ttl_seconds, clock)
        self._factory = factory
        self._clients: dict[Hashable, PrometheusQuerier] = {}
        self._users: dict[Hashable, set[MonitorKey]] = {}
        self._client_of: dict[MonitorKey, Hashable] = {}
        self._secrets_of: dict[MonitorKey, frozenset[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def querier(self, namespace: str, monitor: str, connection: PrometheusConnection) -> PrometheusQuerier:
        """The client for monitor ``namespace/monitor`` with connection ``connection`` (its ``spec.prometheus``).

        Raises :class:`PrometheusConnectionError` naming the field and the Secret (and key) when the URL or a
        credential is missing; the monitor then holds no client (the one it had is closed if nobody else uses it).
        """
        who = (namespace, monitor)
        named: set[tuple[str, str]] = set()
        try:
            settings = self._settings(namespace, connection, named)
        except PrometheusConnectionError:
            with self._lock:
                # Still named: a missing Secret stays cached (as missing) for the TTL.
                self._secrets_of[who] = frozenset(named)
                previous = self._client_of.pop(who, None)
                if previous is not None:
                    self._release(who, previous)
            raise
        key = _settings_key(settings)
        with self._lock:
            self._secrets_of[who] = frozenset(named)
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self._factory(settings)
                self._users[key] = set()
            self._users[key].add(who)
            previous = self._client_of.get(who)
            self._client_of[who] = key
            if previous is not None and previous != key:
                self._release(who, previous)
        return client

    def retain(self, monitors: Iterable[MonitorKey]) -> None:
        """Keep the clients and cached Secrets of ``monitors`` only; close what only other (deleted) monitors used."""
        keep = set(monitors)
        with self._lock:
            # A monitor whose connection failed has named Secrets but no client: both are looked at.
            for who in [m for m in {*self._client_of, *self._secrets_of} if m not in keep]:
                previous = self._client_of.pop(who, None)
                if previous is not None:
                    self._release(who, previous)
                self._secrets_of.pop(who, None)
            used = set().union(*self._secrets_of.values()) if self._secrets_of else set()
        self._secrets.forget_unused(used)

    def close(self) -> None:
        """Close every client (sessions and temporary PEM files)."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
            self._users.clear()
            self._client_of.clear()
            self._secrets_of.clear()
        for client in clients:
            _close(client)

    def holds(self, client: PrometheusQuerier) -> bool:
        """Whether ``client`` is still open here (some monitor uses it)."""
        with self._lock:
            return any(held is client for held in self._clients.values())

    @property
    def open_clients(self) -> int:
        """How many clients are open."""
        with self._lock:
            return len(self._clients)

    def _release(self, who: MonitorKey, key: Hashable) -> None:
        users = self._users.get(key)
        if users is None:
            return
        users.discard(who)
        if not users:
            del self._users[key]
            _close(self._clients.pop(key))

    def _settings(self, namespace: str, conn: PrometheusConnection, named: set[tuple[str, str]]) -> PrometheusSettings:
        """The monitor's settings; every Secret it names is added to ``named``, even when reading it fails."""
        url = conn.url or self._default_url
        if not url:
            raise PrometheusConnectionError(
                "spec.prometheus.url is not set and the operator has no default (MODELMONITOR_PROMETHEUS_URL)"
            )

        try:
            creds = read_credentials(self._secrets, namespace, "spec.prometheus", conn.auth, conn.tls, named)
        except CredentialsError as exc:
            raise PrometheusConnectionError(str(exc)) from exc
        try:
            return PrometheusSettings(
                url=url,
                headers=dict(conn.headers),
                bearer_token=creds.bearer_token,
                basic_auth=creds.basic_auth,
                ca_pem=creds.ca_pem,
                client_cert_pem=creds.client_cert_pem,
                client_key_pem=creds.client_key_pem,
                insecure_skip_verify=creds.insecure_skip_verify,
                timeout_seconds=duration_seconds(conn.timeout),
            )
        except ValueError as exc:
            raise PrometheusConnectionError(f"spec.prometheus: {exc}") from exc


def _close(client: PrometheusQuerier) -> None:
    # Test fakes answer queries only; the real client holds a session and maybe a directory of PEM files.
    if isinstance(client, _Closable):
        client.close()
