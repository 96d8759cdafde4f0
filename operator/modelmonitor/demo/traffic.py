"""A synthetic fraud model and the traffic the demo sends through real sidecars.

The model scores four numerical features and a country. In the "healthy" regime the world behaves as the model
learned; in the "drifted" regime the inputs shift (transaction amounts grow) and the relation between inputs
and outcome changes, so the model's answers go wrong. Labels arrive about a second after each prediction, like
chargebacks arriving after the fact.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FEATURES = ("amount", "velocity", "account_age", "distance")
COUNTRIES = ("DE", "FR", "US", "BR")
GROUPS = ("new-customer", "returning")


def _logit(x: np.ndarray) -> np.ndarray:
    return 2.5 * x[:, 0] - 2.0 * x[:, 1] + 1.5 * x[:, 3]


def sample(rng: np.random.Generator, n: int, regime: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, countries, true labels) for `n` transactions in a regime ("healthy" or "drifted")."""
    x = rng.normal(size=(n, len(FEATURES)))
    countries = rng.choice(COUNTRIES, size=n, p=(0.4, 0.3, 0.2, 0.1))
    if regime == "drifted":
        x[:, 0] += 1.2  # amounts grow
        truth = -_logit(x) + rng.normal(scale=0.5, size=n)  # fraudsters adapted: the learned relation flips
    else:
        truth = _logit(x) + rng.normal(scale=0.5, size=n)
    return x, countries, (truth > 0).astype(int)


def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The deployed model: (class, score)."""
    score = 1.0 / (1.0 + np.exp(-_logit(x)))
    return (score > 0.5).astype(int), score


def write_training_data(path: Path, rng: np.random.Generator, rows: int = 5000) -> None:
    """The reference data the sidecars' profile is built from (features, prediction, score, label, group)."""
    x, countries, labels = sample(rng, rows, "healthy")
    classes, scores = predict(x)
    groups = rng.choice(GROUPS, size=rows)
    with path.open("w") as out:
        out.write(",".join((*FEATURES, "country", "prediction", "score", "label", "segment")) + "\n")
        for i in range(rows):
            values = [f"{v:.5f}" for v in x[i]]
            out.write(",".join((*values, countries[i], str(classes[i]), f"{scores[i]:.5f}", str(labels[i]), groups[i])))
            out.write("\n")


def _post(url: str, payload: dict[str, object]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


@dataclass
class Traffic:
    """Sends batches of prediction events to the sidecars (round robin) and their labels a second later."""

    sidecars: Sequence[str]
    rate_per_second: float = 150.0
    regime: str = "healthy"
    seed: int = 7
    sent: int = 0
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        rng = np.random.default_rng(self.seed)
        pending: deque[tuple[float, str, list[dict[str, object]]]] = deque()
        batch_seconds = 0.2
        counter = 0
        turn = 0
        while not self._stop.is_set():
            started = time.monotonic()
            n = max(1, int(self.rate_per_second * batch_seconds))
            x, countries, labels = sample(rng, n, self.regime)
            classes, scores = predict(x)
            groups = rng.choice(GROUPS, size=n)
            events, label_batch = [], []
            for i in range(n):
                counter += 1
                request_id = f"r{counter}"
                features: dict[str, object] = {name: float(x[i, j]) for j, name in enumerate(FEATURES)}
                features["country"] = str(countries[i])
                events.append(
                    {
                        "request_id": request_id,
                        "features": features,
                        "prediction": int(classes[i]),
                        "score": float(scores[i]),
                        "group": str(groups[i]),
                        "latency_seconds": float(rng.gamma(4.0, 0.005)),
                    }
                )
                label_batch.append({"request_id": request_id, "label": int(labels[i])})
            target = self.sidecars[turn % len(self.sidecars)]
            turn += 1
            try:
                _post(f"{target}/v1/events", {"events": events})
                self.sent += n
                pending.append((started + 1.0, target, label_batch))
            except OSError:
                self.failures += 1
            while pending and pending[0][0] <= time.monotonic():
                _, where, due = pending.popleft()
                try:
                    _post(f"{where}/v1/labels", {"labels": due})
                except OSError:
                    self.failures += 1
            self._stop.wait(max(0.0, batch_seconds - (time.monotonic() - started)))
