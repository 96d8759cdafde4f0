"""The operator's reads and writes of Kubernetes objects other than through Kopf's watch, behind Protocols.

`Kubernetes` is what the evaluation loop needs: each monitor's status once per cycle, an Event per transition
(a repeated Event is counted on one object, as client-go's recorder does: adapters/events.py) and the Secrets
that hold Prometheus credentials (read through the cache in adapters/connections.py). `Workloads` is what the
actions need: plain JSON objects (dicts, as the API server sends them) of any kind, read, listed, created,
replaced with optimistic concurrency, merge-patched, and the /scale subresource.
Tests swap in fakes. The real implementation uses the official `kubernetes` client (blocking: the loop calls it
from worker threads, never on the event loop).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelmonitor.adapters.events import EventCorrelator, EventKey, Occurrence
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

    def read_secret(self, namespace: str, name: str) -> Mapping[str, bytes]:
        """A Secret's data, values decoded from base64 (one GET; callers cache, see adapters/connections.py)."""
        ...


@dataclass(frozen=True)
class Kind:
    """A kind of object: ``apiVersion`` (``v1`` for the core group, else ``group/version``) and ``kind``."""

    api_version: str
    kind: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def __str__(self) -> str:
        return f"{self.kind}.{self.api_version}"


DEPLOYMENT = Kind("apps/v1", "Deployment")
STATEFULSET = Kind("apps/v1", "StatefulSet")
REPLICASET = Kind("apps/v1", "ReplicaSet")
JOB = Kind("batch/v1", "Job")
POD = Kind("v1", "Pod")
HPA = Kind("autoscaling/v2", "HorizontalPodAutoscaler")

# Plural resource names of the kinds the operator uses; any other kind is looked up by API discovery.
_KNOWN_PLURALS = {
    DEPLOYMENT: "deployments",
    STATEFULSET: "statefulsets",
    REPLICASET: "replicasets",
    JOB: "jobs",
    POD: "pods",
    HPA: "horizontalpodautoscalers",
}


class Workloads(Protocol):
    """What the actions need from the API server: objects of any kind as JSON dicts.

    Every failure raises `KubernetesError` with the HTTP status: 404 not found, 409 a conflict (the object
    changed since it was read, or already exists), 403 forbidden by RBAC.
    """

    def get(self, kind: Kind, namespace: str, name: str, *, subresource: str = "") -> dict[str, Any]: ...

    def list(self, kind: Kind, namespace: str, *, label_selector: str = "") -> list[dict[str, Any]]: ...

    def create(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def replace(self, kind: Kind, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the whole object; its ``metadata.resourceVersion`` makes it fail with 409 if it changed."""
        ...

    def patch(
        self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        """A JSON merge patch; a ``metadata.resourceVersion`` in it is a precondition (409 if it changed)."""
        ...

    def whoami(self) -> str:
        """The user name the operator is authenticated as (``system:serviceaccount:<ns>:<name>`` in a pod)."""
        ...


def current_namespace() -> str:
    """The namespace the operator runs in: the pod's in a cluster, else the kubeconfig context's ("default")."""
    try:
        with open(_POD_NAMESPACE_FILE) as f:
            return f.read().strip()
    except OSError:
        pass
    try:
        _contexts, active = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError):
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


_POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def load_config() -> str:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config. Returns where the configuration
    came from, for messages; raises ValueError naming it when it cannot be loaded."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return "the pod's service account"
    except config.ConfigException:
        pass
    where = os.environ.get("KUBECONFIG") or os.path.expanduser(config.KUBE_CONFIG_DEFAULT_LOCATION)
    try:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    except Exception as exc:  # a missing file, bad YAML, no current context, a missing certificate file
        raise ValueError(f"cannot load the kubeconfig {where}: {exc or type(exc).__name__}") from exc
    return f"the kubeconfig {where}"


#: The API server caps Event messages at 1 KiB.
_EVENT_MESSAGE_LIMIT = 1024


def _timestamp(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with seconds, as core/v1 Event timestamps are stored."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(what: str, exc: Exception) -> KubernetesError:
    if isinstance(exc, ApiException):
        reason = exc.reason or ""
        return KubernetesError(what, int(exc.status or 0), reason)
    return KubernetesError(what, 0, str(exc))


class KubernetesClient:
    """`Kubernetes` and `Workloads` on the official client. Build once at start (not at import) and share."""

    #: Seconds before one API call is abandoned (connect, read).
    timeout: tuple[float, float] = (5.0, 30.0)

    def __init__(self, api_client: client.ApiClient | None = None, component: str = "modelmonitor") -> None:
        self.api = api_client or client.ApiClient()
        self.component = component
        self._plurals: dict[Kind, str] = dict(_KNOWN_PLURALS)
        self._plurals_lock = threading.Lock()
        self._whoami: str | None = None
        #: Shared by every thread that posts Events (the status writers): one count per Event, not per thread.
        self.events = EventCorrelator()
        self._timeout = urllib3.Timeout(connect=self.timeout[0], read=self.timeout[1])

    def patch_monitor_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Replace the status through the status subresource (a merge patch: lists are replaced whole)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{PLURAL}/{quote(name, safe='')}/status"
        self._request(
            "PATCH",
            path,
            f"patching the status of {namespace}/{name}",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
            answer=False,
        )

    def emit_event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None:
        """Post an Event, or bump ``count`` and ``lastTimestamp`` of the same Event posted before (client-go's
        correlation, adapters/events.py)."""
        key = EventKey(self.component, ref.api_version, ref.kind, ref.namespace, ref.name, ref.uid, event_type, reason)
        # Cut before correlating, so messages equal once cut count as equal.
        message = message[:_EVENT_MESSAGE_LIMIT]
        with self.events.key_lock(key):
            occurrence = self.events.observe(key, message)
            if occurrence.patch:
                patch = {
                    "count": occurrence.count,
                    "lastTimestamp": _timestamp(occurrence.last_timestamp),
                    "message": occurrence.message[:_EVENT_MESSAGE_LIMIT],
                }
                path = f"/api/v1/namespaces/{quote(ref.namespace, safe='')}/events/{quote(occurrence.name, safe='')}"
                try:
                    self._request(
                        "PATCH", path, f"counting an Event on {ref.namespace}/{ref.name}",
                        body=patch, content_type="application/merge-patch+json",
                    )  # fmt: skip
                    return
                except KubernetesError as exc:
                    if exc.status != 404:
                        raise
                    # Expired (Events live an hour by default) or deleted: post it anew, count kept.
            self._create_event(ref, key, occurrence)

    def _create_event(self, ref: ObjectRef, key: EventKey, occurrence: Occurrence) -> None:
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": occurrence.name, "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "type": key.type,
            "reason": key.reason,
            "message": occurrence.message[:_EVENT_MESSAGE_LIMIT],  # a combined message is a little longer
            "source": {"component": self.component},
            "firstTimestamp": _timestamp(occurrence.first_timestamp),
            "lastTimestamp": _timestamp(occurrence.last_timestamp),
            "count": occurrence.count,
            "reportingComponent": self.component,
            "reportingInstance": self.component,
        }
        path = f"/api/v1/namespaces/{quote(ref.namespace, safe='')}/events"
        self._request("POST", path, f"posting an Event on {ref.namespace}/{ref.name}", body=event)

    def read_secret(self, namespace: str, name: str) -> Mapping[str, bytes]:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets/{quote(name, safe='')}"
        secret = self._request("GET", path, f"reading Secret {namespace}/{name}")
        return {str(k): base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    # --- Workloads: any kind, as JSON -----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        answer: bool = True,
    ) -> Any:
        """One API call on a raw path; the answer as parsed JSON (``answer=False``: not parsed, None). Errors
        become `KubernetesError`.

        A body (JSON-ready: from the API or built here) is encoded here and sent on the client's connection pool
        with the client's authentication; the client's own sanitizer and call validation would walk every value
        of it first (a fifth of each status write's CPU in a profile at 4,000 monitors). Reads go through the
        client, which retries them on 429 and Retry-After."""
        if query:
            path = f"{path}?{urlencode(dict(query))}"
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            _method, url, headers, _body, _post = self.api.param_serialize(
                method=method, resource_path=path, header_params=headers, auth_settings=["BearerToken"]
            )
            if body is None:
                response = self.api.call_api(method, url, header_params=headers, _request_timeout=self.timeout)
                response.read()  # type: ignore[no-untyped-call]
                status, reason, data = int(response.status), response.reason or "", response.data or b""
            else:
                payload = json.dumps(body, separators=(",", ":")).encode()
                sent = self.api.rest_client.pool_manager.request(
                    method, url, body=payload, headers=headers, timeout=self._timeout, preload_content=False
                )
                try:
                    status, reason, data = int(sent.status), sent.reason or "", sent.read()
                finally:
                    sent.release_conn()
        except ApiException as exc:
            raise _error(what, exc) from exc
        except Exception as exc:
            raise KubernetesError(what, 0, str(exc)) from exc
        text = data.decode("utf-8", "replace")
        if not 200 <= status < 300:
            with contextlib.suppress(ValueError, AttributeError):
                reason = json.loads(text).get("message") or reason
            raise KubernetesError(what, status, reason)
        if not answer:
            return None
        return json.loads(text) if text else {}

    @property
    def server(self) -> str:
        """The API server's URL, as the configuration names it."""
        return str(self.api.configuration.host)

    def resource_name(self, kind: Kind) -> str:
        """The resource name the API server serves ``kind`` under (API discovery); `KubernetesError` with status
        404 when it does not serve that kind, e.g. before its CRD is installed."""
        return self._plural(kind)

    def _plural(self, kind: Kind) -> str:
        """The resource name of ``kind`` (e.g. ``deployments``), from API discovery for kinds not known here."""
        with self._plurals_lock:
            known = self._plurals.get(kind)
        if known is not None:
            return known
        base = f"/apis/{kind.api_version}" if kind.group else f"/api/{kind.version}"
        listing = self._request("GET", base, f"discovering the resources of {kind.api_version}")
        for resource in listing.get("resources") or []:
            if resource.get("kind") == kind.kind and "/" not in str(resource.get("name", "")):
                plural = str(resource["name"])
                with self._plurals_lock:
                    self._plurals[kind] = plural
                return plural
        raise KubernetesError(f"discovering {kind}", 404, f"{kind.api_version} has no kind {kind.kind}")

    def _path(self, kind: Kind, namespace: str, name: str = "", subresource: str = "") -> str:
        base = f"/apis/{kind.api_version}" if kind.group else f"/api/{kind.version}"
        path = f"{base}/namespaces/{quote(namespace, safe='')}/{self._plural(kind)}"
        if name:
            path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
        return path

    def get(self, kind: Kind, namespace: str, name: str, *, subresource: str = "") -> dict[str, Any]:
        what = f"reading {kind.kind} {namespace}/{name}" + (f"/{subresource}" if subresource else "")
        return dict(self._request("GET", self._path(kind, namespace, name, subresource), what))

    def list(self, kind: Kind, namespace: str, *, label_selector: str = "") -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        answer = self._request("GET", self._path(kind, namespace), f"listing {kind.kind} in {namespace}", query=query)
        return [dict(item) for item in answer.get("items") or []]

    def create(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = (body.get("metadata") or {}).get("name", "")
        what = f"creating {kind.kind} {namespace}/{name}"
        return dict(self._request("POST", self._path(kind, namespace), what, body=dict(body)))

    def replace(self, kind: Kind, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        what = f"replacing {kind.kind} {namespace}/{name}"
        return dict(self._request("PUT", self._path(kind, namespace, name), what, body=dict(body)))

    def patch(
        self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        what = f"patching {kind.kind} {namespace}/{name}" + (f"/{subresource}" if subresource else "")
        path = self._path(kind, namespace, name, subresource)
        return dict(self._request("PATCH", path, what, body=dict(patch), content_type="application/merge-patch+json"))

    def delete(self, kind: Kind, namespace: str, name: str, *, resource_version: str = "") -> None:
        """Delete an object; with ``resource_version`` only if it is still that version (409 otherwise)."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        self._request(
            "DELETE", self._path(kind, namespace, name), f"deleting {kind.kind} {namespace}/{name}", body=body
        )

    def whoami(self) -> str:
        if self._whoami is None:
            review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            answer = self._request(
                "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", "asking who the operator is", body=review
            )
            self._whoami = str(((answer.get("status") or {}).get("userInfo") or {}).get("username", ""))
        return self._whoami
