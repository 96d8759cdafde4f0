"""How a monitor reaches its Prometheus: the Secret cache (one GET per Secret per TTL, rotation after the TTL)
and the client pool (equal settings share a client; a client nobody uses is closed, its PEM files gone).

The Secrets come from a fake reader (the one dependency of the module); the clients are the real
`PrometheusClient` unless a test needs to count closes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import pytest

from modelmonitor.adapters.connections import Connections, PrometheusConnectionError, SecretCache
from modelmonitor.adapters.kubernetes import KubernetesError
from modelmonitor.adapters.prometheus import PrometheusClient, PrometheusSettings, QueryResult
from modelmonitor.api import PrometheusConnection
from modelmonitor.settings import OperatorSettings

# Only written to a file by the client, never parsed in these tests.
CA = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"


class Secrets:
    """Secrets by (namespace, name), counting every read as the API server would see a GET."""

    def __init__(self, **secrets: dict[str, str]) -> None:
        self.data: dict[tuple[str, str], dict[str, bytes]] = {}
        for name, values in secrets.items():
            self.put("ml", name.replace("_", "-"), values)
        self.gets: list[tuple[str, str]] = []
        self.failure: KubernetesError | None = None

    def put(self, namespace: str, name: str, values: dict[str, str]) -> None:
        self.data[(namespace, name)] = {k: v.encode() for k, v in values.items()}

    def read_secret(self, namespace: str, name: str) -> Mapping[str, bytes]:
        self.gets.append((namespace, name))
        if self.failure is not None:
            raise self.failure
        if (namespace, name) not in self.data:
            raise KubernetesError(f"reading Secret {namespace}/{name}", 404, "Not Found")
        return dict(self.data[(namespace, name)])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingClient:
    """A client that answers nothing and counts its closes."""

    def __init__(self, settings: PrometheusSettings) -> None:
        self.settings = settings
        self.closed = 0

    def query(self, promql: str, *, at: datetime | None = None) -> QueryResult:
        return QueryResult(query=promql)

    def close(self) -> None:
        self.closed += 1


def connection(**spec: Any) -> PrometheusConnection:
    return PrometheusConnection.model_validate({"url": "https://prom.test:9090", **spec})


BEARER = {"auth": {"bearerTokenSecretRef": {"name": "prom-token"}}}
WITH_CA = {**BEARER, "tls": {"caSecretRef": {"name": "prom-ca"}}}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def secrets() -> Secrets:
    return Secrets(prom_token={"token": "first\n"}, prom_ca={"ca.crt": CA})


@pytest.fixture
def pool(secrets: Secrets, clock: Clock) -> Iterator[Connections]:
    connections = Connections(secrets, default_url=None, secret_ttl_seconds=60, clock=clock)
    yield connections
    connections.close()


# --- the Secret cache ------------------------------------------------------------------------------------------


def test_many_monitors_over_many_cycles_read_each_secret_once_per_ttl(
    pool: Connections, secrets: Secrets, clock: Clock
) -> None:
    for _cycle in range(10):  # ten 5 s cycles of 50 monitors: 500 resolutions within one TTL
        for index in range(50):
            pool.querier("ml", f"monitor-{index}", connection(**WITH_CA))
        clock.now += 5
    assert sorted(secrets.gets) == [("ml", "prom-ca"), ("ml", "prom-token")]

    clock.now += 10  # 60 s after the first read
    pool.querier("ml", "monitor-0", connection(**WITH_CA))
    pool.querier("ml", "monitor-1", connection(**WITH_CA))
    assert len(secrets.gets) == 4


def test_a_rotated_token_is_used_after_the_ttl_not_before(pool: Connections, secrets: Secrets, clock: Clock) -> None:
    first = pool.querier("ml", "fraud", connection(**BEARER))
    assert isinstance(first, PrometheusClient)
    assert first.connection.headers["Authorization"] == "Bearer first"  # the newline of `echo` is gone

    secrets.put("ml", "prom-token", {"token": "second"})
    clock.now += 59
    assert pool.querier("ml", "fraud", connection(**BEARER)) is first
    clock.now += 1
    rotated = pool.querier("ml", "fraud", connection(**BEARER))
    assert isinstance(rotated, PrometheusClient)
    assert rotated is not first
    assert rotated.connection.headers["Authorization"] == "Bearer second"


def test_secrets_are_per_namespace(pool: Connections, secrets: Secrets) -> None:
    secrets.put("other", "prom-token", {"token": "theirs"})
    ours = pool.querier("ml", "fraud", connection(**BEARER))
    theirs = pool.querier("other", "fraud", connection(**BEARER))
    assert isinstance(ours, PrometheusClient) and isinstance(theirs, PrometheusClient)
    assert ours.connection.headers["Authorization"] == "Bearer first"
    assert theirs.connection.headers["Authorization"] == "Bearer theirs"


def test_a_missing_secret_names_the_field_and_secret_and_is_read_once_per_ttl(
    pool: Connections, secrets: Secrets
) -> None:
    spec = connection(auth={"bearerTokenSecretRef": {"name": "absent"}})
    for index in range(20):
        with pytest.raises(PrometheusConnectionError) as raised:
            pool.querier("ml", f"monitor-{index}", spec)
    assert "spec.prometheus.auth.bearerTokenSecretRef: cannot read Secret ml/absent: " in str(raised.value)
    assert "404" in str(raised.value)
    assert secrets.gets == [("ml", "absent")]

    pool.retain([])  # every monitor naming it is deleted: the Secret is forgotten, and read anew if named again
    with pytest.raises(PrometheusConnectionError):
        pool.querier("ml", "new", spec)
    assert secrets.gets == [("ml", "absent")] * 2


def test_a_missing_key_names_the_secret_and_the_key(pool: Connections) -> None:
    spec = connection(auth={"basicAuthSecretRef": {"name": "prom-token", "usernameKey": "user"}})
    with pytest.raises(PrometheusConnectionError, match=r"basicAuthSecretRef: Secret ml/prom-token has no key 'user'"):
        pool.querier("ml", "fraud", spec)


def test_no_url_anywhere_is_an_error_naming_the_setting(pool: Connections) -> None:
    with pytest.raises(
        PrometheusConnectionError, match=r"spec\.prometheus\.url is not set.*MODELMONITOR_PROMETHEUS_URL"
    ):
        pool.querier("ml", "fraud", PrometheusConnection())


def test_a_passing_api_failure_keeps_the_last_credentials_but_a_deleted_secret_does_not(clock: Clock) -> None:
    secrets = Secrets(prom_token={"token": "first"})
    cache = SecretCache(secrets, 60, clock)
    assert cache.get("ml", "prom-token") == {"token": b"first"}

    secrets.failure = KubernetesError("reading Secret ml/prom-token", 0, "connection refused")
    clock.now += 60
    assert cache.get("ml", "prom-token") == {"token": b"first"}
    assert len(secrets.gets) == 2  # tried, and the failure is remembered for a TTL too
    assert cache.get("ml", "prom-token") == {"token": b"first"}
    assert len(secrets.gets) == 2

    secrets.failure = None
    del secrets.data[("ml", "prom-token")]
    clock.now += 60
    with pytest.raises(KubernetesError, match="404"):
        cache.get("ml", "prom-token")


def test_the_ttl_must_be_positive(secrets: Secrets) -> None:
    with pytest.raises(ValueError, match="secret ttl 0: expected seconds > 0"):
        SecretCache(secrets, 0)


# --- the client pool -------------------------------------------------------------------------------------------


def test_monitors_with_equal_settings_share_one_client(pool: Connections) -> None:
    clients = {id(pool.querier("ml", f"monitor-{i}", connection(**BEARER))) for i in range(5)}
    assert len(clients) == 1
    assert pool.open_clients == 1
    other = pool.querier("ml", "tenant-b", connection(**BEARER, headers={"X-Scope-OrgID": "b"}))
    assert id(other) not in clients
    assert pool.open_clients == 2


def test_a_rotated_secret_closes_the_old_client_and_removes_its_pem_files(
    pool: Connections, secrets: Secrets, clock: Clock
) -> None:
    old = pool.querier("ml", "fraud", connection(**WITH_CA))
    assert isinstance(old, PrometheusClient)
    tempdir = old._tls._tempdir
    assert tempdir is not None and os.path.isfile(os.path.join(tempdir, "ca.pem"))

    secrets.put("ml", "prom-token", {"token": "second"})
    clock.now += 60
    new = pool.querier("ml", "fraud", connection(**WITH_CA))
    assert isinstance(new, PrometheusClient) and new is not old
    assert not os.path.exists(tempdir)
    assert new._tls._tempdir is not None and os.path.isfile(os.path.join(new._tls._tempdir, "ca.pem"))
    assert pool.open_clients == 1


def test_a_client_still_used_by_another_monitor_stays_open(secrets: Secrets, clock: Clock) -> None:
    made: list[CountingClient] = []

    def factory(settings: PrometheusSettings) -> CountingClient:
        made.append(CountingClient(settings))
        return made[-1]

    pool = Connections(secrets, default_url="http://prom.test", secret_ttl_seconds=60, factory=factory, clock=clock)
    pool.querier("ml", "a", PrometheusConnection())
    pool.querier("ml", "b", PrometheusConnection())
    pool.querier("ml", "a", PrometheusConnection(timeout="3s"))  # a moves to a client of its own
    assert [c.closed for c in made] == [0, 0]
    pool.querier("ml", "b", PrometheusConnection(timeout="3s"))  # b follows: the first client has no user left
    assert [c.closed for c in made] == [1, 0]
    assert pool.open_clients == 1
    pool.close()
    assert [c.closed for c in made] == [1, 1]


def test_deleted_monitors_release_their_clients_and_secrets(pool: Connections, secrets: Secrets) -> None:
    fraud = pool.querier("ml", "fraud", connection(**WITH_CA))
    shared = pool.querier("ml", "churn", connection(**BEARER))
    pool.querier("ml", "recs", connection(**BEARER))
    assert isinstance(fraud, PrometheusClient)
    tempdir = fraud._tls._tempdir
    assert tempdir is not None

    pool.retain([("ml", "churn"), ("ml", "recs")])  # fraud was deleted
    assert not os.path.exists(tempdir)
    assert pool.open_clients == 1
    # The CA Secret is no longer named by anyone: it is forgotten, and read again when named again.
    gets = len(secrets.gets)
    pool.querier("ml", "fraud", connection(**WITH_CA))
    assert secrets.gets[gets:] == [("ml", "prom-ca")]
    assert pool.querier("ml", "recs", connection(**BEARER)) is shared


def test_a_monitor_whose_secret_disappears_gives_its_client_back(
    pool: Connections, secrets: Secrets, clock: Clock
) -> None:
    old = pool.querier("ml", "fraud", connection(**WITH_CA))
    assert isinstance(old, PrometheusClient)
    tempdir = old._tls._tempdir
    del secrets.data[("ml", "prom-token")]
    clock.now += 60
    with pytest.raises(PrometheusConnectionError, match="Secret ml/prom-token"):
        pool.querier("ml", "fraud", connection(**WITH_CA))
    assert pool.open_clients == 0
    assert tempdir is not None and not os.path.exists(tempdir)


def test_close_closes_every_client(pool: Connections) -> None:
    clients = [pool.querier("ml", f"m{i}", connection(**WITH_CA, timeout=f"{i + 1}s")) for i in range(3)]
    tempdirs = [c._tls._tempdir for c in clients if isinstance(c, PrometheusClient)]
    assert len(tempdirs) == 3 and all(d is not None and os.path.isdir(d) for d in tempdirs)
    pool.close()
    assert pool.open_clients == 0
    assert not any(d is not None and os.path.exists(d) for d in tempdirs)


def test_the_ttl_setting_is_read_from_its_variable() -> None:
    assert OperatorSettings().secret_ttl_seconds == 60
    assert OperatorSettings.from_env({"MODELMONITOR_SECRET_TTL_SECONDS": "15"}).secret_ttl_seconds == 15
    with pytest.raises(ValueError, match="MODELMONITOR_SECRET_TTL_SECONDS='0': expected a number of seconds > 0"):
        OperatorSettings.from_env({"MODELMONITOR_SECRET_TTL_SECONDS": "0"})
