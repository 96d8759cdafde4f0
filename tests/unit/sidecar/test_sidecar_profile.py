"""Profile build from CSV / NumPy, the JSON round trip, `profile show`, and clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REFERENCE_ROWS, WINDOW, small_options
from modelmonitor.cli import main
from modelmonitor.sidecar import profile as profile_io
from modelmonitor.sidecar.datafiles import DataFileError, read_table
from modelmonitor.sidecar.profile import OTHER, CategoricalReference, NumericalReference, Profile, ProfileError
from modelmonitor.sidecar.profile_build import BuildError, build_profile
from modelmonitor.stats.drift import METHODS


def test_features_get_types_schema_and_reference_buckets(profile: Profile, training_csv: Path) -> None:
    assert profile.feature_names == ("age", "income", "country", "gender")  # label and score are not features
    age = profile.feature("age").reference
    assert isinstance(age, NumericalReference)
    table = read_table(training_csv)
    ages = np.asarray(table.columns["age"], dtype=float)
    # decile bounds: each bucket holds about a tenth of the reference, and the counts are the reference's
    assert age.bounds.size == 9
    assert int(age.counts.sum()) == REFERENCE_ROWS
    np.testing.assert_array_equal(age.counts, np.bincount(np.searchsorted(age.bounds, ages, "left"), minlength=10))
    assert np.all(np.abs(age.counts / REFERENCE_ROWS - 0.1) < 0.01)
    assert age.minimum == pytest.approx(ages.min()) and age.maximum == pytest.approx(ages.max())
    assert profile.feature("income").missing_ratio == pytest.approx(0.025)
    country = profile.feature("country").reference
    assert isinstance(country, CategoricalReference)
    assert country.categories[0] == "us" and set(country.categories) == {"us", "de", "fr", "jp"}
    assert country.labels[-1] == OTHER and country.counts[-1] == 0
    assert country.allowed == frozenset({"us", "de", "fr", "jp"})


def test_thresholds_for_every_method_and_the_prediction(profile: Profile) -> None:
    # every fleet drift method (a policy's `method:`) has a threshold for `threshold: auto`
    assert set(profile.feature("age").thresholds) == {
        "psi", "jensen_shannon", "hellinger", "linf", "ks", "ks_statistic", "wasserstein_normalized"
    }  # fmt: skip
    assert set(profile.feature("country").thresholds) == {"psi", "jensen_shannon", "hellinger", "linf", "chi_square"}
    for method, threshold in profile.feature("age").thresholds.items():
        spec = METHODS[method]
        assert spec.lower <= threshold <= spec.upper
    # a window of 200 rows from the reference itself scores a PSI far above 0: the threshold says so
    assert 0.01 < profile.feature("age").thresholds["psi"] < 0.5
    assert profile.window_size == WINDOW and profile.false_alarm_rate == 0.01
    assert profile.prediction is not None and profile.prediction.score is not None
    assert profile.prediction.classes is not None and set(profile.prediction.classes.categories) == {"0", "1"}
    assert profile.positive_class == "1"
    assert profile.group_attribute == "gender" and set(profile.groups) == {"f", "m"}


def test_thresholds_shrink_with_a_bigger_window(training_csv: Path) -> None:
    table = read_table(training_csv)
    small, _ = build_profile(table, small_options(window_size=100))
    large, _ = build_profile(table, small_options(window_size=2000))
    assert large.feature("age").thresholds["psi"] < small.feature("age").thresholds["psi"] / 5


def test_same_data_and_seed_give_the_same_profile(training_csv: Path) -> None:
    table = read_table(training_csv)
    one = profile_io.to_json(build_profile(table, small_options())[0])
    two = profile_io.to_json(build_profile(table, small_options())[0])
    one["source"].pop("built"), two["source"].pop("built")
    assert one == two


def test_json_round_trip(profile: Profile, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    profile_io.save(profile, path)
    loaded = profile_io.load(path)
    assert profile_io.to_json(loaded) == profile_io.to_json(profile)
    assert path.stat().st_size < 1_000_000  # fits a ConfigMap


def test_categories_are_capped_with_other(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    rng = np.random.default_rng(0)
    values = rng.integers(0, 100, 3000)
    path.write_text("city,x\n" + "".join(f"c{v},{i}\n" for i, v in enumerate(values)))
    built, _ = build_profile(
        read_table(path), small_options(label_column=None, score_column=None, group_column=None, max_categories=5)
    )
    city = built.feature("city").reference
    assert isinstance(city, CategoricalReference)
    assert len(city.categories) == 5 and city.labels[-1] == OTHER
    assert int(city.counts.sum()) == 3000 and city.counts[-1] > 2000


def test_npz_and_npy_sources(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    npz = tmp_path / "train.npz"
    np.savez(npz, x=rng.normal(size=500), code=rng.integers(0, 3, 500), y=rng.integers(0, 2, 500))
    built, _ = build_profile(
        read_table(npz), small_options(label_column="y", score_column=None, group_column=None, categorical=("code",))
    )
    assert built.feature_names == ("x", "code")
    assert built.feature("code").type == "categorical"
    npy = tmp_path / "train.npy"
    np.save(npy, rng.normal(size=(300, 3)))
    table = read_table(npy, column_names=["a", "b", "c"])
    assert list(table.columns) == ["a", "b", "c"] and table.rows == 300


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n3\n", "row 3: 1 fields, the header has 2"),
        ("a,b\n1,inf\n", "row 2, column 'b': infinite value"),
        ("a,,c\n1,2,3\n", "column 2 has no name"),
        ("a,a\n1,2\n", "repeated: a"),
        ("a,b\n", "no data rows"),
        ("", "is empty"),
    ],
)
def test_bad_csv_names_row_and_column(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_table(path)


def test_numerical_column_with_text_names_the_cell(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n2,x7\n3,4\n")
    with pytest.raises(BuildError, match=r"row 3, column 'b': 'x7' is not a number"):
        build_profile(
            read_table(path), small_options(label_column=None, score_column=None, group_column=None, numerical=("b",))
        )


def test_unknown_option_column_is_named(training_csv: Path) -> None:
    with pytest.raises(BuildError, match=r"--label 'target': no such column"):
        build_profile(read_table(training_csv), small_options(label_column="target"))


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="no such file"):
        read_table(tmp_path / "none.csv")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(DataFileError, match="unknown data format"):
        read_table(tmp_path / "x.xlsx")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=99), "version: this sidecar reads profile version 1, got 99"),
        (lambda d: d["features"][0].update(bounds=[3, 2, 1]), r"features\[0\].bounds: must be a non-empty, strictly"),
        (lambda d: d["features"][0].update(counts=[1, 2]), r"features\[0\].counts: expected 10"),
        (lambda d: d["features"][2].update(type="text"), r"features\[2\].type: expected 'numerical' or"),
        (lambda d: d.pop("window_size"), "window_size: missing"),
        (lambda d: d.update(false_alarm_rate=2), "false_alarm_rate: must be between 0 and 1"),
    ],
)
def test_bad_profile_names_the_field(profile: Profile, tmp_path: Path, edit: object, message: str) -> None:
    document = profile_io.to_json(profile)
    edit(document)  # type: ignore[operator]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ProfileError, match=message):
        profile_io.load(path)


def test_not_json_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{nope")
    with pytest.raises(ProfileError, match=r"not JSON \(line 1, column 2"):
        profile_io.load(path)


def test_cli_build_and_show(training_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "profile.json"
    code = main(
        [
            "profile",
            "build",
            str(training_csv),
            "-o",
            str(out),
            "--label",
            "churned",
            "--score",
            "score",
            "--group",
            "gender",
            "--window-size",
            "100",
            "--n-boot",
            "200",
        ]
    )
    assert code == 0 and out.exists()
    assert "4 features from 4000 rows" in capsys.readouterr().out
    assert main(["profile", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "age (numerical): range" in shown and "country (categorical): 4 categories" in shown
    assert "window: 100 rows" in shown and "positive class: 1" in shown


def test_cli_build_error_is_a_message_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3\n")
    assert main(["profile", "build", str(bad), "-o", str(tmp_path / "p.json")]) == 2
    assert "row 3: 1 fields" in capsys.readouterr().err


def test_cli_registry_options_go_together(
    training_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.json"
    code = main(["profile", "build", str(training_csv), "-o", str(out), "--registry", "http://mlflow:5000"])
    assert code == 2 and not out.exists(), "refused before building anything"
    assert "--registry, --registered-model and --registered-version go together" in capsys.readouterr().err


def test_cli_an_unreachable_registry_is_a_message_not_a_traceback(
    training_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelmonitor_sandbox.devcluster.processes import free_port

    args = ["--registry", f"http://127.0.0.1:{free_port()}", "--registered-model", "churn", "--registered-version", "3"]
    code = main(["profile", "build", str(training_csv), "-o", str(tmp_path / "p.json"), "--n-boot", "20", *args])
    assert code == 2
    assert "cannot reach http://127.0.0.1:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ([], "exactly one of --profile and --profile-from-registry"),
        (["--profile", "p.json", "--profile-from-registry", "http://m:5000"], "exactly one of --profile"),
        (["--profile-from-registry", "http://m:5000", "--registered-model", "churn"], "one of --registered-version"),
    ],
)
def test_the_sidecar_takes_one_profile_source(
    options: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sidecar", "--model", "churn", "--version", "v1", *options]) == 2
    assert problem in capsys.readouterr().err
