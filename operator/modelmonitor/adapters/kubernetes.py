"""The operator's reads and writes of Kubernetes objects other than through Kopf's watch, behind a Protocol.

The evaluation loop writes each monitor's status once per cycle and an Event per transition; tests swap in a
recording fake. The real implementation uses the official `kubernetes` client (blocking: the loop calls it from
worker threads, never on the event loop).
"""

from __future__ import annotations

import base64
import datetime
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelmonitor.api import GROUP, KIND, PLURAL, VERSION


class KubernetesError(RuntimeError):
    """A Kubernetes API call failed; `status` is the HTTP status (0 when the server could not be reached)."""

    def __init__(self, what: str, status: int, reason: str) -> None:
        super().__init__(f"{what}: {status or 'unreachable'} {reason}".strip())
        self.status = status


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about."""

    namespace: str
    name: str
    uid: str
    kind: str = KIND
    api_version: str = f"{GROUP}/{VERSION}"


class Kubernetes(Protocol):
    """What the evaluation loop needs from the API server."""

    def patch_monitor_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...

    def emit_event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None: ...

    def read_secret_key(self, namespace: str, name: str, key: str) -> str: ...


def load_config() -> None:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


def _error(what: str, exc: Exception) -> KubernetesError:
    if isinstance(exc, ApiException):
        reason = exc.reason or ""
        return KubernetesError(what, int(exc.status or 0), reason)
    return KubernetesError(what, 0, str(exc))


class KubernetesClient:
    """`Kubernetes` on the official client. Build once at start (not at import) and share."""

    def __init__(self, api_client: client.ApiClient | None = None, component: str = "modelmonitor") -> None:
        self.api = api_client or client.ApiClient()
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.component = component

    def patch_monitor_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Replace the status through the status subresource (a merge patch: lists are replaced whole)."""
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)}
            )
        except Exception as exc:  # every failure becomes one error type the loop records
            raise _error(f"patching the status of {namespace}/{name}", exc) from exc

    def emit_event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=f"{ref.name}.{uuid.uuid4().hex[:12]}", namespace=ref.namespace),
            involved_object=client.V1ObjectReference(
                api_version=ref.api_version, kind=ref.kind, name=ref.name, namespace=ref.namespace, uid=ref.uid
            ),
            type=event_type,
            reason=reason,
            # The API server caps Event messages at 1 KiB.
            message=message[:1024],
            source=client.V1EventSource(component=self.component),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            reporting_component=self.component,
            reporting_instance=self.component,
        )
        try:
            self.core.create_namespaced_event(ref.namespace, event)
        except Exception as exc:
            raise _error(f"posting an Event on {ref.namespace}/{ref.name}", exc) from exc

    def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except Exception as exc:
            raise _error(f"reading Secret {namespace}/{name}", exc) from exc
        data = secret.data or {}
        if key not in data:
            raise KubernetesError(f"reading Secret {namespace}/{name}", 404, f"has no key {key!r}")
        return base64.b64decode(data[key]).decode()
