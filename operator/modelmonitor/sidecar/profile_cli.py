"""``modelmonitor profile``: build a reference profile from training data, or show one.

modelmonitor profile build train.csv -o profile.json --label churned --group region
modelmonitor profile show profile.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from modelmonitor.mlflowrest import RegistryError
from modelmonitor.sidecar import profile as profile_io
from modelmonitor.sidecar.datafiles import DataFileError, read_table
from modelmonitor.sidecar.profile import CategoricalReference, NumericalReference, Profile, ProfileError


def _columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``build`` and ``show``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    build = sub.add_parser("build", help="build a profile from training data (CSV, Parquet, .npy, .npz)")
    build.add_argument("data", help="the training data file")
    build.add_argument("-o", "--output", required=True, help="where to write the profile JSON")
    build.add_argument("--label", help="the true-label column (not a feature)")
    build.add_argument("--prediction", help="the model's predicted class/value on these rows (not a feature)")
    build.add_argument("--score", help="the model's score / positive-class probability on these rows")
    build.add_argument("--group", help="the attribute whose values are the fairness groups")
    build.add_argument("--exclude", type=_columns, default=(), help="comma-separated columns that are not features")
    build.add_argument(
        "--categorical", type=_columns, default=(), help="comma-separated columns to treat as categories"
    )
    build.add_argument("--numerical", type=_columns, default=(), help="comma-separated columns that must be numbers")
    build.add_argument("--columns", type=_columns, help="column names for a plain 2-D .npy array")
    build.add_argument(
        "--task",
        choices=("binary", "multiclass", "regression"),
        help="the kind of model (default: from the label column: many numbers = regression, more than two "
        "classes = multiclass, else binary)",
    )
    build.add_argument("--positive-class", help="the positive class (default: 1/true if present, else the rarer)")
    build.add_argument("--decision-threshold", type=float, default=0.5, help="score at or above = positive")
    build.add_argument("--bins", type=int, default=10, help="buckets per numerical feature (default 10)")
    build.add_argument("--max-categories", type=int, default=30, help="categories kept per feature (default 30)")
    build.add_argument("--max-groups", type=int, default=20, help="groups listed (default 20)")
    build.add_argument("--sketch-size", type=int, default=1000, help="quantiles kept for KS/Wasserstein")
    build.add_argument("--window-size", type=int, default=1000, help="live window rows to calibrate for")
    build.add_argument("--false-alarm-rate", type=float, default=0.01, help="target false-alarm rate (0.01)")
    build.add_argument("--n-boot", type=int, default=1000, help="bootstrap windows per threshold (1000)")
    build.add_argument("--numerical-methods", type=_columns, help="drift methods for numerical features")
    build.add_argument("--categorical-methods", type=_columns, help="drift methods for categorical features")
    build.add_argument("--seed", type=int, default=0, help="random seed (same data + seed = same profile)")
    build.add_argument(
        "--registry", help="also store the profile with a registered model version: the MLflow tracking URL"
    )
    build.add_argument("--registered-model", help="with --registry: the registered model's name")
    build.add_argument("--registered-version", help="with --registry: the version the profile belongs to")
    show = sub.add_parser("show", help="print a profile in human terms")
    show.add_argument("profile", help="the profile JSON file")
    show.add_argument("--json", action="store_true", help="print the normalized JSON instead")


def run(args: argparse.Namespace) -> int:
    """Run ``build`` or ``show``; 2 with a message on bad input."""
    try:
        if args.action == "build":
            return _build(args)
        return _show(args)
    except (DataFileError, ProfileError, ValueError, RegistryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _build(args: argparse.Namespace) -> int:
    from modelmonitor.sidecar.profile_build import (
        CATEGORICAL_METHODS,
        NUMERICAL_METHODS,
        BuildOptions,
        build_profile,
    )

    started = time.perf_counter()
    table = read_table(args.data, column_names=list(args.columns) if args.columns else None)
    options = BuildOptions(
        prediction_column=args.prediction,
        score_column=args.score,
        label_column=args.label,
        group_column=args.group,
        exclude=args.exclude,
        categorical=args.categorical,
        numerical=args.numerical,
        positive_class=args.positive_class,
        decision_threshold=args.decision_threshold,
        n_bins=args.bins,
        max_categories=args.max_categories,
        max_groups=args.max_groups,
        sketch_size=args.sketch_size,
        window_size=args.window_size,
        false_alarm_rate=args.false_alarm_rate,
        n_boot=args.n_boot,
        numerical_methods=args.numerical_methods or NUMERICAL_METHODS,
        categorical_methods=args.categorical_methods or CATEGORICAL_METHODS,
        seed=args.seed,
        task=args.task,
    )
    registered = (args.registry, args.registered_model, args.registered_version)
    if any(registered) and not all(registered):
        raise ValueError("--registry, --registered-model and --registered-version go together")
    profile, notes = build_profile(table, options)
    profile_io.save(profile, args.output)
    if args.registry:
        from modelmonitor.sidecar.registry_profiles import store_profile

        with open(args.output, "rb") as handle:
            uri = store_profile(args.registry, args.registered_model, args.registered_version, handle.read())
        print(f"stored as the profile of version {args.registered_version} of {args.registered_model}: {uri}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"wrote {args.output}: {len(profile.features)} features from {table.rows} rows, thresholds for windows of "
        f"{profile.window_size} rows at a {profile.false_alarm_rate:g} false-alarm rate "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    profile = profile_io.load(args.profile)
    if args.json:
        print(json.dumps(profile_io.to_json(profile), indent=1))
        return 0
    print(describe(profile))
    return 0


def describe(profile: Profile) -> str:
    """A human summary: one block per feature, then the prediction, positive class and groups."""
    source = profile.source
    lines = [
        f"profile v{profile_io.PROFILE_VERSION} from {source.get('file', '?')} ({source.get('rows', '?')} rows, "
        f"built {source.get('built', '?')})",
        f"window: {profile.window_size} rows; thresholds at a {profile.false_alarm_rate:g} false-alarm rate",
        "",
    ]
    for feature in profile.features:
        ref = feature.reference
        if isinstance(ref, NumericalReference):
            detail = (
                f"range [{ref.minimum:g}, {ref.maximum:g}], mean {ref.mean:.4g}, std {ref.std:.4g}, "
                f"{ref.bounds.size + 1} buckets"
            )
        else:
            shown = ", ".join(ref.categories[:6]) + (", ..." if len(ref.categories) > 6 else "")
            allowed = "any value" if ref.allowed is None else f"{len(ref.allowed)} allowed"
            detail = f"{len(ref.categories)} categories ({shown}), {allowed}"
        thresholds = ", ".join(f"{m} {t:.4g}" for m, t in feature.thresholds.items()) or "none"
        lines.append(f"  {feature.name} ({feature.type}): {detail}; missing {feature.missing_ratio:.1%}")
        lines.append(f"      thresholds: {thresholds}")
    prediction = profile.prediction
    lines.append("")
    if prediction is None:
        lines.append("prediction: not profiled (no prediction drift)")
    else:
        if prediction.score is not None:
            lines.append(
                f"prediction score: range [{prediction.score.minimum:g}, {prediction.score.maximum:g}], "
                f"mean {prediction.score.mean:.4g}"
            )
        if isinstance(prediction.classes, CategoricalReference):
            shares = ", ".join(
                f"{c} {r:.1%}" for c, r in zip(prediction.classes.labels, prediction.classes.ratios, strict=True)
            )
            lines.append(f"prediction classes: {shares}")
    lines.append(f"task: {profile.task}")
    lines.append(
        f"positive class: {profile.positive_class or 'none'} (decision threshold {profile.decision_threshold:g})"
    )
    if profile.calibration is not None:
        lines.append(
            f"score calibration: {profile.calibration.method}, {profile.calibration.scores.size} knots "
            "(estimatedAccuracy)"
        )
    groups = ", ".join(profile.groups) if profile.groups else "learned from traffic"
    lines.append(f"group attribute: {profile.group_attribute or 'none'} (groups: {groups})")
    return "\n".join(lines)
