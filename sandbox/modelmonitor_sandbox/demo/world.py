"""The demo's world and its models: card transactions, whether each was fraud, and the models that guess it.

The world has two eras. **Before**: the model's training world. **After**: amounts grow (a new kind of merchant
joins), Brazil's share of traffic grows from 10% to 25%, and the amount that counts as suspicious moves up with
them. A model trained before still catches most fraud after (accuracy drops a point or two), but its inputs have
clearly drifted; a model refitted on fresh data from after fits again.

Models are logistic regressions on four numerical features and a one-hot country, fitted with scipy. Each is
saved as one JSON file under a version name (``v1``, ``v2``, ...) in the demo's model registry (MLflow), and
registered as a version of ``fraud-detector`` together with the reference profile the version's sidecars load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from modelmonitor.mlflowrest import ARTIFACT_SCHEME, MlflowRegistry, RegistrySettings
from modelmonitor_sandbox.devcluster.mlflow_server import MlflowRest

FEATURES = ("amount", "velocity", "account_age", "distance")
COUNTRIES = ("DE", "FR", "US", "BR")
#: Rows per drift window the profile's thresholds are calibrated for (the sidecar's window).
CALIBRATED_WINDOW_ROWS = 1000


@dataclass(frozen=True)
class Era:
    """How transactions look, and what makes one fraud, in one era of the world."""

    name: str
    amount_shift: float
    suspicious_amount: float
    country_shares: tuple[float, ...]


BEFORE = Era("before", amount_shift=0.0, suspicious_amount=0.0, country_shares=(0.4, 0.3, 0.2, 0.1))
AFTER = Era("after", amount_shift=1.2, suspicious_amount=0.4, country_shares=(0.3, 0.25, 0.2, 0.25))


@dataclass(frozen=True)
class Transactions:
    """A batch of transactions: numerical features (rows x 4), countries, and whether each was fraud."""

    numbers: np.ndarray
    countries: np.ndarray
    fraud: np.ndarray

    def __len__(self) -> int:
        return len(self.fraud)

    def instances(self) -> list[dict[str, Any]]:
        """The rows as KServe v1 ``instances`` (one object of feature values per row)."""
        rows = self.numbers.round(5).tolist()
        return [
            {**dict(zip(FEATURES, row, strict=True)), "country": str(country)}
            for row, country in zip(rows, self.countries, strict=True)
        ]

    @staticmethod
    def concat(parts: list[Transactions]) -> Transactions:
        return Transactions(
            np.concatenate([p.numbers for p in parts]),
            np.concatenate([p.countries for p in parts]),
            np.concatenate([p.fraud for p in parts]),
        )


def sample(rng: np.random.Generator, n: int, era: Era) -> Transactions:
    """``n`` transactions of ``era`` with the truth about each (known to the world, told to the model late)."""
    numbers = rng.normal(size=(n, len(FEATURES)))
    numbers[:, 0] += era.amount_shift
    countries = rng.choice(np.array(COUNTRIES), size=n, p=era.country_shares)
    risk = 2.5 * (numbers[:, 0] - era.suspicious_amount) - 2.0 * numbers[:, 1] + 1.5 * numbers[:, 3] - 0.5
    fraud = (risk + 0.8 * rng.logistic(size=n) > 0).astype(int)
    return Transactions(numbers, countries, fraud)


def design(numbers: np.ndarray, countries: np.ndarray) -> np.ndarray:
    """The model's inputs: the numerical features and a one-hot country (the first country is the baseline)."""
    onehot = np.stack([countries == c for c in COUNTRIES[1:]], axis=1).astype(float)
    return np.hstack([numbers, onehot])


@dataclass(frozen=True)
class Model:
    """One model version: logistic-regression weights and what it was trained on."""

    version: str
    weights: tuple[float, ...]
    bias: float
    trained_on: str
    rows: int
    notes: str = ""
    holdout_accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def scores(self, numbers: np.ndarray, countries: np.ndarray) -> np.ndarray:
        """Probability of fraud per row."""
        return np.asarray(expit(design(numbers, countries) @ np.asarray(self.weights) + self.bias))

    def predict(self, batch: Transactions) -> tuple[np.ndarray, np.ndarray]:
        """(class, score) per row."""
        scores = self.scores(batch.numbers, batch.countries)
        return (scores >= 0.5).astype(int), scores

    def accuracy(self, batch: Transactions) -> float:
        classes, _ = self.predict(batch)
        return float(np.mean(classes == batch.fraud))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "weights": list(self.weights),
            "bias": self.bias,
            "features": [*FEATURES, *(f"country={c}" for c in COUNTRIES[1:])],
            "trained_on": self.trained_on,
            "rows": self.rows,
            "notes": self.notes,
            "holdout_accuracy": self.holdout_accuracy,
        }

    @staticmethod
    def from_json(document: dict[str, Any]) -> Model:
        return Model(
            version=str(document["version"]),
            weights=tuple(float(w) for w in document["weights"]),
            bias=float(document["bias"]),
            trained_on=str(document.get("trained_on", "")),
            rows=int(document.get("rows", 0)),
            notes=str(document.get("notes", "")),
            holdout_accuracy=document.get("holdout_accuracy"),
        )


def fit(batch: Transactions, version: str, trained_on: str, *, negate_velocity: bool = False) -> Model:
    """Fit a logistic regression (L2 0.01, L-BFGS) on ``batch``.

    ``negate_velocity`` reproduces a feature-pipeline bug: the training data's velocity column arrived with its
    sign flipped, so the model learns the opposite of what velocity means at serving time.
    """
    numbers = batch.numbers.copy()
    if negate_velocity:
        numbers[:, 1] = -numbers[:, 1]
    x = design(numbers, batch.countries)
    y = batch.fraud.astype(float)
    l2 = 0.01

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        p = expit(z)
        # log(1 + e^z) - y z, computed stably
        value = float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w)
        residual = (p - y) / len(y)
        grad = np.concatenate([x.T @ residual + l2 * w, [residual.sum()]])
        return value, grad

    result = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B")
    if not result.success:
        raise RuntimeError(f"fitting {version} did not converge: {result.message}")
    theta = result.x
    return Model(version, tuple(float(v) for v in theta[:-1]), float(theta[-1]), trained_on, len(batch))


#: The registered model in MLflow the demo's versions belong to, and the alias on the one in production.
REGISTERED_MODEL = "fraud-detector"
ALIAS = "champion"


@dataclass(frozen=True)
class Published:
    """A model version as the registry holds it."""

    label: str  # the demo's name of the version: v1, v2, ...
    number: str  # MLflow's version number
    source: str  # the immutable URI a workload pins: mlflow-artifacts:/0/<run>/artifacts/model


class Registry:
    """The model registry: a real MLflow tracking server. A version's ``model.json`` is logged in the artifacts of
    a run of its own (``model/``), and that folder's ``mlflow-artifacts:/`` URI is the ``source`` of a registered
    version of ``fraud-detector``; its reference profile is stored and tagged on the version by
    ``modelmonitor profile build --registry``, where the sidecars load it from. ``root`` is the pipeline's local
    workspace (the reference rows, the profile as built)."""

    def __init__(self, root: Path, mlflow: MlflowRest) -> None:
        self.root = root
        self.mlflow = mlflow
        self.client = MlflowRegistry(RegistrySettings(url=mlflow.url, timeout_seconds=30))
        self.published: list[Published] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def next_version(self) -> str:
        with self._lock:
            return f"v{len(self.published) + 1}"

    def find(self, *, source: str = "", number: str = "", label: str = "") -> Published | None:
        """The version published with ``source``, numbered ``number``, or named ``label``."""
        with self._lock:
            return next(
                (
                    p
                    for p in self.published
                    if source in ("", p.source) and number in ("", p.number) and label in ("", p.label)
                ),
                None,
            )

    def name(self, number: str) -> str:
        """How the story names MLflow's version ``number``: its label (v2), or "version N" if not the demo's."""
        found = self.find(number=number) if number else None
        return found.label if found is not None else f"version {number or '-'}"

    def load(self, source: str) -> Model:
        """The model a workload pinning ``source`` serves, read from MLflow's artifact store."""
        return Model.from_json(json.loads(self.client.download_artifact(f"{source}/model.json")))

    def publish(self, model: Model, reference: Transactions, tags: dict[str, str] | None = None) -> Published:
        """Store ``model``, register it as a version (tagged ``tags``, last: a trainer's tag says the version is
        complete) and store its reference profile, built from ``reference`` (the rows it was validated on, with its
        own predictions), as a training pipeline would."""
        folder = self.root / model.version
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "reference.csv"
        classes, scores = model.predict(reference)
        with data.open("w") as out:
            out.write(",".join((*FEATURES, "country", "prediction", "score", "label")) + "\n")
            for row, country, cls, score, label in zip(
                reference.numbers.tolist(), reference.countries, classes, scores, reference.fraud, strict=True
            ):
                values = ",".join(f"{v:.5f}" for v in row)
                out.write(f"{values},{country},{cls},{score:.5f},{label}\n")
        # As a training pipeline logs a model: into a run's artifacts, then registered from there.
        run_id, artifacts = self.mlflow.create_run()
        source = f"{artifacts}/model"
        if not source.startswith(ARTIFACT_SCHEME):
            raise RuntimeError(f"the tracking server stores run artifacts at {artifacts}, not in its artifact proxy")
        self.client.upload_artifact(
            f"{source.removeprefix(ARTIFACT_SCHEME)}/model.json", json.dumps(model.to_json(), indent=2).encode()
        )
        number = self.mlflow.register(REGISTERED_MODEL, source, run_id=run_id)
        self.mlflow.finish_run(run_id)
        # Only PSI is calibrated: it is the method the operator's dataDrift signal computes over the fleet; the
        # other methods' bootstrap would make a retraining pipeline slower for gauges the demo does not use.
        result = subprocess.run(
            [
                sys.executable, "-m", "modelmonitor", "profile", "build", str(data), "-o", str(folder / "profile.json"),
                "--label", "label", "--prediction", "prediction", "--score", "score", "--group", "country",
                "--positive-class", "1", "--window-size", str(CALIBRATED_WINDOW_ROWS),
                "--numerical-methods", "psi", "--categorical-methods", "psi",
                "--registry", self.mlflow.url, "--registered-model", REGISTERED_MODEL, "--registered-version", number,
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"building the profile of {model.version} failed: {result.stderr.strip()[-2000:]}")
        for key, value in (tags or {}).items():
            self.mlflow.set_tag(REGISTERED_MODEL, number, key, value)
        published = Published(model.version, number, source)
        with self._lock:
            self.published.append(published)
        return published
