"""The retraining pipeline a retraining Job's pod stands for.

The operator creates the Job; kwok runs its pod (and completes it at once: it runs no code). What the pod would
do runs here: wait for enough freshly labeled transactions (those labeled after the Job was created, so the new
model learns the world as it is now), fit the next model version on three quarters of them, check it on the
rest, and register it in the model registry (MLflow) with its reference profile, tagged
``modelmonitor.dev/job=$MODELMONITOR_JOB``: the Job's name, which the operator put in the Job's environment.
The operator then finds the registered version by that tag and promotes its source URI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np

from modelmonitor.adapters.kubernetes import JOB, KubernetesError, Workloads
from modelmonitor_sandbox.demo.traffic import Warehouse
from modelmonitor_sandbox.demo.world import REGISTERED_MODEL, Model, Published, Registry, Transactions, fit

JOB_TAG = "modelmonitor.dev/job"
JOB_ENV = "MODELMONITOR_JOB"


@dataclass(frozen=True)
class TrainingRun:
    """One retraining Job as the pipeline handled it."""

    job: str
    version: str
    registered: Published
    rows: int
    holdout_accuracy: float
    started: float
    finished: float


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def job_env(job: dict[str, Any], name: str) -> str | None:
    """The value of the environment variable ``name`` the Job's pod template gives its first container."""
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return next((str(e["value"]) for e in containers[0].get("env") or [] if e.get("name") == name), None)


def split(batch: Transactions, rng: np.random.Generator, holdout: float = 0.25) -> tuple[Transactions, Transactions]:
    """(train, holdout) at random."""
    order = rng.permutation(len(batch))
    cut = int(len(batch) * (1 - holdout))

    def take(index: np.ndarray) -> Transactions:
        return Transactions(batch.numbers[index], batch.countries[index], batch.fraud[index])

    return take(order[:cut]), take(order[cut:])


class Trainer:
    """Watches the monitor's retraining Jobs and does their work. Thread-safe."""

    def __init__(
        self,
        workloads: Workloads,
        namespace: str,
        monitor: str,
        service_account: str,
        registry: Registry,
        warehouse: Warehouse,
        say: Callable[[str], None],
        rows_needed: int,
        rng: np.random.Generator,
    ) -> None:
        self.workloads = workloads
        self.namespace = namespace
        self.monitor = monitor
        self.service_account = service_account
        self.registry = registry
        self.warehouse = warehouse
        self.say = say
        self.rows_needed = rows_needed
        self.rng = rng
        self.runs: list[TrainingRun] = []
        self.errors: list[str] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()  # one pipeline at a time; the registry's version numbers stay in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-trainer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                jobs = self.workloads.list(
                    JOB, self.namespace, label_selector=f"modelmonitor.dev/monitor={self.monitor}"
                )
            except KubernetesError as exc:
                self.errors.append(str(exc))
                jobs = []
            for job in jobs:
                name = job["metadata"]["name"]
                if name in self._seen:
                    continue
                self._seen.add(name)
                threading.Thread(target=self._train_for, args=(job,), name=f"train-{name}", daemon=True).start()
            self._stop.wait(0.5)

    def _train_for(self, job: dict[str, Any]) -> None:
        metadata = job["metadata"]
        name = str(metadata["name"])
        annotations = metadata.get("annotations") or {}
        try:
            tag = job_env(job, JOB_ENV)
            if not tag:
                raise RuntimeError(f"the Job has no {JOB_ENV} in its environment: nothing to tag the version with")
            created = _epoch(str(metadata["creationTimestamp"]))
            evidence = ", ".join(
                f"{k} {annotations.get('modelmonitor.dev/' + k)}"
                for k in ("policy", "signal", "value", "threshold", "window")
            )
            self.say(
                f"trainer: Job {name} created by the operator ({evidence}); it runs as ServiceAccount "
                f"{self.service_account}. kwok completes its pod at once, so its work runs here: waiting for "
                f"{self.rows_needed} freshly labeled transactions"
            )
            with self._lock:
                run = self._pipeline(name, tag, created)
            self.runs.append(run)
            self.say(
                f"trainer: {run.version} fitted on {run.rows} transactions labeled since the Job started, holdout "
                f"accuracy {run.holdout_accuracy:.3f}; registered as version {run.registered.number} of "
                f"{REGISTERED_MODEL} (source {run.registered.source}) with its profile, tagged {JOB_TAG}={tag}"
            )
        except Exception as exc:  # report and let the operator see a Job that reported nothing
            self.errors.append(f"{name}: {exc}")
            self.say(f"trainer: Job {name}: {exc}")

    def _pipeline(self, job: str, tag: str, created: float) -> TrainingRun:
        deadline = time.monotonic() + 180
        while self.warehouse.rows_since(created) < self.rows_needed:
            if self._stop.is_set() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {self.warehouse.rows_since(created)} labeled transactions arrived, {self.rows_needed} needed"
                )
            time.sleep(0.5)
        fresh = self.warehouse.since(created)
        assert fresh is not None
        train, holdout = split(fresh, self.rng)
        version = self.registry.next_version()
        model = fit(train, version, trained_on=f"Job {job}: {len(train)} transactions labeled after the drift alarm")
        model = replace(model, holdout_accuracy=round(model.accuracy(holdout), 4))
        registered = self.registry.publish(model, fresh, tags={JOB_TAG: tag})
        return TrainingRun(
            job, version, registered, len(fresh), float(model.holdout_accuracy or 0.0), created, time.time()
        )

    def publish_candidate(self, since: float, notes: str) -> tuple[Model, Published]:
        """A candidate another team's pipeline produced from the recent data, with a bug: velocity's sign was
        flipped in its training data. Its reference profile is built from the real data, so its inputs look
        fine to the drift check; only its answers are wrong."""
        with self._lock:
            fresh = self.warehouse.since(since)
            if fresh is None or len(fresh) < 1000:
                raise RuntimeError("too few labeled transactions to build a candidate")
            version = self.registry.next_version()
            model = replace(fit(fresh, version, trained_on="the candidate pipeline", negate_velocity=True), notes=notes)
            return model, self.registry.publish(model, fresh)
