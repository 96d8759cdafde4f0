"""The images `make images` builds, run with podman the way Kubernetes would run them.

The sandbox's nodes are kwok's simulated nodes, which start no containers, so each image is run here with podman
under the settings of the manifest that deploys it, translated flag by flag: the user and group of the pod's
securityContext, a read-only root filesystem with only the manifest's volumes writable (its emptyDir at /tmp
as a tmpfs), every capability dropped, no privilege escalation. The host's network stands in for the pod's, so
the containers reach the loopback API server, Prometheus and model server, and Prometheus reaches them.

* The operator image, with the installed chart's Deployment (args, environment, security settings) and a token
  of the chart's ServiceAccount mounted where the kubelet mounts it, evaluates a monitor, writes its status and
  scales its target through the chart's RBAC (the same checks as tests/integration/test_helm_install.py, which
  runs the operator as a process).
* The sidecar image, with the container of examples/model-with-sidecar.yaml, in front of the example's real
  model server: the model's answers come back unchanged and a real Prometheus scrapes what the sidecar counted.

The images are built first (`modelmonitor images build`: cached layers, seconds when `make images` ran). The
tests skip only when podman itself cannot run on this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_helm_install import RELEASE, Release, release, the_operator_evaluates_and_acts

from modelmonitor_sandbox.devcluster.processes import free_port
from modelmonitor_sandbox.images.build import ULIMITS, build, image_names, podman_command, podman_problem
from support import Cluster, ExporterProcess, PrometheusProcess, http_get, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "model-with-sidecar.yaml"
FRAUD_MODEL = ROOT / "examples" / "fraud-model"
# Where the kubelet mounts a pod's ServiceAccount token, CA and namespace (client libraries look there).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

__all__ = ["release"]  # the chart installed by test_helm_install's fixture, used here as a fixture too


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    problem = podman_problem()
    if problem:
        pytest.skip(f"podman cannot run containers on this machine: {problem}")
    build(ROOT)
    return image_names(ROOT)


class Container:
    """`podman run` of an image in the foreground; its output goes to `log`."""

    def __init__(self, image: str, flags: list[str], args: list[str], log: Path) -> None:
        self.name = f"mm-test-{uuid.uuid4().hex[:10]}"
        self.log = log
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                podman_command("run", "--rm", "--name", self.name, "--pull=never", "--network=host", *ULIMITS,
                               *flags, image, *args),
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def running(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        subprocess.run(podman_command("stop", "--time=10", self.name), capture_output=True, timeout=60, check=False)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(podman_command("rm", "--force", self.name), capture_output=True, timeout=60, check=False)
            self.process.wait(timeout=30)


def security_flags(image: str, pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """podman flags for a pod's and a container's securityContext (the container's wins, as in Kubernetes)."""
    merged = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    user, group = merged.get("runAsUser"), merged.get("runAsGroup")
    if merged.get("runAsNonRoot"):
        # What the kubelet checks: a numeric user other than 0, from the pod or else from the image.
        effective = str(user) if user is not None else inspect_user(image).partition(":")[0]
        assert effective.isdigit() and int(effective) != 0, f"runAsNonRoot, but {image} runs as {effective!r}"
    flags = []
    if user is not None:
        flags += ["--user", f"{user}:{group}" if group is not None else str(user)]
    if merged.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]  # writable only where the manifest mounts volumes
    if merged.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    flags += [f"--cap-drop={cap}" for cap in (merged.get("capabilities") or {}).get("drop", [])]
    return flags


def inspect_user(image: str) -> str:
    found = subprocess.run(
        podman_command("image", "inspect", "--format", "{{.Config.User}}", image), capture_output=True, text=True
    )
    return found.stdout.strip()


def volume_flags(pod: dict[str, Any], container: dict[str, Any], config_maps: dict[str, Path]) -> list[str]:
    """podman flags for the container's volumeMounts: emptyDirs become tmpfs, ConfigMaps read-only binds of
    `config_maps[name]`. A volume of any other kind fails the test: it would not be what the manifest says."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    flags = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit", "64Mi").replace("Mi", "m")
            flags += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
        elif "configMap" in volume:
            flags += ["--volume", f"{config_maps[volume['configMap']['name']]}:{mount['mountPath']}:ro"]
        else:
            raise AssertionError(f"no podman translation for volume {volume}")
    return flags


def service_account_flags(cluster: Cluster, namespace: str, account: str, directory: Path) -> list[str]:
    """The token, CA and namespace files the kubelet projects into a pod, and the API server's address in the
    variables in-cluster clients read. The files are world-readable, as the kubelet writes them (mode 0644)."""
    directory.mkdir(mode=0o755)
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes((Path(cluster.state.root) / "pki" / "ca.crt").read_bytes())
    (directory / "namespace").write_text(namespace)
    for path in directory.iterdir():
        path.chmod(0o644)
    server = urllib.parse.urlsplit(cluster.state.server)
    return [
        "--volume", f"{directory}:{SERVICE_ACCOUNT_DIR}:ro",
        "--env", f"KUBERNETES_SERVICE_HOST={server.hostname}",
        "--env", f"KUBERNETES_SERVICE_PORT={server.port}",
    ]  # fmt: skip


def test_the_operator_image_runs_with_the_charts_settings_and_acts(
    cluster: Cluster, release: Release, images: dict[str, str], tmp_path: Path
) -> None:
    deployment = cluster.kubectl_json("get", "deployment", f"{RELEASE}-modelmonitor", "-n", release.namespace)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "operator"]
    # The chart's default image is exactly what `make images` builds.
    assert container["image"] == images["operator"]
    assert pod["automountServiceAccountToken"] is True
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # The pod listens on 0.0.0.0:8080; on this shared machine's network the container takes a free loopback port.
    metrics_port = free_port()
    env["MODELMONITOR_METRICS_ADDRESS"] = f"127.0.0.1:{metrics_port}"
    flags = [
        *security_flags(container["image"], pod, container),
        *volume_flags(pod, container, {}),
        *service_account_flags(cluster, release.namespace, pod["serviceAccountName"], tmp_path / "serviceaccount"),
        *(f"--env={name}={value}" for name, value in env.items()),
    ]
    assert "--read-only" in flags and "--cap-drop=ALL" in flags and "--user" in flags, flags

    exporter = ExporterProcess(tmp_path)
    target = f"image-{release.watched}"
    cluster.add_scrape_target(target, exporter.address, {"namespace": release.watched, "pod": "fraud-0"})
    operator = Container(container["image"], flags, container["args"], tmp_path / "operator.log")
    try:
        the_operator_evaluates_and_acts(
            release, exporter, metrics_port, running=operator.running, log=operator.log_text
        )
    finally:
        operator.stop()
        cluster.remove_scrape_target(target)
        exporter.stop()


def example_sidecar() -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod spec of examples/model-with-sidecar.yaml and its `modelmonitor` container."""
    (deployment,) = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "modelmonitor"]
    return pod, container


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[str]:
    """The example's fraud model (examples/fraud-model/server.py), a real KServe v1 server on a loopback port."""
    port = free_port()
    log = (tmp_path / "model.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(FRAUD_MODEL / "server.py"), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    wait_for("the model server", lambda: http_get(f"{url}/v1/models/fraud") is not None, timeout=30)
    yield url
    process.kill()
    process.wait()


def post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_sidecar_image_passes_answers_through_and_prometheus_scrapes_it(
    images: dict[str, str], model_server: str, tmp_path: Path
) -> None:
    # The profile the example mounts from its fraud-profile ConfigMap, built as docs/kind.md builds it.
    profiles = tmp_path / "profile"
    profiles.mkdir(mode=0o755)
    train = tmp_path / "train.csv"
    with train.open("w") as sink:
        subprocess.run([sys.executable, str(FRAUD_MODEL / "training_data.py")], stdout=sink, check=True, timeout=120)
    subprocess.run(
        [sys.executable, "-m", "modelmonitor", "profile", "build", str(train), "-o", str(profiles / "profile.json"),
         "--label", "label", "--prediction", "prediction", "--score", "score", "--group", "segment"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (profiles / "profile.json").chmod(0o644)

    pod, container = example_sidecar()
    assert container["image"] == images["sidecar"]
    port = free_port()
    # The example's arguments, with what the pod would resolve: the model's version from its label, and the
    # loopback ports this shared machine has free instead of 8081 and 8080.
    replaced = {"--listen": f"127.0.0.1:{port}", "--upstream": model_server, "--version": "v1"}
    args = [
        f"{arg.partition('=')[0]}={replaced[arg.partition('=')[0]]}" if arg.partition("=")[0] in replaced else arg
        for arg in container["args"]
    ]
    assert args[0] == "sidecar" and any(a.startswith("--upstream=") for a in args), args
    flags = [
        *security_flags(container["image"], pod, container),
        *volume_flags(pod, container, {"fraud-profile": profiles}),
    ]
    sidecar = Container(container["image"], flags, args, tmp_path / "sidecar.log")
    prometheus: PrometheusProcess | None = None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(
            "the sidecar's /healthz",
            lambda: http_get(f"{url}/healthz") or not sidecar.running(),
            timeout=60,
        )
        assert sidecar.running(), sidecar.log_text()[-3000:]
        prometheus = PrometheusProcess(tmp_path, [f"127.0.0.1:{port}"])

        # The model's own answers, byte for byte, through the sidecar: predictions and a refusal alike.
        calls = 40
        for i in range(calls):
            instances = [{"amount": 0.1 * i - 1, "velocity": 0.5, "account_age": 3.0, "distance": 0.2 * (i % 7)}] * 3
            body = json.dumps({"instances": instances}).encode()
            direct = post(f"{model_server}/v1/models/fraud:predict", body)
            proxied = post(f"{url}/v1/models/fraud:predict", body)
            assert direct[0] == 200 and proxied == direct, (direct, proxied)
        refused_direct = post(f"{model_server}/v1/models/fraud:predict", b"{not json")
        refused = post(f"{url}/v1/models/fraud:predict", b"{not json")
        assert 400 <= refused[0] < 500 and refused == refused_direct, (refused_direct, refused)

        def scalar(promql: str) -> float | None:
            query = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
            answer = json.loads(http_get(query) or b"{}")
            result = (answer.get("data") or {}).get("result") or []
            return float(result[0]["value"][1]) if result else None

        labels = 'model="fraud",version="v1"'
        wait_for(
            f"Prometheus to scrape {calls} answered predictions from the sidecar",
            lambda: scalar(f'sum(modelmonitor_requests_total{{{labels},code="2xx"}})') == calls,
            timeout=60,
        )
        wait_for(
            f"{calls * 3} rows of feature amount",
            lambda: scalar(f'modelmonitor_feature_value_bucket{{{labels},feature="amount",le="+Inf"}}') == calls * 3,
            timeout=30,
        )
        assert sidecar.running(), sidecar.log_text()[-3000:]
    finally:
        if prometheus is not None:
            prometheus.stop()
        sidecar.stop()
