"""Build a reference profile from a table of training data.

Per feature: the type (numbers or categories), the schema (range, allowed categories), bucket bounds at the
reference quantiles with the reference counts, a quantile sketch for KS / Wasserstein, category frequencies
(capped, the rest in ``__other__``) and, per drift method, a threshold calibrated by bootstrap for the live window
size at the target false-alarm rate (``modelmonitor.stats.calibration``). The same for the prediction (score
and/or class), plus the positive class and the group attribute.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelmonitor.sidecar.datafiles import Table, canonical_category
from modelmonitor.sidecar.profile import (
    OTHER,
    CategoricalReference,
    FeatureProfile,
    NumericalReference,
    PredictionProfile,
    Profile,
    ScoreCalibration,
    Task,
)
from modelmonitor.stats.binning import quantile_edges
from modelmonitor.stats.calibration import calibrate_threshold
from modelmonitor.stats.drift import METHODS
from modelmonitor.stats.probability import fit_isotonic

NUMERICAL_METHODS = ("psi", "jensen_shannon", "hellinger", "linf", "ks", "ks_statistic", "wasserstein_normalized")
"""Drift methods scored for numerical features (and the prediction score) unless told otherwise."""
CATEGORICAL_METHODS = ("psi", "jensen_shannon", "hellinger", "linf", "chi_square")
"""Drift methods scored for categorical features (and the predicted class) unless told otherwise."""


class BuildError(ValueError):
    """Options that do not fit the data (an unknown column, a constant label...); the message says which."""


@dataclass(frozen=True)
class BuildOptions:
    """How to read the training table into a profile. Column names refer to the table's header."""

    prediction_column: str | None = None
    """The model's predicted class (or value) on the reference rows; otherwise the label column stands in."""
    score_column: str | None = None
    """The model's score / probability of the positive class on the reference rows."""
    label_column: str | None = None
    """The true label; never a feature. Gives the positive class and, without predictions, the class mix."""
    group_column: str | None = None
    """The attribute whose values are the fairness groups (stays a feature unless excluded)."""
    exclude: tuple[str, ...] = ()
    """Columns that are not features (ids, timestamps)."""
    categorical: tuple[str, ...] = ()
    """Columns to treat as categories even though they hold numbers (codes, zip codes)."""
    numerical: tuple[str, ...] = ()
    """Columns that must be numbers (a stray text cell is then an error naming its row, not a category)."""
    positive_class: str | None = None
    """The positive class; default: ``1`` / ``true`` if present, else the rarer of two classes."""
    decision_threshold: float = 0.5
    """Score at or above which a prediction counts as positive (when only a score is sent)."""
    n_bins: int = 10
    """Buckets per numerical feature (bounds at the reference deciles by default)."""
    max_categories: int = 30
    """Categories exported per feature; the rest are ``__other__``."""
    max_allowed: int = 1000
    """Most distinct categories listed for the unseen-category check (more: the check is off)."""
    max_groups: int = 20
    """Groups listed in the profile; the rest are ``__other__``."""
    sketch_size: int = 1000
    """Quantiles kept per numerical feature for KS and Wasserstein."""
    window_size: int = 1000
    """Rows in the sidecar's live drift window; the thresholds are calibrated for this size."""
    false_alarm_rate: float = 0.01
    """Target share of same-distribution windows that cross a threshold."""
    n_boot: int = 1000
    """Bootstrap windows per threshold."""
    calibration_rows: int = 50_000
    """Reference rows the bootstrap draws from (a random subset of bigger tables)."""
    numerical_methods: tuple[str, ...] = NUMERICAL_METHODS
    categorical_methods: tuple[str, ...] = CATEGORICAL_METHODS
    task: Task | None = None
    """binary, multiclass or regression; default: regression for a numeric label (or prediction) with more
    distinct values than max_categories, multiclass for more than two classes and no positive class given,
    else binary."""
    seed: int = 0
    """Seed of the random generator for subsampling and the bootstrap: the same data gives the same profile."""


def build_profile(table: Table, options: BuildOptions) -> tuple[Profile, list[str]]:
    """Build a profile from ``table``; returns it with notes for the user (skipped methods, chosen classes)."""
    _check_options(table, options)
    rng = np.random.default_rng(options.seed)
    notes: list[str] = []
    special = {options.prediction_column, options.score_column, options.label_column} - {None}
    feature_names = [n for n in table.columns if n not in special and n not in options.exclude]
    if not feature_names:
        left_out = sorted(str(c) for c in special | set(options.exclude))
        raise BuildError(f"{table.path}: no feature column left after excluding {left_out}")
    # A monitor's dataDrift policy fires when ANY feature crosses its threshold, so each feature gets an equal
    # share of the false-alarm budget (Bonferroni): the monitor as a whole then false-alarms at most at
    # `false_alarm_rate`. Smaller per-feature rates need more bootstrap windows for a stable tail quantile.
    feature_options = dataclasses.replace(
        options,
        false_alarm_rate=options.false_alarm_rate / len(feature_names),
        n_boot=max(options.n_boot, math.ceil(10 * len(feature_names) / options.false_alarm_rate)),
    )
    features: list[FeatureProfile] = []
    for name in feature_names:
        values = table.columns[name]
        kind = _feature_type(table, name, values, options)
        if kind == "numerical":
            column = np.asarray(values, dtype=np.float64)
            present = column[~np.isnan(column)]
            if present.size == 0:
                raise BuildError(f"{table.path}: column {name!r} has no value at all; exclude it")
            reference = _numerical_reference(present, options, rng)
            thresholds = _thresholds(name, present, reference, options.numerical_methods, feature_options, rng, notes)
            missing = 1.0 - present.size / column.size
        else:
            strings = _as_categories(values)
            present_strings = [s for s in strings if s is not None]
            if not present_strings:
                raise BuildError(f"{table.path}: column {name!r} has no value at all; exclude it")
            reference_cat = _categorical_reference(present_strings, options.max_categories, options.max_allowed)
            codes = _category_codes(present_strings, reference_cat)
            thresholds = _category_thresholds(
                name, codes, reference_cat, options.categorical_methods, feature_options, rng, notes
            )
            reference = reference_cat  # type: ignore[assignment]
            missing = 1.0 - len(present_strings) / len(strings)
        features.append(
            FeatureProfile(name=name, type=kind, reference=reference, missing_ratio=missing, thresholds=thresholds)
        )

    task = _task(table, options)
    prediction, positive = _prediction_profile(table, options, task, rng, notes)
    calibration = _calibration(table, options, task, positive, notes)
    groups: tuple[str, ...] = ()
    if options.group_column:
        counts = Counter(s for s in _as_categories(table.columns[options.group_column]) if s is not None)
        groups = tuple(g for g, _ in counts.most_common(options.max_groups))
        if len(counts) > options.max_groups:
            notes.append(
                f"group {options.group_column!r}: {len(counts)} values, the {options.max_groups} most "
                f"frequent are listed, the rest count as {OTHER}"
            )
    profile = Profile(
        features=tuple(features),
        prediction=prediction,
        window_size=options.window_size,
        false_alarm_rate=options.false_alarm_rate,
        positive_class=positive,
        decision_threshold=options.decision_threshold,
        group_attribute=options.group_column,
        groups=groups,
        task=task,
        calibration=calibration,
        source={
            "file": table.path.rsplit("/", 1)[-1],
            "rows": table.rows,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seed": options.seed,
            "n_boot": options.n_boot,
            "feature_false_alarm_rate": feature_options.false_alarm_rate,
            "feature_n_boot": feature_options.n_boot,
        },
    )
    return profile, notes


def _check_options(table: Table, options: BuildOptions) -> None:
    named = {
        "--prediction": options.prediction_column,
        "--score": options.score_column,
        "--label": options.label_column,
        "--group": options.group_column,
    }
    for flag, column in named.items():
        if column is not None and column not in table.columns:
            raise BuildError(f"{flag} {column!r}: no such column in {table.path} (columns: {', '.join(table.columns)})")
    for flag, columns in {
        "--exclude": options.exclude,
        "--categorical": options.categorical,
        "--numerical": options.numerical,
    }.items():
        for column in columns:
            if column not in table.columns:
                raise BuildError(f"{flag} {column!r}: no such column in {table.path}")
    both = set(options.categorical) & set(options.numerical)
    if both:
        raise BuildError(f"column(s) {sorted(both)} cannot be both --categorical and --numerical")
    if options.window_size < 2:
        raise BuildError(f"window size must be at least 2, got {options.window_size}")
    if not 0 < options.false_alarm_rate < 1:
        raise BuildError(f"false-alarm rate must be between 0 and 1, got {options.false_alarm_rate}")
    if options.n_bins < 2:
        raise BuildError(f"bins must be at least 2, got {options.n_bins}")
    for method in (*options.numerical_methods, *options.categorical_methods):
        if method not in METHODS:
            raise BuildError(f"unknown drift method {method!r}; known: {', '.join(METHODS)}")
    for method in options.categorical_methods:
        if METHODS[method].input != "counts":
            raise BuildError(f"drift method {method!r} reads raw numbers; categories need a count-based method")


def _feature_type(
    table: Table, name: str, values: npt.NDArray[Any], options: BuildOptions
) -> Literal["numerical", "categorical"]:
    if name in options.categorical:
        return "categorical"
    numeric = values.dtype.kind == "f"
    if name in options.numerical and not numeric:
        for row, value in enumerate(values):
            if value is None:
                continue
            try:
                float(value)
            except (TypeError, ValueError):
                raise BuildError(
                    f"{table.path}: row {row + 2 if table.path.endswith('.csv') else row}, column {name!r}: "
                    f"{value!r} is not a number (the column is --numerical)"
                ) from None
    return "numerical" if numeric or name in options.numerical else "categorical"


def _numerical_reference(
    present: npt.NDArray[np.float64], options: BuildOptions, rng: np.random.Generator
) -> NumericalReference:
    bounds = quantile_edges(present, options.n_bins)
    counts = np.bincount(np.searchsorted(bounds, present, side="left"), minlength=bounds.size + 1)
    m = min(options.sketch_size, present.size)
    sketch = np.quantile(present, (np.arange(m) + 0.5) / m, method="inverted_cdf")
    return NumericalReference(
        bounds=bounds,
        counts=counts.astype(np.int64),
        sketch=np.sort(sketch),
        minimum=float(present.min()),
        maximum=float(present.max()),
        mean=float(present.mean()),
        std=float(present.std()),
    )


def _thresholds(
    name: str,
    present: npt.NDArray[np.float64],
    reference: NumericalReference,
    methods: tuple[str, ...],
    options: BuildOptions,
    rng: np.random.Generator,
    notes: list[str],
) -> dict[str, float]:
    """Calibrated thresholds per method. Sample methods run against the sketch at live time, so they are
    calibrated on the sketch; count methods on (a subset of) the reference itself."""
    sample = present
    if sample.size > options.calibration_rows:
        sample = rng.choice(present, options.calibration_rows, replace=False)
    thresholds: dict[str, float] = {}
    for method in methods:
        spec = METHODS[method]
        source = sample if spec.input == "counts" else reference.sketch
        try:
            thresholds[method] = float(
                calibrate_threshold(
                    method,
                    source,
                    options.window_size,
                    edges=reference.bounds if spec.input == "counts" else None,
                    false_alarm_rate=options.false_alarm_rate,
                    n_boot=options.n_boot,
                    rng=rng,
                )
            )
        except ValueError as error:
            notes.append(f"{name}: no {method} threshold ({error})")
    return thresholds


def _as_categories(values: npt.NDArray[Any]) -> list[str | None]:
    if values.dtype.kind == "f":
        return [None if math.isnan(v) else canonical_category(v) for v in values.tolist()]
    return [None if v is None else canonical_category(v) for v in values.tolist()]


def _categorical_reference(values: list[str], max_categories: int, max_allowed: int) -> CategoricalReference:
    counts = Counter(values)
    if OTHER in counts:
        raise BuildError(f"the category value {OTHER!r} is reserved for values beyond the cap")
    top = counts.most_common(max_categories)
    categories = tuple(c for c, _ in top)
    other = sum(counts.values()) - sum(n for _, n in top)
    return CategoricalReference(
        categories=categories,
        counts=np.array([n for _, n in top] + [other], dtype=np.int64),
        allowed=frozenset(counts) if len(counts) <= max_allowed else None,
    )


def _category_codes(values: list[str], reference: CategoricalReference) -> npt.NDArray[np.float64]:
    lookup = {c: i for i, c in enumerate(reference.categories)}
    other = len(reference.categories)
    return np.array([lookup.get(v, other) for v in values], dtype=np.float64)


def _category_thresholds(
    name: str,
    codes: npt.NDArray[np.float64],
    reference: CategoricalReference,
    methods: tuple[str, ...],
    options: BuildOptions,
    rng: np.random.Generator,
    notes: list[str],
) -> dict[str, float]:
    """Categories are calibrated as codes ``0..k`` (``k`` = __other__) over bounds ``0..k-1``: with ``le``
    semantics code ``i`` lands in bucket ``i``, so the count vectors are the category counts."""
    sample = codes
    if sample.size > options.calibration_rows:
        sample = rng.choice(codes, options.calibration_rows, replace=False)
    edges = np.arange(len(reference.categories), dtype=np.float64)
    thresholds: dict[str, float] = {}
    if edges.size == 0:
        notes.append(f"{name}: a single category ({OTHER}); no drift threshold")
        return thresholds
    for method in methods:
        try:
            thresholds[method] = float(
                calibrate_threshold(
                    method,
                    sample,
                    options.window_size,
                    edges=edges,
                    false_alarm_rate=options.false_alarm_rate,
                    n_boot=options.n_boot,
                    rng=rng,
                )
            )
        except ValueError as error:
            notes.append(f"{name}: no {method} threshold ({error})")
    return thresholds


def _regression_values(values: npt.NDArray[Any], options: BuildOptions) -> bool:
    """Numbers with more distinct values than categories are kept: a regression target, not classes."""
    return values.dtype.kind == "f" and np.unique(values[~np.isnan(values)]).size > options.max_categories


def _task(table: Table, options: BuildOptions) -> Task:
    """The kind of model: the option when given, else from the label (or prediction) column."""
    if options.task is not None:
        if options.task not in ("binary", "multiclass", "regression"):
            raise BuildError(f"task {options.task!r}: expected binary, multiclass or regression")
        if options.task != "binary" and options.positive_class is not None:
            raise BuildError(f"--positive-class is for binary models, not {options.task}")
        return options.task
    column = options.label_column or options.prediction_column
    if column is None:
        return "binary"
    values = table.columns[column]
    if _regression_values(values, options):
        return "regression"
    classes = {s for s in _as_categories(values) if s is not None}
    return "multiclass" if len(classes) > 2 and options.positive_class is None else "binary"


def _calibration(
    table: Table, options: BuildOptions, task: Task, positive: str | None, notes: list[str]
) -> ScoreCalibration | None:
    """The score calibration for estimated accuracy: binary models with a score, a label and a positive class."""
    if task != "binary" or options.score_column is None or options.label_column is None or positive is None:
        if options.score_column is not None and task == "binary":
            notes.append("no score calibration (estimated accuracy needs --score, --label and a positive class)")
        return None
    scores = np.asarray(table.columns[options.score_column], dtype=np.float64)
    labels = _as_categories(table.columns[options.label_column])
    usable = np.array([label is not None for label in labels]) & np.isfinite(scores)
    positives = np.array([label == positive for label in labels], dtype=np.float64)
    try:
        knots, probabilities = fit_isotonic(scores[usable], positives[usable])
    except ValueError as error:
        raise BuildError(
            f"--score {options.score_column!r} calibration on --label {options.label_column!r}: {error}"
        ) from None
    notes.append(f"score calibration: isotonic, {knots.size} knots from {int(usable.sum())} labeled rows")
    return ScoreCalibration(scores=knots, probabilities=probabilities)


def _prediction_profile(
    table: Table, options: BuildOptions, task: Task, rng: np.random.Generator, notes: list[str]
) -> tuple[PredictionProfile | None, str | None]:
    score = None
    score_thresholds: dict[str, float] = {}
    if options.score_column:
        column = (
            np.asarray(table.columns[options.score_column], dtype=np.float64)
            if table.columns[options.score_column].dtype.kind == "f"
            else np.asarray([])
        )
        if column.size == 0:
            raise BuildError(f"--score {options.score_column!r}: the column must hold numbers")
        present = column[~np.isnan(column)]
        if present.size == 0:
            raise BuildError(f"--score {options.score_column!r}: the column is empty")
        score = _numerical_reference(present, options, rng)
        score_thresholds = _thresholds(
            "prediction score", present, score, options.numerical_methods, options, rng, notes
        )
    class_column = options.prediction_column or options.label_column
    classes = None
    class_thresholds: dict[str, float] = {}
    positive = options.positive_class
    if class_column:
        values = table.columns[class_column]
        if task == "regression" and values.dtype.kind != "f":
            raise BuildError(f"--task regression: column {class_column!r} must hold numbers")
        is_regression = task == "regression" or _regression_values(values, options)
        if is_regression and options.prediction_column and score is None:
            # A regression model: its predictions are a numerical distribution, not classes.
            present = np.asarray(values, dtype=np.float64)
            present = present[~np.isnan(present)]
            score = _numerical_reference(present, options, rng)
            score_thresholds = _thresholds("prediction", present, score, options.numerical_methods, options, rng, notes)
        elif not is_regression:
            strings = [s for s in _as_categories(values) if s is not None]
            classes = _categorical_reference(strings, options.max_categories, options.max_allowed)
            class_thresholds = _category_thresholds(
                "predicted class",
                _category_codes(strings, classes),
                classes,
                options.categorical_methods,
                options,
                rng,
                notes,
            )
            if class_column == options.label_column and not options.prediction_column:
                notes.append(f"prediction classes: the label column {class_column!r} stands in for predictions")
            if positive is None and task == "binary":  # multiclass: per-class outcomes, no positive class
                positive = _default_positive(classes, notes)
            elif positive is not None and positive not in (classes.allowed or classes.categories):
                raise BuildError(
                    f"--positive-class {positive!r}: not a class of column {class_column!r} "
                    f"(classes: {', '.join(classes.categories[:10])})"
                )
    if score is None and classes is None:
        return None, positive
    return PredictionProfile(
        score=score, classes=classes, score_thresholds=score_thresholds, class_thresholds=class_thresholds
    ), positive


def _default_positive(classes: CategoricalReference, notes: list[str]) -> str | None:
    for candidate in ("1", "true", "yes", "positive"):
        if candidate in classes.categories:
            notes.append(f"positive class: {candidate!r} (override with --positive-class)")
            return candidate
    if len(classes.categories) == 2:
        rarer = classes.categories[int(np.argmin(classes.counts[:2]))]
        notes.append(f"positive class: {rarer!r}, the rarer of the two classes (override with --positive-class)")
        return rarer
    notes.append("no positive class: pass --positive-class to get accuracy/precision/recall/F1 from labels")
    return None
