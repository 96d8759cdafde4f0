"""The demo's world and its models: card transactions, whether each was fraud, and the models that guess it.

The world has two eras. **Before**: the model's training world. **After**: amounts grow (a new kind of merchant
joins), Brazil's share of traffic grows from 10% to 25%, and the amount that counts as suspicious moves up with
them. A model trained before still catches most fraud after (accuracy drops a point or two), but its inputs have
clearly drifted; a model refitted on fresh data from after fits again.

Models are logistic regressions on four numerical features and a one-hot country, fitted with scipy. Each is
saved as one JSON file under a version name (``v1``, ``v2``, ...) in the demo's model registry, together with
the reference profile the version's sidecars load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

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


class Registry:
    """The model registry: ``<root>/<version>/model.json`` and ``profile.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def model_path(self, version: str) -> Path:
        return self.root / version / "model.json"

    def profile_path(self, version: str) -> Path:
        return self.root / version / "profile.json"

    def has(self, version: str) -> bool:
        return self.model_path(version).exists() and self.profile_path(version).exists()

    def load(self, version: str) -> Model:
        return Model.from_json(json.loads(self.model_path(version).read_text()))

    def versions(self) -> list[str]:
        found = [p.parent.name for p in self.root.glob("v*/model.json")]
        return sorted(found, key=lambda v: int(v[1:]) if v[1:].isdigit() else 0)

    def next_version(self) -> str:
        numbers = [int(v[1:]) for v in self.versions() if v[1:].isdigit()]
        return f"v{max(numbers, default=0) + 1}"

    def publish(self, model: Model, reference: Transactions) -> Path:
        """Save ``model`` and build its reference profile from ``reference`` (the rows it was validated on, with
        its own predictions), as a training pipeline would. Returns the profile's path."""
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
        profile = self.profile_path(model.version)
        # Only PSI is calibrated: it is the method the operator's dataDrift signal computes over the fleet; the
        # other methods' bootstrap would make a retraining pipeline slower for gauges the demo does not use.
        result = subprocess.run(
            [
                sys.executable, "-m", "modelmonitor", "profile", "build", str(data), "-o", str(profile),
                "--label", "label", "--prediction", "prediction", "--score", "score", "--group", "country",
                "--positive-class", "1", "--window-size", str(CALIBRATED_WINDOW_ROWS),
                "--numerical-methods", "psi", "--categorical-methods", "psi",
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"building the profile of {model.version} failed: {result.stderr.strip()[-2000:]}")
        # The model file is written last: a version is visible to the fleet only once both files exist.
        self.model_path(model.version).write_text(json.dumps(model.to_json(), indent=2))
        return profile
