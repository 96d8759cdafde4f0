"""dataDrift and predictionDrift over the whole fleet: summed bucket and category counts against the reference
proportions the sidecar exports, scored with the policy's ``method``.

Always per version, because each version's bucket bounds are its own reference quantiles and summing buckets
with different bounds would be meaningless. The value is the worst feature's score (over versions too); with
``threshold: auto`` the worst is the one furthest past its own calibrated threshold for that method.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from modelmonitor.adapters.prometheus import Sample
from modelmonitor.metricnames import (
    CATEGORY_COUNT,
    CATEGORY_REFERENCE,
    DRIFT_THRESHOLD,
    FEATURE_REFERENCE,
    FEATURE_VALUE,
    PREDICTION_FEATURE,
    PREDICTION_REFERENCE,
    PREDICTION_SCORE,
)
from modelmonitor.policy.model import Measurement
from modelmonitor.promql import quote
from modelmonitor.signals.answers import Grouping, Index, Plan, count, describe, values
from modelmonitor.signals.request import FLEET_DRIFT_METHODS, SignalRequest
from modelmonitor.stats.drift import METHODS, DriftMethod

SIGNALS = ("dataDrift", "predictionDrift")


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan | Measurement:
    """Current counts and reference ratios (numerical, then categorical); the thresholds last, for auto."""
    if request.drift_method not in FLEET_DRIFT_METHODS:
        return Measurement.invalid(
            f"drift method {request.drift_method!r}: fleet drift is computed from summed bucket counts against "
            f"the reference's proportions; expected one of {', '.join(FLEET_DRIFT_METHODS)}"
        )
    # Every method's thresholds in one query, shared by all methods and monitors.
    thresholds = (f"max by ({grouping.by('feature', 'method')}) ({DRIFT_THRESHOLD})",) if request.auto_threshold else ()
    if request.signal == "dataDrift":
        return Plan(
            (
                f"sum by ({grouping.by('feature', 'le')}) (increase({FEATURE_VALUE}_bucket[{window}]))",
                f"max by ({grouping.by('feature', 'le')}) ({FEATURE_REFERENCE})",
                f"sum by ({grouping.by('feature', 'category')}) (increase({CATEGORY_COUNT}[{window}]))",
                f"max by ({grouping.by('feature', 'category')}) ({CATEGORY_REFERENCE})",
                *thresholds,
            ),
            _compute_data_drift,
        )
    return Plan(
        (
            f"sum by ({grouping.by('le')}) (increase({PREDICTION_SCORE}_bucket[{window}]))",
            f"max by ({grouping.by('le')}) ({PREDICTION_REFERENCE})",
            *thresholds,
        ),
        _compute_prediction_drift,
    )


@dataclass
class _Score:
    """The drift of one feature of one version."""

    version: str
    feature: str
    score: float
    observations: float
    threshold: float | None = None


@dataclass
class _Histograms:
    """Cumulative counts by ``le`` per (version, feature), merged over the labels the monitor does not name."""

    cumulative: dict[tuple[str, str], dict[float, float]] = field(default_factory=lambda: defaultdict(dict))

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], feature_label: str | None, *, reference: bool) -> _Histograms:
        """Counts are summed over the rest (two clusters' traffic is one histogram); reference ratios, the same
        profile's numbers wherever it runs, are not added up: the largest is kept."""
        histograms = cls()
        for sample in samples:
            feature = sample.labels.get(feature_label, "") if feature_label else PREDICTION_FEATURE
            try:
                bound = float(sample.labels.get("le", ""))
            except ValueError:
                continue
            buckets = histograms.cumulative[(sample.labels.get("version", ""), feature)]
            previous = buckets.get(bound)
            if previous is None:
                buckets[bound] = sample.value
            else:
                buckets[bound] = max(previous, sample.value) if reference else previous + sample.value
        return histograms


def _categories(samples: Iterable[Sample], *, reference: bool) -> dict[tuple[str, str], dict[str, float]]:
    """Counts (summed) or reference shares (largest) per (version, feature) and category."""
    found: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for sample in samples:
        if math.isnan(sample.value):
            continue
        shares = found[(sample.labels.get("version", ""), sample.labels.get("feature", ""))]
        name = sample.labels.get("category", "")
        previous = shares.get(name)
        if previous is None:
            shares[name] = sample.value
        else:
            shares[name] = max(previous, sample.value) if reference else previous + sample.value
    return found


def _bins(current: Mapping[float, float], reference: Mapping[float, float]) -> tuple[np.ndarray, np.ndarray] | str:
    """Per-bin current counts and reference fractions from cumulative ones; or why they cannot be compared.

    Plain Python on purpose: a histogram has a dozen buckets, and numpy's per-call overhead on arrays that
    small costs more than the arithmetic (this runs for every feature of every model each cycle).
    """
    if math.inf not in current:
        return "its histogram has no +Inf bucket"
    bounds = sorted(b for b in current if not math.isinf(b))
    reference_bounds = sorted(b for b in reference if not math.isinf(b))
    if not bounds:
        return "its histogram has a single bucket"
    if len(bounds) != len(reference_bounds) or not all(
        math.isclose(a, b, rel_tol=1e-9) for a, b in zip(bounds, reference_bounds, strict=True)
    ):
        return "its bucket bounds differ from the reference's (a profile change inside the window?)"
    cumulative_current = [current[b] for b in bounds] + [current[math.inf]]
    cumulative_reference = [reference[b] for b in reference_bounds] + [reference.get(math.inf, 1.0)]
    if any(math.isnan(v) for v in cumulative_current) or any(math.isnan(v) for v in cumulative_reference):
        return "NaN in its buckets"
    # Each bucket's increase() is extrapolated on its own, which can leave a bucket a hair below the one
    # before it: clip those to zero rather than feed a negative count to the test.
    return _differences(cumulative_current), _differences(cumulative_reference)


def _differences(cumulative: list[float]) -> np.ndarray:
    previous = 0.0
    bins = []
    for value in cumulative:
        bins.append(max(value - previous, 0.0))
        previous = value
    return np.array(bins, dtype=np.float64)


def _score(method: DriftMethod, reference: np.ndarray, current: np.ndarray) -> float | str:
    if current.sum() <= 0:
        return "no observations in the window"
    if reference.sum() <= 0:
        return "an empty reference"
    try:
        return method.function(reference, current)
    except ValueError as problem:
        return str(problem)


def _thresholds(request: SignalRequest, index: Index) -> dict[tuple[str, str], float]:
    """The calibrated threshold of the request's method per (version, feature)."""
    found: dict[tuple[str, str], float] = {}
    for sample in index.select(request):
        if sample.labels.get("method") == request.drift_method and math.isfinite(sample.value):
            key = (sample.labels.get("version", ""), sample.labels.get("feature", ""))
            found[key] = max(found.get(key, -math.inf), sample.value)
    return found


def _pick(
    request: SignalRequest,
    method: DriftMethod,
    scores: list[_Score],
    skipped: list[str],
    threshold_query: Index | None,
) -> Measurement:
    """Report the worst feature (over versions too): max score, or max score/threshold with threshold auto."""
    sparse = [score for score in scores if score.observations < request.min_samples]
    if sparse and len(sparse) < len(scores):
        # Leave sparse features out, unless all are sparse: then the engine's minSamples reports NoData.
        skipped = [*skipped, *(f"feature {s.feature!r}: {s.observations:.0f} observations" for s in sparse)]
        scores = [score for score in scores if score.observations >= request.min_samples]
    if not scores:
        why = "; ".join(skipped[:5]) if skipped else "no feature histograms"
        return Measurement.no_data(
            f"{request.signal}: nothing to compare for {describe(request)} over {request.window}: {why}"
        )
    higher = method.direction == "higher_is_drift"
    if threshold_query is not None:
        known = _thresholds(request, threshold_query)
        for score in scores:
            score.threshold = known.get((score.version, score.feature))
        scores = [score for score in scores if score.threshold is not None]
        if not scores:
            return Measurement.no_data(
                f"{request.signal}: threshold auto, but no {DRIFT_THRESHOLD}{{method={quote(request.drift_method)}}} "
                f"for the measured features of {describe(request)}"
            )

        def badness(score: _Score) -> float:
            assert score.threshold is not None
            if higher:
                return score.score / score.threshold if score.threshold > 0 else math.inf
            return score.threshold / score.score if score.score > 0 else math.inf

        worst = max(scores, key=badness)
    else:
        worst = max(scores, key=lambda s: s.score) if higher else min(scores, key=lambda s: s.score)
    where = "the prediction" if worst.feature == PREDICTION_FEATURE else f"feature {worst.feature!r}"
    detail = f"method {request.drift_method}: {worst.score:.4g} in {where} (version {worst.version!r})"
    if worst.threshold is not None:
        detail += f", calibrated threshold {worst.threshold:.4g}"
    detail += f"; {len(scores)} compared over {request.window}"
    if skipped:
        detail += f", {len(skipped)} skipped ({'; '.join(skipped[:3])})"
    return values([worst.score], count(worst.observations), detail, threshold=worst.threshold)


def _histogram_scores(
    method: DriftMethod,
    current: _Histograms,
    reference: _Histograms,
    subject: Callable[[str, str], str],
    reference_metric: str,
) -> tuple[list[_Score], list[str]]:
    """The drift score of every (version, feature) histogram against its reference, and why the others were
    skipped (``subject`` names a histogram in those reasons)."""
    scores: list[_Score] = []
    skipped: list[str] = []
    for (version, feature), counts in sorted(current.cumulative.items()):
        what = subject(version, feature)
        ref = reference.cumulative.get((version, feature))
        if ref is None:
            skipped.append(f"{what} has no {reference_metric}")
            continue
        bins = _bins(counts, ref)
        if isinstance(bins, str):
            skipped.append(f"{what}: {bins}")
            continue
        value = _score(method, bins[1], bins[0])
        if isinstance(value, str):
            skipped.append(f"{what}: {value}")
            continue
        scores.append(_Score(version, feature, value, float(bins[0].sum())))
    return scores, skipped


def _compute_data_drift(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    method = METHODS[request.drift_method]
    current = _Histograms.from_samples(answers[0].select(request), "feature", reference=False)
    reference = _Histograms.from_samples(answers[1].select(request), "feature", reference=True)
    scores, skipped = _histogram_scores(
        method, current, reference, lambda version, feature: f"feature {feature!r}", FEATURE_REFERENCE
    )

    # Categorical features: counts per category against the reference shares.
    categories_now = _categories(answers[2].select(request), reference=False)
    categories_ref = _categories(answers[3].select(request), reference=True)
    for (version, feature), seen in sorted(categories_now.items()):
        ref_shares = categories_ref.get((version, feature))
        if not ref_shares:
            skipped.append(f"feature {feature!r} has no {CATEGORY_REFERENCE}")
            continue
        names = sorted(set(seen) | set(ref_shares))
        current_counts = np.array([max(seen.get(name, 0.0), 0.0) for name in names])
        reference_shares = np.array([max(ref_shares.get(name, 0.0), 0.0) for name in names])
        value = _score(method, reference_shares, current_counts)
        if isinstance(value, str):
            skipped.append(f"feature {feature!r}: {value}")
            continue
        scores.append(_Score(version, feature, value, float(current_counts.sum())))
    return _pick(request, method, scores, skipped, answers[4] if request.auto_threshold else None)


def _compute_prediction_drift(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    method = METHODS[request.drift_method]
    current = _Histograms.from_samples(answers[0].select(request), None, reference=False)
    reference = _Histograms.from_samples(answers[1].select(request), None, reference=True)
    scores, skipped = _histogram_scores(
        method, current, reference, lambda version, feature: f"version {version!r}", PREDICTION_REFERENCE
    )
    return _pick(request, method, scores, skipped, answers[2] if request.auto_threshold else None)
