"""Small reference data and profiles for the sidecar tests (built for real, with a short bootstrap)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from modelmonitor.sidecar.datafiles import read_table
from modelmonitor.sidecar.profile import Profile
from modelmonitor.sidecar.profile_build import BuildOptions, build_profile

REFERENCE_ROWS = 4000
WINDOW = 200


def write_training_csv(path: Path, rows: int = REFERENCE_ROWS, seed: int = 7) -> Path:
    """A churn-like table: two numerical features, two categorical, a label and a score."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, rows)
    income = rng.lognormal(10, 0.5, rows)
    country = rng.choice(["us", "de", "fr", "jp"], p=[0.5, 0.2, 0.2, 0.1], size=rows)
    gender = rng.choice(["f", "m"], size=rows)
    score = 1 / (1 + np.exp(-(age - 40) / 10))
    label = (rng.random(rows) < score).astype(int)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["age", "income", "country", "gender", "churned", "score"])
        for i in range(rows):
            income_cell = "" if i % 40 == 0 else f"{income[i]:.1f}"  # 2.5% missing
            writer.writerow([f"{age[i]:.3f}", income_cell, country[i], gender[i], label[i], f"{score[i]:.5f}"])
    return path


def small_options(**overrides: object) -> BuildOptions:
    base: dict[str, object] = {
        "label_column": "churned",
        "score_column": "score",
        "group_column": "gender",
        "window_size": WINDOW,
        "n_boot": 200,
        "sketch_size": 500,
    }
    base.update(overrides)
    return BuildOptions(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def training_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_csv(tmp_path_factory.mktemp("data") / "train.csv")


@pytest.fixture(scope="session")
def profile(training_csv: Path) -> Profile:
    built, _notes = build_profile(read_table(training_csv), small_options())
    return built


@pytest.fixture(scope="session")
def profile_path(profile: Profile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelmonitor.sidecar import profile as profile_io

    path = tmp_path_factory.mktemp("profile") / "profile.json"
    profile_io.save(profile, path)
    return path


def reference_rows(n: int, seed: int, *, age_shift: float = 0.0) -> list[dict[str, object]]:
    """Feature rows drawn like the training data (optionally with the age mean shifted)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40 + age_shift, 10, n)
    income = rng.lognormal(10, 0.5, n)
    country = rng.choice(["us", "de", "fr", "jp"], p=[0.5, 0.2, 0.2, 0.1], size=n)
    gender = rng.choice(["f", "m"], size=n)
    return [
        {"age": float(age[i]), "income": float(income[i]), "country": str(country[i]), "gender": str(gender[i])}
        for i in range(n)
    ]
