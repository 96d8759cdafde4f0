"""dataDrift and predictionDrift over the whole fleet: summed bucket and category counts against the reference
proportions the sidecar exports, scored with the policy's ``method``.

Always per version, because each version's bucket bounds are its own reference quantiles and summing buckets
with different bounds would be meaningless. The value is the worst feature's score (over versions too); each
feature is judged at the rows it actually has in the window (`modelmonitor.stats.window_null`), and with
``threshold: auto`` the worst is the one with the smallest p-value, compared with its own threshold.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from modelmonitor.adapters.prometheus import Sample
from modelmonitor.metricnames import (
    CATEGORY_COUNT,
    CATEGORY_REFERENCE,
    FEATURE_REFERENCE,
    FEATURE_VALUE,
    PREDICTION_FEATURE,
    PREDICTION_REFERENCE,
    PREDICTION_SCORE,
)
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, describe, values
from modelmonitor.signals.request import FLEET_DRIFT_METHODS, SignalRequest
from modelmonitor.stats.window_null import WindowTest, benjamini_hochberg, probit_of_p_value, window_test

SIGNALS = ("dataDrift", "predictionDrift")


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan | Measurement:
    """Current counts and reference ratios (numerical, then categorical). ``threshold: auto`` needs nothing
    more: the threshold follows from the reference ratios and the rows in the window."""
    if request.drift_method not in FLEET_DRIFT_METHODS:
        return Measurement.invalid(
            f"drift method {request.drift_method!r}: fleet drift is computed from summed bucket counts against "
            f"the reference's proportions; expected one of {', '.join(FLEET_DRIFT_METHODS)}"
        )
    if request.signal == "dataDrift":
        buckets, categories = grouping.select(FEATURE_VALUE + "_bucket"), grouping.select(CATEGORY_COUNT)
        return Plan(
            (
                f"sum by ({grouping.by('feature', 'le')}) (increase({buckets}[{window}]))",
                f"max by ({grouping.by('feature', 'le')}) ({grouping.select(FEATURE_REFERENCE)})",
                f"sum by ({grouping.by('feature', 'category')}) (increase({categories}[{window}]))",
                f"max by ({grouping.by('feature', 'category')}) ({grouping.select(CATEGORY_REFERENCE)})",
            ),
            _compute_data_drift,
        )
    return Plan(
        (
            f"sum by ({grouping.by('le')}) (increase({grouping.select(PREDICTION_SCORE + '_bucket')}[{window}]))",
            f"max by ({grouping.by('le')}) ({grouping.select(PREDICTION_REFERENCE)})",
        ),
        _compute_prediction_drift,
    )


@dataclass
class _Score:
    """The window of one feature of one version: its reference proportions and current counts per bin."""

    version: str
    feature: str
    reference: np.ndarray
    counts: np.ndarray

    @property
    def observations(self) -> float:
        """Rows of this feature in the window."""
        return float(self.counts.sum())


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


def _check(reference: np.ndarray, current: np.ndarray) -> str | None:
    if current.sum() <= 0:
        return "no observations in the window"
    if reference.sum() <= 0:
        return "an empty reference"
    return None


#: Drifting features named in a status message, Event and alert (the rest are counted).
MAX_FEATURES_LISTED = 5


@dataclass(frozen=True)
class FeatureTest:
    """One feature of one version, judged at the rows it has in the window."""

    version: str
    feature: str
    test: WindowTest

    @property
    def where(self) -> str:
        """``feature 'age'`` or ``the prediction``, for messages."""
        return "the prediction" if self.feature == PREDICTION_FEATURE else f"feature {self.feature!r}"


def _pick(request: SignalRequest, scores: list[_Score], skipped: list[str]) -> Measurement:
    """Judge every feature at its own window size (`modelmonitor.stats.window_null`), then report them.

    The policy's false-alarm rate is split over the features compared (Bonferroni), so with ``threshold: auto``
    a drift-free model breaches at most at that rate.
    """
    sparse = [score for score in scores if score.observations < request.min_samples]
    if sparse and len(sparse) < len(scores):
        # Leave sparse features out, unless all are sparse: then the engine's minSamples reports NoData.
        skipped = [*skipped, *(f"feature {s.feature!r}: {s.observations:.0f} observations" for s in sparse)]
        scores = [score for score in scores if score.observations >= request.min_samples]
    tests: list[FeatureTest] = []
    for score in scores:
        rate = request.false_alarm_rate / len(scores)
        try:
            test = window_test(request.drift_method, score.reference, score.counts, false_alarm_rate=rate)
        except ValueError as problem:
            skipped.append(f"feature {score.feature!r}: {problem}")
            continue
        tests.append(FeatureTest(score.version, score.feature, test))
    return drift_measurement(request, tests, skipped)


def drift_measurement(request: SignalRequest, tests: Sequence[FeatureTest], skipped: Sequence[str]) -> Measurement:
    """The measurement of a drift policy from its features' window tests (each at the policy's rate divided by
    the features compared), and why other features were skipped.

    The value is the worst feature's score (over versions too): with ``threshold: auto`` the one with the
    smallest p-value, whose threshold (at its rows) is the policy's; otherwise the highest score.
    Benjamini-Hochberg at the policy's rate names the drifting features (the first few, most significant first).
    ``standardized`` is the evidence of the window on a standard normal scale, for sequential detection.
    """
    if not tests:
        why = "; ".join(skipped[:5]) if skipped else "no feature histograms"
        return Measurement.no_data(
            f"{request.signal}: nothing to compare for {describe(request)} over {request.window}: {why}"
        )
    rate = request.false_alarm_rate
    compared = len(tests)
    if request.auto_threshold:
        worst = min(tests, key=lambda t: (t.test.p_value, -t.test.score / max(t.test.threshold, 1e-300)))
    else:
        worst = max(tests, key=lambda t: t.test.score)
    test = worst.test
    detail = f"method {request.drift_method}: {test.score:.4g} in {worst.where} (version {worst.version!r})"
    if request.auto_threshold:
        detail += (
            f", threshold {test.threshold:.4g} for its {test.rows} rows (false-alarm rate {_rate(rate)} over "
            f"{compared} compared)"
        )
    drifting = benjamini_hochberg([t.test.p_value for t in tests], rate)
    listed = sorted((t for t, chosen in zip(tests, drifting, strict=True) if chosen), key=lambda t: t.test.p_value)
    if listed:
        names = ", ".join(
            f"{t.where.removeprefix('feature ')} {t.test.score:.4g} (threshold {t.test.threshold:.4g}, "
            f"{t.test.rows} rows, p {t.test.p_value:.2g})"
            for t in listed[:MAX_FEATURES_LISTED]
        )
        more = f" and {len(listed) - MAX_FEATURES_LISTED} more" if len(listed) > MAX_FEATURES_LISTED else ""
        detail += f"; drifting (Benjamini-Hochberg at {_rate(rate)}): {names}{more}"
    detail += f"; {compared} compared over {request.window}"
    if skipped:
        detail += f", {len(skipped)} skipped ({'; '.join(skipped[:3])})"
    measurement = values([test.score], test.rows, detail, threshold=test.threshold if request.auto_threshold else None)
    # The smallest p-value adjusted for the number of features compared (Sidak) is uniform without drift; its
    # probit is N(0, 1).
    smallest = min(t.test.p_value for t in tests)
    adjusted = -math.expm1(compared * math.log1p(-min(smallest, 1.0 - 1e-16)))
    return replace(measurement, standardized=probit_of_p_value(adjusted))


def _rate(rate: float) -> str:
    return f"{rate * 100:.3g}%"


def _histogram_scores(
    current: _Histograms,
    reference: _Histograms,
    subject: Callable[[str, str], str],
    reference_metric: str,
) -> tuple[list[_Score], list[str]]:
    """The bins of every (version, feature) histogram with its reference, and why the others were
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
        problem = _check(bins[1], bins[0])
        if problem is not None:
            skipped.append(f"{what}: {problem}")
            continue
        scores.append(_Score(version, feature, bins[1], bins[0]))
    return scores, skipped


def _compute_data_drift(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    current = _Histograms.from_samples(answers[0].select(request), "feature", reference=False)
    reference = _Histograms.from_samples(answers[1].select(request), "feature", reference=True)
    scores, skipped = _histogram_scores(
        current, reference, lambda version, feature: f"feature {feature!r}", FEATURE_REFERENCE
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
        problem = _check(reference_shares, current_counts)
        if problem is not None:
            skipped.append(f"feature {feature!r}: {problem}")
            continue
        scores.append(_Score(version, feature, reference_shares, current_counts))
    return _pick(request, scores, skipped)


def _compute_prediction_drift(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    current = _Histograms.from_samples(answers[0].select(request), None, reference=False)
    reference = _Histograms.from_samples(answers[1].select(request), None, reference=True)
    scores, skipped = _histogram_scores(
        current, reference, lambda version, feature: f"version {version!r}", PREDICTION_REFERENCE
    )
    return _pick(request, scores, skipped)
