"""`modelmonitor demo`: three closed loops on the local sandbox, narrated.

The demo plays the world and the operator acts:

- **the world** (this module): clients sending real requests (`traffic`), a kubelet that runs a real model
  server and a real sidecar (proxy mode) per Running pod and registers the sidecar with Prometheus (`fleet`), a
  model registry (a real MLflow tracking server, `world.Registry`), a retraining pipeline that does the work of
  the retraining Job's pod and registers its version (`trainer`), and, once, a person who releases a model
  version by hand (pins it in the Deployment and moves the ``champion`` alias to it);
- **the operator** (`modelmonitor run`, a separate process running as its own least-privilege ServiceAccount):
  measures through Prometheus, decides, and makes every change to the cluster that fixes things: the retraining
  Job, the promotion of its version, the rollback, the scale steps, and the alias moves in the registry.

Story: (1) the inputs drift -> the drift policy fires -> a retraining Job -> its version is promoted -> the
drift clears; (2) a worse version is rolled out by hand -> accuracy from late labels drops -> rollback to the
last-known-good revision; (3) the load doubles -> latency p95 breaches -> scale up -> latency recovers. It ends
with a timeline PNG and a summary table (and the same summary as JSON).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from kubernetes import config as kube_config

from modelmonitor.adapters.kubernetes import KubernetesClient
from modelmonitor.api.crd import render_crd_yaml
from modelmonitor.mlflowrest import PROFILE_TAG
from modelmonitor.promql import quote
from modelmonitor.rbac import render as render_rbac
from modelmonitor_sandbox.demo import manifests, prometheus
from modelmonitor_sandbox.demo.fleet import Capacity, Fleet
from modelmonitor_sandbox.demo.manifests import (
    ACCURACY_POLICY,
    DEPLOYMENT,
    DRIFT_POLICY,
    LATENCY_POLICY,
    MONITOR,
    TRAINER_ACCOUNT,
    Pacing,
)
from modelmonitor_sandbox.demo.observe import Observation, Observer, Printer, StoryTimeout
from modelmonitor_sandbox.demo.timeline import Loop, epoch, render, summary_table
from modelmonitor_sandbox.demo.traffic import Endpoints, Traffic, Warehouse
from modelmonitor_sandbox.demo.trainer import Trainer
from modelmonitor_sandbox.demo.world import AFTER, ALIAS, BEFORE, REGISTERED_MODEL, Published, Registry, fit, sample
from modelmonitor_sandbox.devcluster import cluster as sandbox
from modelmonitor_sandbox.devcluster.build import kubectl_binary
from modelmonitor_sandbox.devcluster.mlflow_server import MlflowRest, MlflowServer
from modelmonitor_sandbox.devcluster.processes import SandboxError, free_port
from modelmonitor_sandbox.devcluster.redis_server import RedisServer

DEFAULT_NAMESPACE = "modelmonitor-demo"
OPERATOR_NAMESPACE = "modelmonitor-system"
OPERATOR_ACCOUNT = "modelmonitor"
START_REPLICAS = 2


class Kubectl:
    """The real kubectl against a kubeconfig; raises with kubectl's message on failure."""

    def __init__(self, kubeconfig: Path) -> None:
        self.argv = [str(kubectl_binary()), f"--kubeconfig={kubeconfig}"]

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run([*self.argv, *args], input=input, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise SandboxError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout


def _wait(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(200 <= response.status < 300)
    except OSError:
        return False


def _client(kubeconfig: Path) -> KubernetesClient:
    api = kube_config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return KubernetesClient(api, component="demo")


@dataclass
class Demo:
    """Everything the story works with."""

    pacing: Pacing
    namespace: str
    output: Path
    printer: Printer
    state: sandbox.ClusterState
    kubectl: Kubectl
    registry: Registry
    endpoints: Endpoints = field(default_factory=Endpoints)
    warehouse: Warehouse = field(default_factory=Warehouse)
    world: list[tuple[float, str]] = field(default_factory=list)
    fleet: Fleet | None = None
    traffic: Traffic | None = None
    trainer: Trainer | None = None
    observer: Observer | None = None

    @property
    def watch(self) -> Observer:
        assert self.observer is not None
        return self.observer

    def mark(self, label: str) -> float:
        at = time.time()
        self.world.append((at, label))
        return at

    def show(self, *args: str) -> None:
        """Run a read-only kubectl command and print it with its output."""
        self.printer.line("$ kubectl " + " ".join(args))
        self.printer.block("\n".join("      " + row for row in self.kubectl(*args, check=False).rstrip().splitlines()))


# --- setup ------------------------------------------------------------------------------------------------------


def operator_kubeconfig(demo: Demo, directory: Path) -> Path:
    """The operator's own identity: its ServiceAccount and ClusterRole (from `modelmonitor.rbac`) bound in the
    demo's namespace only, and a kubeconfig with a token of that account (no admin certificate)."""
    kubectl, ns = demo.kubectl, demo.namespace
    if not kubectl("get", "namespace", OPERATOR_NAMESPACE, check=False):
        kubectl("create", "namespace", OPERATOR_NAMESPACE)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(render_rbac(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, watch=[ns])))
    who = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
    _wait(
        "the operator's RoleBinding to take effect",
        lambda: kubectl("auth", "can-i", "create", "jobs", "-n", ns, f"--as={who}", check=False).strip() == "yes",
    )
    token = kubectl("create", "token", OPERATOR_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=2h").strip()
    path = directory / "operator.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "sandbox",
                        "cluster": {
                            "server": demo.state.server,
                            "certificate-authority": str(Path(demo.state.root) / "pki" / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": who, "user": {"token": token}}],
                # The ServiceAccount's namespace, as in its pod: where the operator keeps its replica's Lease.
                "contexts": [
                    {
                        "name": "operator",
                        "context": {"cluster": "sandbox", "user": who, "namespace": OPERATOR_NAMESPACE},
                    }
                ],
                "current-context": "operator",
            }
        )
    )
    path.chmod(0o600)
    return path


@contextmanager
def operator_process(demo: Demo, kubeconfig: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`modelmonitor run` as a real process, authenticated as its ServiceAccount."""
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "MODELMONITOR_PROMETHEUS_URL": demo.state.prometheus_url,
        "MODELMONITOR_METRICS_ADDRESS": f"127.0.0.1:{port}",
    }
    log = (demo.output / "logs" / "operator.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "modelmonitor", "run", "--namespace", demo.namespace],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait(
            "the operator's /healthz",
            lambda: _http_ok(f"http://127.0.0.1:{port}/healthz") or process.poll() is not None,
        )
        if process.poll() is not None:
            raise SandboxError(f"the operator exited with code {process.returncode}; see {log.name}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def publish_first_version(demo: Demo, rng: np.random.Generator) -> Published:
    """v1: fitted on the world before the drift; its profile from held-out transactions of that world. Registered,
    and made champion: the version in production."""
    model = fit(sample(rng, 5000, BEFORE), "v1", trained_on="5000 transactions of the world before")
    holdout = sample(rng, 5000, BEFORE)
    accuracy = round(model.accuracy(holdout), 4)
    v1 = demo.registry.publish(replace(model, holdout_accuracy=accuracy), holdout)
    demo.registry.mlflow.set_alias(REGISTERED_MODEL, ALIAS, v1.number)
    demo.printer.line(
        f"registry: v1 (holdout accuracy {accuracy}) registered as version {v1.number} of "
        f"{REGISTERED_MODEL} at {demo.registry.mlflow.url}, source {v1.source}, with its profile; {ALIAS} -> v1"
    )
    return v1


def setup(demo: Demo, stack: ExitStack, rng: np.random.Generator) -> None:
    p, kubectl, ns = demo.printer, demo.kubectl, demo.namespace
    p.step("The ModelMonitor CRD, a fresh namespace, and the identities: the operator's and the trainer's")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=render_crd_yaml())
    kubectl("wait", "--for=condition=Established", "crd/modelmonitors.modelmonitor.dev", "--timeout=60s")
    kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=180s")
    kubectl("create", "namespace", ns)
    _wait(
        "the namespace's default ServiceAccount", lambda: bool(kubectl("get", "sa", "default", "-n", ns, check=False))
    )
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests.trainer_account(ns)))
    secrets = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelmonitor-demo-")))
    operator_config = operator_kubeconfig(demo, secrets)
    p.line(
        f"operator: ServiceAccount {OPERATOR_NAMESPACE}/{OPERATOR_ACCOUNT}, ClusterRole modelmonitor-operator bound "
        f"in {ns} only; trainer: ServiceAccount {ns}/{TRAINER_ACCOUNT} (no permission in the cluster: it reports "
        "to the registry)"
    )

    p.step("Model v1: fitted on the world as it was, registered in MLflow with its reference profile")
    if isinstance(demo.registry.mlflow, MlflowServer):
        p.line(f"registry: waiting for the MLflow tracking server at {demo.registry.mlflow.url} (sqlite)")
        demo.registry.mlflow.wait_ready()
    demo.registry.mlflow.delete_model(REGISTERED_MODEL)  # what an earlier run registered
    v1 = publish_first_version(demo, rng)

    p.step(f"Deploying {DEPLOYMENT} ({START_REPLICAS} replicas, MODEL_URI={v1.source}) on the kwok nodes")
    kubectl("apply", "-f", "-", input=json.dumps(manifests.deployment(ns, v1.source, START_REPLICAS, demo.pacing)))
    # Not `kubectl rollout status`: the pods count as available only minReadySeconds after Running.
    _wait(
        f"{START_REPLICAS} Running pods",
        lambda: (
            kubectl(
                "get",
                "pods",
                "-n",
                ns,
                "-l",
                f"app={DEPLOYMENT}",
                "--field-selector=status.phase=Running",
                "-o",
                "name",
            ).count("pod/")
            >= START_REPLICAS
        ),
        timeout=120,
    )
    demo.show("get", "pods", "-n", ns, "-o", "wide")

    p.step("The fleet starts a model server and a sidecar (proxy mode) per Running pod; clients start calling")
    # One Redis shared by the sidecars: a label joins on whichever replica the Service sends it to.
    label_store = RedisServer(demo.output / "logs" / "redis", durable=False).start()
    stack.callback(label_store.stop)
    fleet = Fleet(
        _client(demo.state.kubeconfig), ns, f"app={DEPLOYMENT}", demo.registry, demo.endpoints,
        demo.state.targets_dir, demo.state.prometheus_url, demo.output / "logs", p.line, Capacity(),
        label_store=label_store.url,
    )  # fmt: skip
    fleet.start()
    stack.callback(fleet.stop)
    demo.fleet = fleet
    _wait("a serving replica per pod", lambda: sum(fleet.serving().values()) >= START_REPLICAS, timeout=90)
    traffic = Traffic(demo.endpoints, demo.warehouse, rate=demo.pacing.baseline_rate, era=BEFORE)
    traffic.start()
    stack.callback(traffic.stop)
    demo.traffic = traffic
    p.line(
        f"traffic: about {demo.pacing.baseline_rate:.0f} requests/s of 2-8 transactions each, spread over the "
        f"sidecars; the truth about each transaction is posted {traffic.label_delay:.0f} s later to /v1/labels of "
        "any sidecar (they share a Redis label store)"
    )
    capacity = Capacity()
    per_request = 1 / capacity.requests_per_second
    p.line(
        f"each model server works one request at a time, about {per_request * 1000:.0f} ms each (about "
        f"{1 / per_request:.0f} requests/s per replica; more wait in its queue, over {capacity.max_queue} waiting "
        "it answers 503)"
    )

    trainer = Trainer(
        _client(demo.state.kubeconfig), ns, MONITOR, TRAINER_ACCOUNT, demo.registry, demo.warehouse,
        p.line, demo.pacing.train_rows, rng,
    )  # fmt: skip
    trainer.start()
    stack.callback(trainer.stop)
    demo.trainer = trainer

    labeled = f"modelmonitor_labeled_predictions_total{{namespace={quote(ns)}}}"
    _wait(
        "Prometheus to scrape the first labeled predictions",
        lambda: bool(prometheus.query(demo.state.prometheus_url, f"count(increase({labeled}[10s]) > 0)")),
        timeout=60,
    )

    p.step("The operator starts (a real process, as its own ServiceAccount) and the ModelMonitor is applied")
    stack.enter_context(operator_process(demo, operator_config))
    spec = manifests.monitor(ns, demo.pacing, demo.registry.mlflow.url)
    kubectl("apply", "-f", "-", input=json.dumps(spec))
    p.block("\n".join("      " + row for row in yaml.safe_dump(spec["spec"], sort_keys=False).splitlines()))
    demo.observer = Observer(
        _client(demo.state.kubeconfig), kubectl, p, ns, MONITOR, DEPLOYMENT, fleet, traffic, demo.registry.name,
        progress_every=10.0,
    )  # fmt: skip


# --- the stories ------------------------------------------------------------------------------------------------


def _record(observation: Observation, action: str, *results: str) -> dict[str, Any] | None:
    return next((r for r in reversed(observation.records(action)) if r.get("result") in results), None)


def _failed(action: str, after: float) -> Callable[[Observation], str | None]:
    def check(observation: Observation) -> str | None:
        record = _record(observation, action, "Failed")
        at = epoch(str(record.get("at", ""))) if record else None
        return f"the {action} action failed: {record.get('reason')}" if record and at and at >= after - 1 else None

    return check


def _fired_at(observation: Observation, policy: str) -> float:
    view = observation.policies[policy]
    return epoch(view.since) or observation.at


def _alias_moved(demo: Demo, loop: Loop, event: str, moved_from: Published, to: Published) -> None:
    """Wait for the operator to move the alias to ``to``: a ``Promoted`` or ``RolledBack`` entry of ``to`` in
    ``status.registry.history`` and the alias on it (as the operator read it from MLflow); record the move at the
    entry's time."""

    def entry(observation: Observation) -> dict[str, Any] | None:
        history = observation.registry.get("history") or []
        return next((e for e in history if e.get("event") == event and e.get("version") == to.number), None)

    what = f"the operator to move {ALIAS} from {moved_from.label} to {to.label} ({event})"
    moved = demo.watch.until(
        what,
        lambda o: entry(o) is not None and o.registry.get("aliasVersion") == to.number,
        demo.pacing.step_timeout,
    )
    at = epoch(str((entry(moved) or {}).get("at", ""))) or moved.at
    loop.registry.append((at, f"{ALIAS}: {moved_from.label} -> {to.label} ({event}, by the operator)"))
    demo.show("get", "mm", MONITOR, "-n", demo.namespace, "-o", "wide")


def _served(demo: Demo, observation: Observation) -> Published:
    """The registered version the Deployment pins."""
    found = demo.registry.find(source=observation.model_uri)
    if found is None:
        raise StoryTimeout(f"the Deployment pins {observation.model_uri or 'no MODEL_URI'}, no registered version")
    return found


def _all_serving(observation: Observation, version: str) -> bool:
    return observation.serving == {version: observation.replicas} and observation.replicas > 0


def baseline(demo: Demo) -> None:
    p, watch = demo.printer, demo.watch
    p.step("Healthy traffic. Every policy OK; after the settle period v1 becomes the last-known-good revision")
    watch.hold(demo.pacing.baseline_seconds)
    watch.until(
        f"every policy OK, and v1 last-known-good (settlePeriod {demo.pacing.settle})",
        lambda o: o.last_known_good is not None and o.phase == "Healthy",
        timeout=demo.pacing.step_timeout,
    )


def drift_story(demo: Demo, loop: Loop) -> None:
    p, watch, timeout = demo.printer, demo.watch, demo.pacing.step_timeout
    assert demo.traffic is not None and demo.trainer is not None
    champion = _served(demo, watch.observe())
    loop.trigger = "the world drifts"
    p.step(
        "Story 1 of 3: the world drifts. Amounts grow, Brazil's share grows from 10% to 25%, and what counts as a "
        "suspicious amount moves up. Labels still arrive; v1 still gets most answers right, but its inputs no "
        "longer look like its training data"
    )
    loop.triggered_at = demo.mark("world drifts")
    demo.traffic.era = AFTER
    fired = watch.until(f"{DRIFT_POLICY} to fire", lambda o: o.state(DRIFT_POLICY) == "Firing", timeout)
    view = fired.policies[DRIFT_POLICY]
    loop.detected_at = _fired_at(fired, DRIFT_POLICY)
    loop.detected = f"{DRIFT_POLICY} fired (PSI {view.value:.3g} > {view.threshold:.3g})"
    loop.details["detected_value"] = view.value
    created = watch.until(
        "the operator to create the retraining Job",
        lambda o: _record(o, "retrain", "Pending", "Succeeded") is not None,
        timeout,
        fail=_failed("retrain", loop.triggered_at),
    )
    record = _record(created, "retrain", "Pending", "Succeeded")
    assert record is not None
    loop.actions.append((epoch(str(record["at"])) or created.at, "retraining Job created"))
    demo.show("get", "jobs", "-n", demo.namespace, "-L", "modelmonitor.dev/monitor")
    promoted = watch.until(
        "the trainer to report a version and the operator to promote it",
        lambda o: _record(o, "retrain", "Succeeded") is not None,
        timeout,
        fail=_failed("retrain", loop.triggered_at),
    )
    record = _record(promoted, "retrain", "Succeeded")
    assert record is not None
    registered = _served(demo, promoted)
    version = registered.label
    loop.actions.append(
        (
            epoch(str(record["at"])) or promoted.at,
            f"promoted {version} (registered version {registered.number}, MODEL_URI {registered.source})",
        )
    )
    demo.show("get", "deployment", DEPLOYMENT, "-n", demo.namespace, "-o", "wide")
    watch.until(f"every serving replica to run {version}", lambda o: _all_serving(o, version), timeout)
    cleared = watch.until(
        f"{DRIFT_POLICY} to clear (the new version's reference is the world as it is now)",
        lambda o: o.state(DRIFT_POLICY) == "Inactive" and _all_serving(o, version),
        timeout,
    )
    loop.recovered_at = epoch(cleared.policies[DRIFT_POLICY].since) or cleared.at
    loop.recovered = f"{DRIFT_POLICY} Inactive, {cleared.replicas} replicas serving {version}"
    settled = watch.until(
        f"{version} to prove itself for the settle period and become last-known-good",
        lambda o: (
            o.last_known_good is not None and o.last_known_good.get("revision") == o.revision and o.phase == "Healthy"
        ),
        timeout,
    )
    _alias_moved(demo, loop, "Promoted", champion, registered)
    runs = demo.trainer.runs
    loop.details |= {
        "version": version,
        "registered_version": registered.number,
        "source": registered.source,
        "job": runs[-1].job if runs else "",
        "training_rows": runs[-1].rows if runs else 0,
        "holdout_accuracy": runs[-1].holdout_accuracy if runs else None,
        "last_known_good": settled.last_known_good,
    }
    loop.ok = True


def bad_version_story(demo: Demo, loop: Loop) -> None:
    p, watch, timeout = demo.printer, demo.watch, demo.pacing.step_timeout
    assert demo.trainer is not None
    before = watch.observe()
    restored = _served(demo, before)
    good = restored.label
    p.step(
        "Story 2 of 3: another team's pipeline publishes a new version, and a person rolls it out. A bug in its "
        "feature code flipped the sign of `velocity` in its training data: its inputs look normal, its answers are "
        "worse, which only the late labels can tell"
    )
    runs = demo.trainer.runs
    since = runs[-1].started if runs else time.time() - 60  # the data labeled since the drift alarm
    candidate, bad = demo.trainer.publish_candidate(since, notes="velocity sign flipped in the training data")
    loop.trigger = f"{candidate.version} rolled out by hand"
    p.line(
        f"registry: {candidate.version} registered as version {bad.number} of {REGISTERED_MODEL} "
        f"({candidate.notes}), source {bad.source}"
    )
    p.line(f"$ kubectl set env deployment/{DEPLOYMENT} -c model MODEL_URI={bad.source}")
    loop.triggered_at = demo.mark(f"{candidate.version} rolled out by hand")
    demo.kubectl(
        "set", "env", f"deployment/{DEPLOYMENT}", "-c", "model", f"MODEL_URI={bad.source}", "-n", demo.namespace
    )
    # ... and, as the release process says, makes it the champion in the registry.
    demo.registry.mlflow.set_alias(REGISTERED_MODEL, ALIAS, bad.number)
    p.line(f"registry: {ALIAS} -> {candidate.version} (set by hand in MLflow)")
    loop.registry.append((time.time(), f"{ALIAS}: {good} -> {candidate.version} (by hand)"))
    fired = watch.until(f"{ACCURACY_POLICY} to fire", lambda o: o.state(ACCURACY_POLICY) == "Firing", timeout)
    view = fired.policies[ACCURACY_POLICY]
    loop.detected_at = _fired_at(fired, ACCURACY_POLICY)
    loop.detected = f"{ACCURACY_POLICY} fired (accuracy {view.value:.3f} < {view.threshold:g})"
    loop.details["detected_value"] = view.value
    started = watch.until(
        "the operator to roll back to the last-known-good revision",
        lambda o: _record(o, "rollback", "Pending", "Succeeded") is not None,
        timeout,
        fail=_failed("rollback", loop.triggered_at),
    )
    record = _record(started, "rollback", "Pending", "Succeeded")
    assert record is not None
    loop.actions.append((epoch(str(record["at"])) or started.at, f"rollback to last-known-good ({good})"))
    done = watch.until(
        "the rollback's rollout to finish",
        lambda o: _record(o, "rollback", "Succeeded") is not None,
        timeout,
        fail=_failed("rollback", loop.triggered_at),
    )
    record = _record(done, "rollback", "Succeeded")
    assert record is not None
    loop.actions.append((epoch(str(record["at"])) or done.at, "rollout finished"))
    demo.show("rollout", "history", f"deployment/{DEPLOYMENT}", "-n", demo.namespace)
    recovered = watch.until(
        f"{ACCURACY_POLICY} to clear with {good} serving again",
        lambda o: o.state(ACCURACY_POLICY) == "Inactive" and _all_serving(o, good),
        timeout,
    )
    loop.recovered_at = epoch(recovered.policies[ACCURACY_POLICY].since) or recovered.at
    loop.recovered = f"{ACCURACY_POLICY} Inactive, {recovered.replicas} replicas serving {good}"
    _alias_moved(demo, loop, "RolledBack", bad, restored)
    loop.details |= {
        "bad_version": candidate.version,
        "bad_registered_version": bad.number,
        "restored_version": good,
        "model_uri": recovered.model_uri,
    }
    loop.ok = recovered.model_uri == restored.source
    if not loop.ok:
        loop.error = f"the Deployment pins {recovered.model_uri}, not {restored.source} ({good})"


def load_story(demo: Demo, loop: Loop) -> None:
    p, watch, timeout = demo.printer, demo.watch, demo.pacing.step_timeout
    assert demo.traffic is not None
    start = watch.observe()
    # More than the replicas serving now can take (about 40 requests/s each), whatever happened before.
    peak = max(demo.pacing.peak_rate, 1.25 * start.replicas * Capacity().requests_per_second)
    loop.trigger = f"load {demo.traffic.rate:.0f} -> {peak:.0f} req/s"
    p.step(
        f"Story 3 of 3: the load rises from {demo.traffic.rate:.0f} to {peak:.0f} requests/s. {start.replicas} "
        "replicas cannot keep up: requests queue, latency grows"
    )
    loop.triggered_at = demo.mark(f"load {demo.traffic.rate:.0f} -> {peak:.0f} req/s")
    demo.traffic.rate = peak
    fired = watch.until(f"{LATENCY_POLICY} to fire", lambda o: o.state(LATENCY_POLICY) == "Firing", timeout)
    view = fired.policies[LATENCY_POLICY]
    loop.detected_at = _fired_at(fired, LATENCY_POLICY)
    loop.detected = f"{LATENCY_POLICY} fired (p95 {view.value:.3g} s > {view.threshold:g} s)"
    loop.details["detected_value"] = view.value
    watch.until(
        "the operator to add a replica",
        lambda o: _record(o, "scaleUp", "Succeeded") is not None,
        timeout,
        fail=_failed("scaleUp", loop.triggered_at),
    )
    recovered = watch.until(
        f"{LATENCY_POLICY} to clear",
        lambda o: o.state(LATENCY_POLICY) == "Inactive",
        timeout * 1.5,
        fail=_failed("scaleUp", loop.triggered_at),
    )
    seen: set[str] = set()
    for observation in watch.observations:
        for record in observation.records("scaleUp"):
            at = epoch(str(record.get("at", "")))
            if record.get("result") == "Succeeded" and record.get("key") not in seen and at and at >= loop.triggered_at:
                seen.add(str(record.get("key")))
                reason = str(record.get("reason", ""))
                loop.actions.append((at, reason.replace(f"Deployment/{DEPLOYMENT} ", "")))
    loop.recovered_at = epoch(recovered.policies[LATENCY_POLICY].since) or recovered.at
    # The latency can clear while the last replica added is still starting (those already serving took the load):
    # the story ends once every replica the operator asked for serves.
    settled = watch.until("every replica asked for to serve", lambda o: sum(o.serving.values()) == o.replicas, timeout)
    loop.recovered = f"{LATENCY_POLICY} Inactive with {settled.replicas} replicas serving"
    loop.details |= {"replicas_before": start.replicas, "replicas_after": settled.replicas}
    loop.ok = settled.replicas > start.replicas and sum(settled.serving.values()) == settled.replicas
    if not loop.ok:
        loop.error = f"replicas {start.replicas} -> {settled.replicas}, serving {settled.serving}"


# --- the ending -----------------------------------------------------------------------------------------------


def action_history(observations: list[Observation]) -> str:
    """The monitor's action records (every one seen, the status keeps the latest 20)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for observation in observations:
        for record in observation.actions:
            seen.setdefault((str(record.get("key")), str(record.get("result"))), record)
    rows = sorted(seen.values(), key=lambda r: str(r.get("at", "")))
    lines = []
    for record in rows:
        reason = str(record.get("reason", ""))
        reason = reason if len(reason) <= 150 else reason[:147] + "..."
        lines.append(f"      {record.get('at')}  {record.get('name'):8} {record.get('result'):9} {reason}")
    return "\n".join(lines)


def registry_ending(registry: Registry) -> str:
    """Where the alias points and each version's tags, read from MLflow."""
    mlflow = registry.mlflow
    champion = registry.name(mlflow.alias(REGISTERED_MODEL, ALIAS) or "")
    lines = [f"      {REGISTERED_MODEL} at {mlflow.url}: {ALIAS} -> {champion}"]
    for published in registry.published:
        tags = mlflow.tags(REGISTERED_MODEL, published.number)
        shown = ", ".join(f"{k}={v}" for k, v in sorted(tags.items()) if k != PROFILE_TAG)
        lines.append(f"      {published.label} = version {published.number} ({published.source}): {shown or 'no tags'}")
    return "\n".join(lines)


def run_demo(
    pacing: Pacing,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    output: Path,
    keep_cluster: bool = True,
    mlflow_url: str | None = None,
) -> int:
    start = time.time()
    printer = Printer(start)
    output = output.resolve()
    (output / "logs").mkdir(parents=True, exist_ok=True)
    registry_root = output / "registry"
    # What an earlier run left: its model versions and logs.
    for stale in [*registry_root.glob("v*/*"), *(output / "logs").glob("*.log")]:
        stale.unlink()
    printer.step("Starting the local sandbox (the first run builds the control plane; later runs reuse it)")
    state = sandbox.up(progress=lambda message: printer.line(f"sandbox: {message}"))
    mlflow: MlflowRest
    if mlflow_url is None:
        # The model registry beside the sandbox, fresh for each run; it takes a while to start, so it starts now
        # and setup waits for it only when the first version is registered.
        directory = Path(state.root) / "demo-mlflow"
        shutil.rmtree(directory, ignore_errors=True)
        mlflow = MlflowServer(directory)
        mlflow.launch()
    else:
        mlflow = MlflowRest(mlflow_url)
    registry = Registry(registry_root, mlflow)
    demo = Demo(pacing, namespace, output, printer, state, Kubectl(state.kubeconfig), registry)
    rng = np.random.default_rng(2026)
    loops = [
        Loop(1, "inputs drift -> retrain -> promote"),
        Loop(2, "worse version -> accuracy drops -> rollback"),
        Loop(3, "load rises -> latency breaches -> scale up"),
    ]
    stories = {1: drift_story, 2: bad_version_story, 3: load_story}
    end = start
    with ExitStack() as stack:
        if isinstance(mlflow, MlflowServer):
            stack.callback(mlflow.stop)
        stack.callback(registry.close)
        setup(demo, stack, rng)
        try:
            baseline(demo)
            for loop in loops:
                stories[loop.number](demo, loop)
                if not loop.ok:
                    break  # the next story starts from where this one should have ended
        except StoryTimeout as exc:
            printer.step(f"The story stopped: {exc}")
            failed = next(lp for lp in loops if not lp.ok)
            failed.error = str(exc)
        printer.step("Where it ended")
        watch = demo.watch
        watch.narrate(watch.observe())
        demo.show("get", "mm", "-n", namespace, "-o", "wide")
        demo.show("get", "deployment", DEPLOYMENT, "-n", namespace, "-o", "wide")
        printer.line("the monitor's actions (status.actions, as they were recorded):")
        printer.block(action_history(watch.observations))
        printer.line("the model registry (read from MLflow):")
        printer.block(registry_ending(registry))
        end = time.time()
    # Everything stopped: the operator, the fleet's processes (and their Prometheus targets), the clients.
    png = output / "timeline.png"
    printer.step(f"Drawing the timeline from Prometheus and the monitor's status: {png}")
    try:
        render(
            png, observations=demo.watch.observations, world=demo.world, prometheus_url=state.prometheus_url,
            namespace=namespace, pacing=pacing, start=start, end=end,
        )  # fmt: skip
    except ImportError:
        printer.line("matplotlib is not installed (pip install -e './sandbox[demo]'): no picture")
        png = Path()
    except (OSError, RuntimeError) as exc:
        printer.line(f"could not draw the timeline: {exc}")
        png = Path()
    for loop in loops:
        if not loop.ok and not loop.error:
            loop.error = "not reached"
    ok = all(loop.ok for loop in loops)
    duration = time.time() - start
    traffic = asdict(demo.traffic.snapshot()) if demo.traffic is not None else {}
    summary = {
        "ok": ok,
        "namespace": namespace,
        "duration_seconds": round(duration, 1),
        "timeline_png": str(png) if png != Path() else None,
        "loops": [loop.to_json(start) for loop in loops],
        "traffic": traffic,
        "errors": [*(demo.fleet.errors if demo.fleet else []), *(demo.trainer.errors if demo.trainer else [])],
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    printer.step(f"Summary ({duration / 60:.1f} minutes; machine-readable: {output / 'summary.json'})")
    printer.block(summary_table(loops, start))
    printer.block(
        f"\n  traffic: {traffic.get('requests', 0)} requests, {traffic.get('shed', 0)} shed by a full queue, "
        f"{traffic.get('failed', 0)} failed, {traffic.get('labels', 0)} labels delivered"
    )
    if png != Path():
        printer.block(f"  timeline: {png}")
    printer.block(
        f"  logs: {output / 'logs'}; the namespace {namespace} is kept for a look: "
        f"kubectl describe mm {MONITOR} -n {namespace}"
    )
    if not keep_cluster:
        sandbox.down()
    else:
        printer.block("  the sandbox keeps running: `modelmonitor cluster down` stops it")
    return 0 if ok else 1
