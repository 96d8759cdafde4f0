"""Write the fraud model's reference (training) data as CSV, to build the sidecar's profile from.

Columns: the features amount, velocity, account_age, distance (numbers), country and segment (categories); the
model's prediction and score on each row; the true label. The sidecar's fairness groups are the segment values.

    python examples/fraud-model/training_data.py > fraud-train.csv
    modelmonitor profile build fraud-train.csv -o profile.json \\
        --label label --prediction prediction --score score --group segment
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import TextIO

import numpy as np

COUNTRIES = ("DE", "FR", "US", "BR")
SEGMENTS = ("new-customer", "returning")


def transactions(rng: np.random.Generator, n: int, drifted: bool = False) -> dict[str, np.ndarray]:
    """`n` transactions as columns. Drifted: amounts grow and fraudsters adapt (the learned relation flips)."""
    x = rng.normal(size=(n, 4))
    if drifted:
        x[:, 0] += 1.2
    logit = 2.5 * x[:, 0] - 2.0 * x[:, 1] + 1.5 * x[:, 3]
    truth = (-logit if drifted else logit) + rng.normal(scale=0.5, size=n)
    return {
        "amount": x[:, 0],
        "velocity": x[:, 1],
        "account_age": x[:, 2],
        "distance": x[:, 3],
        "country": rng.choice(COUNTRIES, size=n, p=(0.4, 0.3, 0.2, 0.1)),
        "segment": rng.choice(SEGMENTS, size=n),
        "label": (truth > 0).astype(int),
    }


def write_csv(out: TextIO, rng: np.random.Generator, rows: int) -> None:
    """The reference rows with the model's prediction and score (the same formula as server.py)."""
    data = transactions(rng, rows)
    score = 1.0 / (1.0 + np.exp(-(2.5 * data["amount"] - 2.0 * data["velocity"] + 1.5 * data["distance"])))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["amount", "velocity", "account_age", "distance", "country", "segment", "prediction", "score", "label"]
    )
    for i in range(rows):
        writer.writerow(
            [f"{data[c][i]:.5f}" for c in ("amount", "velocity", "account_age", "distance")]
            + [data["country"][i], data["segment"][i], int(score[i] > 0.5), f"{score[i]:.5f}", data["label"][i]]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    write_csv(sys.stdout, np.random.default_rng(args.seed), args.rows)


if __name__ == "__main__":
    main()
