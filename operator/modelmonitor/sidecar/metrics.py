"""The Prometheus side of the monitor: a custom collector yielding fresh metric families on every scrape.

Names come from ``modelmonitor.metricnames``, which the operator's built-in signals import too; types and labels
are the contract in ``docs/metrics.md``.
The collector copies what it needs under the monitor's lock, then builds the families (and computes the
per-replica drift, quality and fairness gauges) outside it, so a scrape never holds up ingest for long. Scores
are cached until the next change, so scraping twice costs one computation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from modelmonitor import metricnames as names
from modelmonitor.metricnames import (
    CLASS_OUTCOME_NAMES,
    PREDICTED_NEGATIVE,
    PREDICTED_POSITIVE,
    PREDICTION_FEATURE,
    UNKNOWN_FEATURE,
)
from modelmonitor.sidecar.events import REJECT_REASONS
from modelmonitor.sidecar.labels import OUTCOMES
from modelmonitor.sidecar.profile import OTHER, NumericalReference
from modelmonitor.sidecar.scores import (
    CategoricalScorer,
    Fairness,
    NumericalScorer,
    confusion_by_group,
    fairness_scores,
    quality_scores,
)

if TYPE_CHECKING:
    from modelmonitor.sidecar.monitor import Monitor, OutcomeCounts

MATURED = "matured_"
"""Prefix of the family keys of the maturity cohorts' outcome counters (the same counters, labelled by maturity)."""


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes ``le`` (Go float formatting), so bounds and ratios line up."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def _buckets(bounds: np.ndarray, counts: np.ndarray) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of a histogram, ``+Inf`` last (Prometheus' histogram layout)."""
    cumulative = np.cumsum(counts)
    pairs = [(_le(b), float(c)) for b, c in zip(bounds.tolist(), cumulative[:-1].tolist(), strict=True)]
    pairs.append(("+Inf", float(cumulative[-1])))
    return pairs


@dataclass
class _Scores:
    generation: int
    drift: dict[str, dict[str, float]]
    prediction_drift: dict[str, float]
    quality: dict[str, float]
    fairness: Fairness
    window_rows: int
    quality_rows: int


class MonitorCollector(Collector):
    """Exports one :class:`Monitor` (register it on any ``CollectorRegistry``)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        profile = monitor.profile
        self._numerical = [
            NumericalScorer(ref, tuple(profile.feature(name).thresholds))
            for name, ref in zip(monitor.numerical_names, monitor.numerical_refs, strict=True)
        ]
        self._categorical = [
            CategoricalScorer(profile.feature(name).reference, tuple(profile.feature(name).thresholds))  # type: ignore[arg-type]
            for name in monitor.categorical_names
        ]
        prediction = profile.prediction
        self._score_scorer = (
            NumericalScorer(prediction.score, tuple(prediction.score_thresholds))
            if prediction is not None and prediction.score is not None
            else None
        )
        self._class_scorer = (
            CategoricalScorer(prediction.classes, tuple(prediction.class_thresholds))
            if prediction is not None and prediction.classes is not None
            else None
        )
        self._cache: _Scores | None = None

    def describe(self) -> Iterator[Metric]:
        """Names only, so registering does not run a collection."""
        yield from self._families(describe_only=True)

    def collect(self) -> Iterator[Metric]:
        """Fresh families with the current counts and scores."""
        yield from self._families(describe_only=False)

    # --- scores -------------------------------------------------------------------------------------------

    def _scores(self) -> _Scores:
        m = self.monitor
        with m.lock:
            if self._cache is not None and self._cache.generation == m.generation:
                return self._cache
            generation = m.generation
            numerical = m.numerical_window.view().copy()
            categorical = m.categorical_window.view().copy()
            score_window = m.score_window.view().copy()
            class_window = m.class_window.view().copy()
            prediction_groups = m.prediction_group_window.view().copy()
            quality = m.quality_window.view().copy()
            group_names = [m.groups.label(code) for code in range(len(m.groups.names))]
            group_count = m.groups.size
            window_rows = max(m.numerical_window.filled, m.categorical_window.filled)
        min_rows = m.min_window_rows
        drift: dict[str, dict[str, float]] = {}
        for j, scorer in enumerate(self._numerical):
            drift[m.numerical_names[j]] = scorer.score(numerical[:, j], min_rows)
        for j, cat_scorer in enumerate(self._categorical):
            drift[m.categorical_names[j]] = cat_scorer.score(categorical[:, j], min_rows)
        prediction_drift: dict[str, float] = {}
        if self._score_scorer is not None:
            prediction_drift = self._score_scorer.score(score_window, min_rows)
        elif self._class_scorer is not None:
            prediction_drift = self._class_scorer.score(class_window, min_rows)
        table = confusion_by_group(quality, group_count)
        scores = _Scores(
            generation=generation,
            drift=drift,
            prediction_drift=prediction_drift,
            quality=quality_scores(table) if table.sum() else {},
            fairness=fairness_scores(prediction_groups, table, group_names, m.settings.min_group_rows),
            window_rows=window_rows,
            quality_rows=int((quality[:, 0] >= 0).sum()),
        )
        self._cache = scores
        return scores

    # --- families ------------------------------------------------------------------------------------------

    def _families(self, *, describe_only: bool) -> Iterator[Metric]:
        m = self.monitor
        base = [m.model, m.version]
        base_labels = ["model", "version"]

        def counter(name: str, doc: str, labels: list[str] = ()) -> CounterMetricFamily:  # type: ignore[assignment]
            return CounterMetricFamily(name, doc, labels=[*base_labels, *labels])

        def gauge(name: str, doc: str, labels: list[str] = ()) -> GaugeMetricFamily:  # type: ignore[assignment]
            return GaugeMetricFamily(name, doc, labels=[*base_labels, *labels])

        def histogram(name: str, doc: str, labels: list[str] = ()) -> HistogramMetricFamily:  # type: ignore[assignment]
            return HistogramMetricFamily(name, doc, labels=[*base_labels, *labels])

        families: dict[str, Any] = {
            "requests": counter(names.REQUESTS, "Prediction requests seen, by HTTP status class.", ["code"]),
            "errors": counter(names.REQUEST_ERRORS, "Requests the model answered with an error."),
            "duration": histogram(names.REQUEST_DURATION, "Model latency as seen by the sidecar."),
            "feature_value": histogram(
                names.FEATURE_VALUE, "Numerical feature values; bucket bounds at the reference quantiles.", ["feature"]
            ),
            "feature_ref": gauge(
                names.FEATURE_REFERENCE, "Reference share at or below each bucket bound.", ["feature", "le"]
            ),
            "category": counter(names.CATEGORY_COUNT, "Categorical feature values (capped).", ["feature", "category"]),
            "category_ref": gauge(
                names.CATEGORY_REFERENCE, "Reference share of each category.", ["feature", "category"]
            ),
            "missing": counter(names.FEATURE_MISSING, "Missing feature values (absent, null, NaN).", ["feature"]),
            "violations": counter(
                names.SCHEMA_VIOLATIONS, "Values that break the profile's schema, by kind.", ["feature", "kind"]
            ),
            "observations": counter(names.FEATURE_OBSERVATIONS, "Rows checked per feature.", ["feature"]),
            "score": histogram(names.PREDICTION_SCORE, "Predicted scores / values; bounds at the reference quantiles."),
            "score_ref": gauge(names.PREDICTION_REFERENCE, "Reference share at or below each bound.", ["le"]),
            "classes": counter(names.PREDICTION_CLASS, "Predicted classes (capped).", ["class"]),
            "class_ref": gauge(names.PREDICTION_CLASS_REFERENCE, "Reference share of each class.", ["class"]),
            "group_predictions": counter(
                names.GROUP_PREDICTIONS, "Predictions per group, positive or negative.", ["group", "predicted"]
            ),
            "labeled": counter(
                names.LABELED_PREDICTIONS, "Predictions joined with their label, by outcome.", ["group", "outcome"]
            ),
            "labels": counter(names.LABELS_RECEIVED, "Labels received, by result of the join.", ["result"]),
            "expired": counter(names.PREDICTIONS_EXPIRED, "Predictions that left the label store unlabeled."),
            "label_predictions": counter(
                names.LABEL_PREDICTIONS, "Predictions stored to wait for a label (they carried a request id)."
            ),
            "class_outcomes": counter(
                names.CLASS_OUTCOMES,
                "Multiclass: joined labels per class, one-vs-rest tp / fp / fn.",
                ["class", "outcome"],
            ),
            "regression_absolute": counter(
                names.REGRESSION_ABSOLUTE_ERROR, "Regression: sum of |prediction - label| over joined labels."
            ),
            "regression_squared": counter(
                names.REGRESSION_SQUARED_ERROR, "Regression: sum of (prediction - label)^2 over joined labels."
            ),
            "regression_labeled": counter(names.REGRESSION_LABELED, "Regression: joined labels with a numeric error."),
            MATURED + "labeled": counter(
                names.MATURED_LABELED_PREDICTIONS,
                "Predictions that reached a maturity age with their label joined, by outcome.",
                ["group", "outcome", "maturity"],
            ),
            MATURED + "class_outcomes": counter(
                names.MATURED_CLASS_OUTCOMES,
                "Multiclass: labels joined by a maturity age, per class, one-vs-rest tp / fp / fn.",
                ["class", "outcome", "maturity"],
            ),
            MATURED + "regression_absolute": counter(
                names.MATURED_REGRESSION_ABSOLUTE_ERROR,
                "Regression: sum of |prediction - label| over labels joined by a maturity age.",
                ["maturity"],
            ),
            MATURED + "regression_squared": counter(
                names.MATURED_REGRESSION_SQUARED_ERROR,
                "Regression: sum of (prediction - label)^2 over labels joined by a maturity age.",
                ["maturity"],
            ),
            MATURED + "regression_labeled": counter(
                names.MATURED_REGRESSION_LABELED,
                "Regression: labels with a numeric error joined by a maturity age.",
                ["maturity"],
            ),
            "late": counter(
                names.LABELS_LATE, "Labels that joined after their prediction was older than a maturity.", ["maturity"]
            ),
            "estimated_correct": counter(
                names.ESTIMATED_CORRECT, "Sum of the calibrated probabilities that scored predictions are correct."
            ),
            "estimated_predictions": counter(
                names.ESTIMATED_PREDICTIONS, "Scored predictions behind modelmonitor_estimated_correct_total."
            ),
            "estimated_positive_predictions": counter(
                names.ESTIMATED_POSITIVE_PREDICTIONS, "Scored predictions that said positive."
            ),
            "estimated_true_positives": counter(
                names.ESTIMATED_TRUE_POSITIVES, "Sum of the calibrated P(positive) over positive predictions."
            ),
            "estimated_positives": counter(
                names.ESTIMATED_POSITIVES, "Sum of the calibrated P(positive) over scored predictions."
            ),
            "pending": gauge(names.LABELS_PENDING, "Predictions waiting in the label store (per replica)."),
            "coverage": gauge(names.LABEL_COVERAGE, "Joined labels / predictions that left the label store."),
            "store_up": gauge(names.LABEL_STORE_UP, "1 when the last call to the shared label store succeeded."),
            "store_errors": counter(
                names.LABEL_STORE_ERRORS, "Failed calls to the shared label store, by operation.", ["operation"]
            ),
            "store_dropped": counter(
                names.LABEL_STORE_DROPPED, "Records given up on a full queue while the store was away.", ["kind"]
            ),
            "store_queued": gauge(
                names.LABEL_STORE_QUEUED, "Records waiting in the sidecar for the shared label store.", ["kind"]
            ),
            "drift": gauge(
                names.DRIFT_SCORE, "Drift of the replica's window against the reference.", ["feature", "method"]
            ),
            "drift_threshold": gauge(
                names.DRIFT_THRESHOLD, "Threshold calibrated for the window size.", ["feature", "method"]
            ),
            "prediction_drift": gauge(
                names.PREDICTION_DRIFT_SCORE, "Drift of the prediction distribution.", ["method"]
            ),
            "quality": gauge(names.QUALITY, "Quality over the replica's window of joined labels.", ["metric"]),
            "quality_rows": gauge(names.QUALITY_WINDOW_LABELS, "Joined labels in the replica's quality window."),
            "fairness": gauge(
                names.FAIRNESS_GAP, "Fairness gaps between groups over the replica's windows.", ["metric"]
            ),
            "fairness_rate": gauge(
                names.FAIRNESS_GROUP_RATE, "Per-group rate behind each fairness gap.", ["metric", "group"]
            ),
            "fairness_samples": gauge(
                names.FAIRNESS_GROUP_SAMPLES, "Per-group sample count behind each fairness gap.", ["metric", "group"]
            ),
            "window_rows": gauge(names.WINDOW_ROWS, "Rows in the replica's drift window."),
            "rejected": counter(names.EVENTS_REJECTED, "Payloads refused, by reason.", ["reason"]),
            "info": gauge(
                names.PROFILE_INFO,
                "The reference profile in use (value 1).",
                ["window_size", "false_alarm_rate", "built"],
            ),
        }
        if describe_only:
            yield from families.values()
            return
        self._fill(families, base)
        yield from families.values()

    def _fill_outcomes(
        self,
        f: dict[str, Any],
        prefix: str,
        base: list[str],
        suffix: list[str],
        outcomes: OutcomeCounts,
        names: tuple[list[str], list[str]],
    ) -> None:
        """One set of outcome counters (``prefix`` "" as labels join, :data:`MATURED` per maturity, whose name is
        ``suffix``), from the first scrape at 0 so increase() counts the first labels. ``names``: the group and
        class names by code, ``__other__`` last."""
        m = self.monitor
        group_names, class_names = names
        group_codes = [*range(len(group_names) - 1), m.groups.other]
        for code, name in zip(group_codes, group_names, strict=True):
            if outcomes.confusion[code].sum() or code != m.groups.other:
                for outcome_code, outcome in enumerate(OUTCOMES):
                    count = int(outcomes.confusion[code, outcome_code])
                    f[prefix + "labeled"].add_metric([*base, name, outcome, *suffix], count)
        if m.profile.task == "multiclass":
            codes = [*range(len(class_names) - 1), m.classes.other]
            for code, name in zip(codes, class_names, strict=True):
                if outcomes.class_outcomes[code].sum() or code != m.classes.other:
                    for index, outcome in enumerate(CLASS_OUTCOME_NAMES):
                        count = int(outcomes.class_outcomes[code, index])
                        f[prefix + "class_outcomes"].add_metric([*base, name, outcome, *suffix], count)
        elif m.profile.task == "regression":
            f[prefix + "regression_absolute"].add_metric([*base, *suffix], outcomes.absolute_error)
            f[prefix + "regression_squared"].add_metric([*base, *suffix], outcomes.squared_error)
            f[prefix + "regression_labeled"].add_metric([*base, *suffix], outcomes.regression_labeled)

    def _fill(self, f: dict[str, Any], base: list[str]) -> None:
        m = self.monitor
        m.settle_labels()
        store_counts = m.labels.local_counts()
        store_health = m.labels.health()
        scores = self._scores()
        profile = m.profile
        with m.lock:
            c = m.counters
            requests = dict(c.requests)
            errors = c.errors
            latency = c.latency_buckets.copy(), c.latency_sum
            feature_buckets = [b.copy() for b in c.feature_buckets]
            feature_sums = c.feature_sums.copy()
            category_counts = [b.copy() for b in c.category_counts]
            observations = c.observations
            missing = c.missing.copy()
            violations = {k: v.copy() for k, v in c.violations.items()}
            unknown = c.unknown_features
            score_buckets, score_sum = c.score_buckets.copy(), c.score_sum
            class_counts = c.class_counts.copy()
            class_names = [m.classes.label(i) for i in range(len(m.classes.names))] + [OTHER]
            group_names = [m.groups.label(i) for i in range(len(m.groups.names))] + [OTHER]
            group_predictions = c.group_predictions.copy()
            outcomes = c.outcomes.copy()
            matured = {name: counts.copy() for name, counts in c.matured.items()}
            late = dict(c.labels_late)
            label_predictions = c.label_predictions
            estimated = c.estimated
            received = dict(c.labels_received)
            rejected = dict(c.rejected)
        for code in ("2xx", "4xx", "5xx", *sorted(set(requests) - {"2xx", "4xx", "5xx"})):
            f["requests"].add_metric([*base, code], requests.get(code, 0))
        f["errors"].add_metric(base, errors)
        f["duration"].add_metric(base, _buckets(m._latency_bounds, latency[0]), latency[1])

        for j, name in enumerate(m.numerical_names):
            reference: NumericalReference = m.numerical_refs[j]
            f["feature_value"].add_metric(
                [*base, name], _buckets(reference.bounds, feature_buckets[j]), feature_sums[j]
            )
            for bound, ratio in zip(reference.bounds.tolist(), reference.cumulative_ratios.tolist(), strict=True):
                f["feature_ref"].add_metric([*base, name, _le(bound)], ratio)
            f["feature_ref"].add_metric([*base, name, "+Inf"], 1.0)
        for j, name in enumerate(m.categorical_names):
            ref = profile.feature(name).reference
            labels = ref.labels  # type: ignore[union-attr]
            for label, count, ratio in zip(labels, category_counts[j].tolist(), ref.ratios.tolist(), strict=True):  # type: ignore[union-attr]
                f["category"].add_metric([*base, name, label], count)
                f["category_ref"].add_metric([*base, name, label], ratio)
        for i, feature in enumerate(profile.features):
            f["missing"].add_metric([*base, feature.name], int(missing[i]))
            f["observations"].add_metric([*base, feature.name], observations)
            kinds = ("type", "range", "non_finite") if feature.type == "numerical" else ("type", "unseen_category")
            for kind in kinds:
                f["violations"].add_metric([*base, feature.name, kind], int(violations[kind][i]))
        f["violations"].add_metric([*base, UNKNOWN_FEATURE, "unknown_feature"], unknown)

        if m.score_ref is not None:
            f["score"].add_metric(base, _buckets(m.score_ref.bounds, score_buckets), score_sum)
            for bound, ratio in zip(m.score_ref.bounds.tolist(), m.score_ref.cumulative_ratios.tolist(), strict=True):
                f["score_ref"].add_metric([*base, _le(bound)], ratio)
            f["score_ref"].add_metric([*base, "+Inf"], 1.0)
        if m.count_classes:
            for class_code, class_name in enumerate(class_names[:-1]):
                f["classes"].add_metric([*base, class_name], int(class_counts[class_code]))
            f["classes"].add_metric([*base, OTHER], int(class_counts[m.classes.other]))
        if m.class_ref is not None:
            for label, ratio in zip(m.class_ref.labels, m.class_ref.ratios.tolist(), strict=True):
                f["class_ref"].add_metric([*base, label], ratio)

        group_codes = [*range(len(group_names) - 1), m.groups.other]
        for code, name in zip(group_codes, group_names, strict=True):
            # Every named group is exported from the start at 0 (the profile's groups from the first scrape), so
            # Prometheus' increase() counts a group's first predictions too: a series that appears with its
            # first count already in it shows no increase. __other__ only once something fell into it.
            named = code != m.groups.other
            if group_predictions[code].sum() or named:
                f["group_predictions"].add_metric([*base, name, PREDICTED_POSITIVE], int(group_predictions[code, 1]))
                f["group_predictions"].add_metric([*base, name, PREDICTED_NEGATIVE], int(group_predictions[code, 0]))
        for result in ("joined", "unmatched", "duplicate"):
            f["labels"].add_metric([*base, result], received.get(result, 0))
        f["label_predictions"].add_metric(base, label_predictions)
        self._fill_outcomes(f, "", base, [], outcomes, (group_names, class_names))
        for maturity, counts in matured.items():
            self._fill_outcomes(f, MATURED, base, [maturity], counts, (group_names, class_names))
            f["late"].add_metric([*base, maturity], late[maturity])
        if profile.calibration is not None:
            f["estimated_correct"].add_metric(base, estimated.correct)
            f["estimated_predictions"].add_metric(base, estimated.predictions)
            f["estimated_positive_predictions"].add_metric(base, estimated.positive_predictions)
            f["estimated_true_positives"].add_metric(base, estimated.true_positives)
            f["estimated_positives"].add_metric(base, estimated.positives)
        if store_counts is not None:
            if matured:
                f["store_dropped"].add_metric([*base, "matured"], store_counts.held_dropped)
            f["expired"].add_metric(base, store_counts.expired)
            f["pending"].add_metric(base, store_counts.pending)
            if store_counts.coverage is not None:
                f["coverage"].add_metric(base, store_counts.coverage)
        if store_health is not None:
            f["store_up"].add_metric(base, float(store_health.up))
            for operation, count in store_health.errors.items():
                f["store_errors"].add_metric([*base, operation], count)
            for kind, count in store_health.dropped.items():
                f["store_dropped"].add_metric([*base, kind], count)
            f["store_queued"].add_metric([*base, "prediction"], store_health.queued_predictions)
            f["store_queued"].add_metric([*base, "label"], store_health.queued_labels)

        for feature in profile.features:
            for method, value in scores.drift.get(feature.name, {}).items():
                f["drift"].add_metric([*base, feature.name, method], value)
            for method, threshold in feature.thresholds.items():
                f["drift_threshold"].add_metric([*base, feature.name, method], threshold)
        for method, value in scores.prediction_drift.items():
            f["prediction_drift"].add_metric([*base, method], value)
        if profile.prediction is not None:
            thresholds = profile.prediction.score_thresholds or profile.prediction.class_thresholds
            for method, threshold in thresholds.items():
                # beside the feature thresholds, under a feature name no real feature can take
                f["drift_threshold"].add_metric([*base, PREDICTION_FEATURE, method], threshold)
        for metric, value in scores.quality.items():
            f["quality"].add_metric([*base, metric], value)
        f["quality_rows"].add_metric(base, scores.quality_rows)
        for metric, value in scores.fairness.gaps.items():
            f["fairness"].add_metric([*base, metric], value)
        for metric, groups in scores.fairness.rates.items():
            for group, (rate, samples) in groups.items():
                if math.isfinite(rate):
                    f["fairness_rate"].add_metric([*base, metric, group], rate)
                f["fairness_samples"].add_metric([*base, metric, group], samples)
        f["window_rows"].add_metric(base, scores.window_rows)
        for reason in (*REJECT_REASONS, *sorted(set(rejected) - set(REJECT_REASONS))):
            f["rejected"].add_metric([*base, reason], rejected.get(reason, 0))
        built = str(profile.source.get("built", ""))
        f["info"].add_metric([*base, str(m.window_size), _le(profile.false_alarm_rate), built], 1.0)
