"""The local sandbox: a real Kubernetes control plane, kwok nodes, Prometheus and Alertmanager on 127.0.0.1.

`up` is idempotent (a healthy running sandbox is reused), repairs a stale one (processes of a killed run are
found by the cluster folder in their command line and stopped) and leaves a clean state when a component fails
to start. `down` stops every process it started and deletes the cluster folder; the binary cache stays.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modelmonitor_sandbox.devcluster import pki as pkimod
from modelmonitor_sandbox.devcluster import processes as proc
from modelmonitor_sandbox.devcluster import versions
from modelmonitor_sandbox.devcluster.build import Binaries, ensure_binaries
from modelmonitor_sandbox.devcluster.paths import cluster_dir
from modelmonitor_sandbox.devcluster.processes import SandboxError

Progress = Callable[[str], None]

COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "prometheus",
    "alertmanager",
)
SERVICE_CIDR = "10.96.0.0/16"
NODE_TEMPLATE = """apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: {name}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {{cpu: "32", memory: 256Gi, pods: "110"}}
  capacity: {{cpu: "32", memory: 256Gi, pods: "110"}}
"""


def _progress(message: str) -> None:
    print(f"[modelmonitor cluster] {message}", file=sys.stderr, flush=True)


@dataclass
class ClusterState:
    """What a running sandbox is: written to `state.json` as each component starts."""

    root: str
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    ready_seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['alertmanager']}"

    @property
    def kubeconfig(self) -> Path:
        return Path(self.root) / "kubeconfig"

    @property
    def log_dir(self) -> Path:
        return Path(self.root) / "logs"

    @property
    def targets_dir(self) -> Path:
        return Path(self.root) / "prometheus" / "targets"

    def env(self) -> dict[str, str]:
        """The environment a shell, the operator or a test needs to talk to this sandbox."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "MODELMONITOR_PROMETHEUS_URL": self.prometheus_url,
            "MODELMONITOR_ALERTMANAGER_URL": self.alertmanager_url,
            "MODELMONITOR_SCRAPE_TARGETS_DIR": str(self.targets_dir),
        }


def failed_logs_dir(root: Path) -> Path:
    """Where the logs of a failed start are kept (the cluster folder itself is removed)."""
    return root.with_name(root.name + "-failed-logs")


def _state_file(root: Path) -> Path:
    return root / "state.json"


def load_state(root: Path | None = None) -> ClusterState | None:
    root = root or cluster_dir()
    try:
        data = json.loads(_state_file(root).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return ClusterState(**data)


def _save_state(state: ClusterState) -> None:
    path = _state_file(Path(state.root))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def _admin_ssl(root: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root / "pki" / "ca.crt"))
    context.load_cert_chain(str(root / "pki" / "admin.crt"), str(root / "pki" / "admin.key"))
    return context


def _insecure_ssl() -> ssl.SSLContext:
    # controller-manager and scheduler serve /healthz on a self-signed certificate they generate themselves.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    rss_bytes: int
    endpoint: str
    log: Path


def status(root: Path | None = None) -> list[ComponentStatus]:
    """Each component of the recorded sandbox: alive or not, its memory, its endpoint and its log."""
    state = load_state(root)
    if state is None:
        return []
    endpoints = {
        "etcd": f"http://127.0.0.1:{state.ports.get('etcd', 0)}",
        "kube-apiserver": state.server if "kube-apiserver" in state.ports else "",
        "kube-controller-manager": f"https://127.0.0.1:{state.ports.get('kube-controller-manager', 0)}",
        "kube-scheduler": f"https://127.0.0.1:{state.ports.get('kube-scheduler', 0)}",
        "kwok": f"http://127.0.0.1:{state.ports.get('kwok', 0)}",
        "prometheus": state.prometheus_url if "prometheus" in state.ports else "",
        "alertmanager": state.alertmanager_url if "alertmanager" in state.ports else "",
    }
    result = []
    for name in COMPONENTS:
        pid = state.pids.get(name)
        running = pid is not None and proc.alive(pid)
        result.append(
            ComponentStatus(
                name,
                pid,
                running,
                proc.rss_bytes(pid) if pid and running else 0,
                endpoints[name],
                state.log_dir / f"{name}.log",
            )
        )
    return result


def is_healthy(state: ClusterState) -> bool:
    root = Path(state.root)
    if any(not proc.alive(state.pids.get(n, -1)) for n in COMPONENTS):
        return False
    return proc.http_ok(f"{state.server}/readyz", _admin_ssl(root)) and proc.http_ok(f"{state.prometheus_url}/-/ready")


def down(root: Path | None = None, progress: Progress = _progress) -> list[str]:
    """Stop every process of the sandbox (recorded or left over by a killed run) and delete its folder."""
    root = root or cluster_dir()
    state = load_state(root)
    stopped = []
    if state is not None:
        for name in reversed(COMPONENTS):
            pid = state.pids.get(name)
            if pid and proc.alive(pid) and str(root) in proc.cmdline(pid):
                proc.stop(pid)
                stopped.append(name)
    # Leftovers: a run killed before it recorded a pid still names the cluster folder in its flags.
    for pid in proc.pids_mentioning(str(root)):
        proc.stop(pid)
        stopped.append(f"pid {pid}")
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
    if stopped:
        progress(f"stopped {', '.join(stopped)}; removed {root}")
    return stopped


class _Starter:
    """Starts components in order, recording each pid at once so nothing is ever left untracked."""

    def __init__(self, state: ClusterState, progress: Progress) -> None:
        self.state = state
        self.root = Path(state.root)
        self.progress = progress
        self.watched: dict[str, tuple[subprocess.Popen[bytes] | int, Path]] = {}

    def launch(self, name: str, argv: list[str]) -> None:
        log = self.state.log_dir / f"{name}.log"
        popen = proc.start(name, argv, log, self.root)
        self.state.pids[name] = popen.pid
        _save_state(self.state)
        self.watched[name] = (popen, log)

    def wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        seconds = proc.wait_until(what, ready, timeout, self.watched)
        self.progress(f"{what} in {seconds:.1f} s")


def _ports(requested: dict[str, int]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for name in (*COMPONENTS, "etcd-peer"):
        port = requested.get(name) or 0
        if port:
            if proc.port_in_use(port):
                raise SandboxError(
                    f"port {port} requested for {name} is already in use on 127.0.0.1; free it or pick another "
                    f"(modelmonitor cluster up --{name}-port N), or omit the option to choose a free port."
                )
        else:
            while True:
                port = proc.free_port()
                if port not in ports.values():
                    break
        ports[name] = port
    return ports


def _write_prometheus_config(state: ClusterState, scrape_interval: str) -> Path:
    directory = Path(state.root) / "prometheus"
    state.targets_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{state.ports['alertmanager']}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": "modelmonitor",
                # Targets come and go at run time (one file per target, see targets.py); inotify picks them up.
                "file_sd_configs": [{"files": [str(state.targets_dir / "*.json")], "refresh_interval": "5s"}],
            },
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{state.ports['prometheus']}"]}],
            },
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def _write_alertmanager_config(state: ClusterState) -> Path:
    directory = Path(state.root) / "alertmanager"
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "route": {"receiver": "sandbox", "group_wait": "1s", "group_interval": "5s", "repeat_interval": "1h"},
        "receivers": [{"name": "sandbox"}],
    }
    path = directory / "alertmanager.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


def kubectl(state: ClusterState, binaries: Binaries, *args: str, input: str | None = None) -> str:
    result = subprocess.run(
        [str(binaries.kubectl), f"--kubeconfig={state.kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise SandboxError(f"kubectl {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def up(
    *,
    nodes: int = 2,
    scrape_interval: str = "2s",
    ports: dict[str, int] | None = None,
    root: Path | None = None,
    progress: Progress = _progress,
    timeout: float = 180.0,
) -> ClusterState:
    """Start the sandbox, or return the running one. Fails with a clean state and a log excerpt."""
    root = root or cluster_dir()
    existing = load_state(root)
    if existing is not None:
        if is_healthy(existing):
            progress(f"reusing the running sandbox ({existing.server}, folder {root})")
            return existing
        progress(f"found a stale sandbox in {root} (a component is not running); cleaning it up")
        down(root, progress)
    elif root.exists() or proc.pids_mentioning(str(root)):
        progress(f"found leftovers of an unrecorded run in {root}; cleaning them up")
        down(root, progress)

    chosen_ports = _ports(ports or {})  # before anything is written: a busy port leaves no trace
    binaries = ensure_binaries(progress)
    started = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    state = ClusterState(
        root=str(root),
        ports=chosen_ports,
        started_at=time.time(),
        versions={"kubernetes": versions.KUBERNETES, "etcd": versions.ETCD, "kwok": versions.KWOK},
    )
    state.log_dir.mkdir(parents=True, exist_ok=True)
    _save_state(state)
    try:
        _start_all(state, binaries, nodes, scrape_interval, progress, timeout)
    except BaseException as exc:
        # The cluster folder goes away with the failed start; its logs are kept beside it for diagnosis.
        failed_logs = failed_logs_dir(root)
        shutil.rmtree(failed_logs, ignore_errors=True)
        shutil.copytree(state.log_dir, failed_logs, dirs_exist_ok=True)
        progress(f"start failed; stopped what was started; logs kept in {failed_logs}")
        down(root, lambda _m: None)
        if isinstance(exc, SandboxError):
            raise SandboxError(str(exc).replace(str(state.log_dir), str(failed_logs))) from exc
        raise
    state.ready_seconds = round(time.monotonic() - started, 1)
    _save_state(state)
    progress(f"sandbox ready in {state.ready_seconds} s; run `eval $(modelmonitor cluster env)` to use it")
    return state


def _start_all(
    state: ClusterState,
    binaries: Binaries,
    nodes: int,
    scrape_interval: str,
    progress: Progress,
    timeout: float,
) -> None:
    root = Path(state.root)
    p = state.ports
    keys = pkimod.generate(root / "pki")
    state.kubeconfig.write_text(pkimod.kubeconfig(state.server, keys.ca_cert, keys.admin))
    for identity, file_name in (
        (keys.controller_manager, "controller-manager"),
        (keys.scheduler, "scheduler"),
    ):
        (root / f"{file_name}.kubeconfig").write_text(pkimod.kubeconfig(state.server, keys.ca_cert, identity))
    starter = _Starter(state, progress)

    etcd_url = f"http://127.0.0.1:{p['etcd']}"
    peer_url = f"http://127.0.0.1:{p['etcd-peer']}"
    starter.launch(
        "etcd",
        [
            str(binaries.etcd),
            "--name=sandbox",
            f"--data-dir={root / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=sandbox={peer_url}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=4294967296",
            "--auto-compaction-retention=1",
            "--log-level=warn",
        ],
    )
    starter.wait("etcd healthy", lambda: proc.http_ok(f"{etcd_url}/health"), timeout)

    starter.launch(
        "kube-apiserver",
        [
            str(binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['kube-apiserver']}",
            # No default route in a sandbox: advertise loopback and do not reconcile the kubernetes endpoint.
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={keys.serving_cert}",
            f"--tls-private-key-file={keys.serving_key}",
            f"--client-ca-file={keys.ca_cert}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={keys.service_account_pub}",
            f"--service-account-signing-key-file={keys.service_account_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
            "--enable-priority-and-fairness=false",
        ],
    )
    admin = _admin_ssl(root)
    starter.wait("kube-apiserver ready", lambda: proc.http_ok(f"{state.server}/readyz", admin), timeout)

    starter.launch(
        "kube-controller-manager",
        [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={root / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={root / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={root / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['kube-controller-manager']}",
            "--leader-elect=false",
            f"--root-ca-file={keys.ca_cert}",
            f"--service-account-private-key-file={keys.service_account_key}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cert-dir={root / 'controller-manager-certs'}",
            # kwok nodes heartbeat through leases; the defaults are fine, but react quickly in tests.
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
        ],
    )
    starter.launch(
        "kube-scheduler",
        [
            str(binaries.kube_scheduler),
            f"--kubeconfig={root / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={root / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={root / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['kube-scheduler']}",
            "--leader-elect=false",
            f"--cert-dir={root / 'scheduler-certs'}",
        ],
    )
    starter.launch(
        "kwok",
        [
            str(binaries.kwok),
            f"--kubeconfig={state.kubeconfig}",
            f"--config={binaries.kwok_stages}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{p['kwok']}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--tls-cert-file={keys.serving_cert}",
            f"--tls-private-key-file={keys.serving_key}",
        ],
    )
    insecure = _insecure_ssl()
    starter.wait(
        "controller-manager and scheduler healthy",
        lambda: (
            proc.http_ok(f"https://127.0.0.1:{p['kube-controller-manager']}/healthz", insecure)
            and proc.http_ok(f"https://127.0.0.1:{p['kube-scheduler']}/healthz", insecure)
        ),
        timeout,
    )

    am_config = _write_alertmanager_config(state)
    starter.launch(
        "alertmanager",
        [
            str(binaries.alertmanager),
            f"--config.file={am_config}",
            f"--storage.path={root / 'alertmanager' / 'data'}",
            f"--web.listen-address=127.0.0.1:{p['alertmanager']}",
            "--cluster.listen-address=",
        ],
    )
    prom_config = _write_prometheus_config(state, scrape_interval)
    starter.launch(
        "prometheus",
        [
            str(binaries.prometheus),
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={root / 'prometheus' / 'data'}",
            f"--web.listen-address=127.0.0.1:{p['prometheus']}",
            "--web.enable-lifecycle",
            "--web.enable-admin-api",
            "--storage.tsdb.retention.time=1d",
        ],
    )

    manifest = "---\n".join(NODE_TEMPLATE.format(name=f"kwok-node-{i}") for i in range(nodes))
    kubectl(state, binaries, "apply", "-f", "-", input=manifest)

    def nodes_ready() -> bool:
        out = kubectl(
            state,
            binaries,
            "get",
            "nodes",
            "-o",
            'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        )
        return out.split().count("True") >= nodes

    starter.wait(f"{nodes} kwok nodes Ready", nodes_ready, timeout)
    starter.wait(
        "Prometheus and Alertmanager ready",
        lambda: proc.http_ok(f"{state.prometheus_url}/-/ready") and proc.http_ok(f"{state.alertmanager_url}/-/ready"),
        timeout,
    )
