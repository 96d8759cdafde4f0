"""The MLflow model registry behind a small Protocol (`ModelRegistry`); the client speaking MLflow's REST API is
`modelmonitor.mlflowrest` (plain HTTP, no ``mlflow-skinny``: docs/dependencies.md). Blocking: called from the
actions' worker thread.

:class:`RegistryConnections` turns a monitor's ``spec.registry.mlflow`` into a client: credentials from the same
Secret cache and resolution as Prometheus' (`modelmonitor.adapters.connections.read_credentials`), one client per
distinct settings, closed when no monitor uses it any more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Protocol

from modelmonitor.adapters.connections import CredentialsError, SecretCache, SecretReader, read_credentials
from modelmonitor.api import duration_seconds
from modelmonitor.api.registry import MlflowConnection
from modelmonitor.mlflowrest import MlflowRegistry, ModelVersion, RegistryError, RegistrySettings

__all__ = [
    "MlflowRegistry",
    "ModelRegistry",
    "ModelVersion",
    "RegistryConnections",
    "RegistryError",
    "RegistrySettings",
]


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
