"""Built-in signals and `query:` policies, measured for all monitors at once.

Input: the (monitor, policy) requests of one evaluation cycle, from ALL monitors that share a Prometheus.
Output: one :class:`SignalResult` per request: values, a sample count, the queries used, or why there is no
value (NoData) or no measurement (Error, Invalid).

Batched: the built-in signals issue one query per (signal kind, window, grouping) for every model at once,
grouped ``by (namespace, model)`` (``by (namespace, model, version)`` for monitors that name a version), and the
answer is split back per monitor here. Queries per cycle grow with the number of distinct signal kinds and
windows, not with the number of monitors. `query:` policies are rendered per monitor and cost one query each.

Label requirement: the sidecar's series must carry a ``namespace`` label with the pod's namespace, which
Prometheus' Kubernetes service discovery adds as a target label (``__meta_kubernetes_namespace`` relabelled to
``namespace``, as the Prometheus Operator and the usual ``kubernetes-pods`` job do). The ``cpu`` and ``memory``
signals also need a ``pod`` target label, to join cAdvisor's container metrics with the sidecar's series.

Never a made-up value: an absent series is NoData with the reason, never 0 (KEDA's ``ignoreNullValues`` turned
an empty answer into 0 and scaled production down during a Prometheus outage). A ratio's numerator counts as 0
only when its denominator proves the sidecar was scraped in the window (a labelled counter such as
``modelmonitor_feature_missing_total{feature="age"}`` does not exist until the first missing value). A failed
query is an Error for every request that needed it, never NoData.

The metric names are those of docs/metrics.md; change one side, change the other.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np

from modelmonitor.adapters.prometheus import PrometheusQuerier, QueryError, QueryResult, Sample
from modelmonitor.api.spec import DRIFT_SIGNALS, SIGNALS
from modelmonitor.promql import PromQLTemplateError, quote, render_template, validate_window
from modelmonitor.stats.drift import METHODS, DriftMethod

__all__ = [
    "BUILTIN_SIGNALS",
    "DRIFT_SIGNALS",
    "FLEET_DRIFT_METHODS",
    "PREDICTION_FEATURE",
    "CycleMeasurements",
    "MeasurementStatus",
    "SignalRequest",
    "SignalResult",
    "measure",
]

# --- the sidecar's metric names (docs/metrics.md) ---------------------------------------------------------
REQUESTS = "modelmonitor_requests_total"
REQUEST_ERRORS = "modelmonitor_request_errors_total"
REQUEST_DURATION = "modelmonitor_request_duration_seconds"
FEATURE_VALUE = "modelmonitor_feature_value"
FEATURE_REFERENCE = "modelmonitor_feature_reference_ratio"
CATEGORY_COUNT = "modelmonitor_feature_category_total"
CATEGORY_REFERENCE = "modelmonitor_feature_category_reference_ratio"
FEATURE_MISSING = "modelmonitor_feature_missing_total"
SCHEMA_VIOLATIONS = "modelmonitor_schema_violations_total"
FEATURE_OBSERVATIONS = "modelmonitor_feature_observations_total"
PREDICTION_SCORE = "modelmonitor_prediction_score"
PREDICTION_REFERENCE = "modelmonitor_prediction_reference_ratio"
LABELED_PREDICTIONS = "modelmonitor_labeled_predictions_total"
DRIFT_THRESHOLD = "modelmonitor_drift_threshold"
# cAdvisor (kubelet) container metrics, for cpu and memory.
CONTAINER_CPU = "container_cpu_usage_seconds_total"
CONTAINER_MEMORY = "container_memory_working_set_bytes"

#: The ``feature`` label value under which the sidecar exports the prediction score's drift threshold in
#: ``modelmonitor_drift_threshold`` (read by ``predictionDrift`` with ``threshold: auto``).
PREDICTION_FEATURE = "__prediction__"

#: Drift methods computable from what the sidecar exports: current counts against reference *proportions*
#: (``..._reference_ratio``). Only methods that compare proportions qualify; the chi-square homogeneity test
#: needs the reference's own sample size, and KS / Wasserstein need raw values.
FLEET_DRIFT_METHODS: tuple[str, ...] = tuple(
    name for name in ("psi", "jensen_shannon", "hellinger", "linf") if name in METHODS
)

LATENCY_QUANTILES: Mapping[str, float] = {"latencyP50": 0.5, "latencyP95": 0.95, "latencyP99": 0.99}
QUALITY_SIGNALS = ("accuracy", "precision", "recall", "f1")
# The signal names are the API's (one list: the CRD enum and the PromQL plans below must agree; a unit test checks
# that every one of them has a plan).
BUILTIN_SIGNALS: tuple[str, ...] = SIGNALS


# --- requests and results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalRequest:
    """One policy of one monitor to measure in this cycle.

    Exactly one of ``signal`` (a built-in signal name) and ``query`` (a PromQL template) is set.
    """

    namespace: str
    monitor: str
    policy: str
    model: str
    window: str
    signal: str | None = None
    query: str | None = None
    #: Restrict to one model version; ``None`` measures all versions of the model together.
    version: str | None = None
    #: ``threshold: auto``: resolve the threshold from ``modelmonitor_drift_threshold`` (drift signals only).
    auto_threshold: bool = False
    #: Drift method for dataDrift / predictionDrift, one of ``FLEET_DRIFT_METHODS``.
    drift_method: str = "psi"
    #: The policy's minSamples. The engine applies it to ``samples``; fairnessGap and the drift signals also
    #: leave out the groups / features with fewer observations, so one sparse group or feature (``__other__``,
    #: a mostly-missing column) neither blocks the measurement nor dominates it with noise.
    min_samples: int = 0


class MeasurementStatus(StrEnum):
    """What a :class:`SignalResult` holds. The operator maps it onto the policy engine's outcomes."""

    VALUES = "Values"  # one or more numbers (the engine applies the condition, `reduce` and minSamples)
    NO_DATA = "NoData"  # Prometheus answered, but there is nothing to measure (absent series, NaN, no traffic)
    ERROR = "Error"  # no measurement: Prometheus unreachable, HTTP error, timeout, PromQL error, bad answer
    INVALID = "Invalid"  # the request cannot be measured as written (bad window, template, method)


@dataclass(frozen=True)
class SignalResult:
    """The measurement of one :class:`SignalRequest`."""

    status: MeasurementStatus
    #: The numbers: one per series the monitor selects (several where several versions or pods answer).
    values: tuple[float, ...] = ()
    #: The labels of each value's series, parallel to ``values``, as sorted (name, value) pairs; empty pairs for
    #: a value computed here from several series (an accuracy, a drift score).
    series_labels: tuple[tuple[tuple[str, str], ...], ...] = ()
    #: Observations behind the value (labeled predictions, requests, rows); ``None`` when not meaningful.
    samples: int | None = None
    #: The threshold resolved from ``threshold: auto`` (drift signals only), else ``None``.
    threshold: float | None = None
    #: The main PromQL text actually sent (for Events and status messages).
    query: str = ""
    #: Every PromQL text this measurement used, main query first.
    queries: tuple[str, ...] = ()
    #: Why NoData / Error / Invalid, or what the value is made of (e.g. which feature drifted most).
    reason: str = ""
    error: QueryError | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class CycleMeasurements:
    """Everything measured in one cycle, and what it cost."""

    results: Mapping[SignalRequest, SignalResult]
    #: Distinct queries sent for built-in signals (independent of the number of monitors).
    batched_queries: int
    #: Queries sent for `query:` policies (one per policy).
    template_queries: int
    #: Queries that came back as errors.
    failed_queries: int
    #: Wall time spent waiting for Prometheus, summed over queries (they run in parallel).
    query_seconds: float = 0.0

    @property
    def queries(self) -> int:
        """Total queries sent this cycle."""
        return self.batched_queries + self.template_queries


# --- measuring --------------------------------------------------------------------------------------------


def measure(
    requests: Iterable[SignalRequest],
    prometheus: PrometheusQuerier,
    *,
    at: datetime | None = None,
    max_parallel: int = 4,
) -> CycleMeasurements:
    """Measure every request against one Prometheus, built-in signals batched across monitors.

    All queries are evaluated at the same instant ``at`` (now when ``None``) so that a ratio computed from two
    queries compares the same window. Up to ``max_parallel`` queries are in flight at once. Blocking: call
    from a worker thread in async code.
    """
    at = at if at is not None else datetime.now(UTC)
    plans: dict[SignalRequest, _Plan | SignalResult] = {}
    batched: dict[str, None] = {}
    templated: dict[str, None] = {}
    for request in requests:
        if request in plans:
            continue
        planned = _plan(request)
        plans[request] = planned
        if isinstance(planned, _Plan):
            target = templated if request.query is not None else batched
            for text in planned.queries:
                target.setdefault(text, None)

    texts = list(dict.fromkeys([*batched, *templated]))
    answers: dict[str, QueryResult] = {}
    if texts:
        workers = max(1, min(max_parallel, len(texts)))
        if workers == 1:
            for text in texts:
                answers[text] = prometheus.query(text, at=at)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promql") as pool:
                for text, answer in zip(texts, pool.map(lambda q: prometheus.query(q, at=at), texts), strict=True):
                    answers[text] = answer

    indexes = {text: _Index(answer) for text, answer in answers.items()}
    results: dict[SignalRequest, SignalResult] = {}
    for request, planned in plans.items():
        if isinstance(planned, SignalResult):
            results[request] = planned
            continue
        failed = [answers[text] for text in planned.queries if not answers[text].ok]
        warnings = tuple(dict.fromkeys(w for text in planned.queries for w in answers[text].warnings))
        if failed:
            error = failed[0].error
            assert error is not None
            results[request] = SignalResult(
                MeasurementStatus.ERROR,
                query=planned.queries[0],
                queries=planned.queries,
                reason=f"could not measure: {error}",
                error=error,
                warnings=warnings,
            )
            continue
        result = planned.compute(request, [indexes[text] for text in planned.queries])
        results[request] = _with_queries(result, planned.queries, warnings)

    return CycleMeasurements(
        results=results,
        batched_queries=sum(1 for text in batched if text not in templated),
        template_queries=len(templated),
        failed_queries=sum(1 for answer in answers.values() if not answer.ok),
        query_seconds=sum(answer.elapsed_seconds for answer in answers.values()),
    )


# --- planning: which queries a request needs --------------------------------------------------------------

Compute = Callable[[SignalRequest, Sequence["_Index"]], SignalResult]


@dataclass(frozen=True)
class _Plan:
    queries: tuple[str, ...]
    compute: Compute


def _plan(request: SignalRequest) -> _Plan | SignalResult:
    """The queries a request needs and how to turn their answers into its result; or why it is invalid."""
    if (request.signal is None) == (request.query is None):
        return _invalid("set exactly one of signal and query")
    try:
        window = validate_window(request.window)
    except ValueError as problem:
        return _invalid(str(problem))
    if request.min_samples < 0:
        return _invalid(f"minSamples {request.min_samples}: expected >= 0")
    if request.query is not None:
        values = {
            "model": request.model,
            "namespace": request.namespace,
            "version": request.version,
            "monitor": request.monitor,
            "window": window,
        }
        try:
            text = render_template(request.query, values)
        except PromQLTemplateError as problem:
            return _invalid(str(problem))
        return _Plan((text,), _compute_template)

    signal = request.signal
    if signal not in BUILTIN_SIGNALS:
        return _invalid(f"signal {signal!r}: expected one of {', '.join(BUILTIN_SIGNALS)}")
    if request.auto_threshold and signal not in DRIFT_SIGNALS:
        return _invalid(f"threshold auto: only {' and '.join(DRIFT_SIGNALS)} have a calibrated threshold")
    by = "namespace, model, version" if request.version is not None else "namespace, model"
    w = window

    if signal in QUALITY_SIGNALS:
        return _Plan((f"sum by ({by}, outcome) (increase({LABELED_PREDICTIONS}[{w}]))",), _compute_quality)
    if signal == "fairnessGap":
        return _Plan((f"sum by ({by}, group, outcome) (increase({LABELED_PREDICTIONS}[{w}]))",), _compute_fairness)
    if signal == "errorRate":
        return _Plan(
            (
                f"sum by ({by}) (increase({REQUEST_ERRORS}[{w}]))",
                f"sum by ({by}) (increase({REQUESTS}[{w}]))",
            ),
            _compute_error_rate,
        )
    if signal in LATENCY_QUANTILES:
        q = LATENCY_QUANTILES[signal]
        return _Plan(
            (
                f"histogram_quantile({q}, sum by ({by}, le) (rate({REQUEST_DURATION}_bucket[{w}])))",
                f"sum by ({by}) (increase({REQUEST_DURATION}_count[{w}]))",
            ),
            _compute_latency,
        )
    if signal == "missingRate":
        return _Plan(
            (
                f"sum by ({by}, feature) (increase({FEATURE_MISSING}[{w}]))",
                f"sum by ({by}, feature) (increase({FEATURE_OBSERVATIONS}[{w}]))",
            ),
            _compute_feature_rate,
        )
    if signal == "schemaViolationRate":
        return _Plan(
            (
                f"sum by ({by}, feature) (increase({SCHEMA_VIOLATIONS}[{w}]))",
                f"sum by ({by}, feature) (increase({FEATURE_OBSERVATIONS}[{w}]))",
            ),
            _compute_feature_rate,
        )
    if signal in ("cpu", "memory"):
        # cAdvisor series know pods, not models: join them with an always-present sidecar series of the same
        # pod (the error counter exists from the sidecar's start) to learn the pod's model. The sidecar side is
        # the "many" side, so a pod serving several models gives each of them the pod's usage instead of
        # failing the whole fleet's query with a many-to-many match error.
        pod_model = f"group by (namespace, pod, model, version) ({REQUEST_ERRORS})"
        containers = '{container!="", container!="POD"}'
        if signal == "cpu":
            usage = f"sum by (namespace, pod) (rate({CONTAINER_CPU}{containers}[{w}]))"
        else:
            usage = f"sum by (namespace, pod) (max_over_time({CONTAINER_MEMORY}{containers}[{w}]))"
        return _Plan((f"{pod_model} * on (namespace, pod) group_left () {usage}",), _compute_pods)

    # dataDrift / predictionDrift: always per version, because each version's bucket bounds are its own
    # reference quantiles and summing buckets with different bounds would be meaningless.
    if request.drift_method not in FLEET_DRIFT_METHODS:
        return _invalid(
            f"drift method {request.drift_method!r}: fleet drift is computed from summed bucket counts against "
            f"the reference's proportions; expected one of {', '.join(FLEET_DRIFT_METHODS)}"
        )
    keys = "namespace, model, version"
    thresholds = (f"max by ({keys}, feature, method) ({DRIFT_THRESHOLD})",) if request.auto_threshold else ()
    if signal == "dataDrift":
        return _Plan(
            (
                f"sum by ({keys}, feature, le) (increase({FEATURE_VALUE}_bucket[{w}]))",
                f"max by ({keys}, feature, le) ({FEATURE_REFERENCE})",
                f"sum by ({keys}, feature, category) (increase({CATEGORY_COUNT}[{w}]))",
                f"max by ({keys}, feature, category) ({CATEGORY_REFERENCE})",
                *thresholds,
            ),
            _compute_data_drift,
        )
    return _Plan(
        (
            f"sum by ({keys}, le) (increase({PREDICTION_SCORE}_bucket[{w}]))",
            f"max by ({keys}, le) ({PREDICTION_REFERENCE})",
            *thresholds,
        ),
        _compute_prediction_drift,
    )


# --- splitting answers per monitor ------------------------------------------------------------------------


class _Index:
    """One answer's samples by (namespace, model), built once and shared by every request that reads it."""

    def __init__(self, answer: QueryResult) -> None:
        self.answer = answer
        self._by_model: dict[tuple[str, str], list[Sample]] = defaultdict(list)
        for sample in answer.samples:
            labels = sample.labels
            self._by_model[(labels.get("namespace", ""), labels.get("model", ""))].append(sample)

    def select(self, request: SignalRequest) -> list[Sample]:
        """The samples of the request's model (and version, when it names one)."""
        samples = self._by_model.get((request.namespace, request.model), [])
        if request.version is None:
            return samples
        return [sample for sample in samples if sample.labels.get("version") == request.version]

    def all_values(self) -> list[Sample]:
        """Every sample (for `query:` answers, which belong to one monitor)."""
        return list(self.answer.samples)


def _describe(request: SignalRequest) -> str:
    """The monitor's selection in PromQL terms, for NoData reasons."""
    parts = [f"namespace={quote(request.namespace)}", f"model={quote(request.model)}"]
    if request.version is not None:
        parts.append(f"version={quote(request.version)}")
    return "{" + ", ".join(parts) + "}"


def _no_series(request: SignalRequest, metric: str) -> SignalResult:
    return SignalResult(
        MeasurementStatus.NO_DATA,
        reason=(
            f"no {metric} series for {_describe(request)} over {request.window} (is the sidecar scraped, and do "
            "its series carry the namespace label from service discovery?)"
        ),
    )


def _no_data(reason: str) -> SignalResult:
    return SignalResult(MeasurementStatus.NO_DATA, reason=reason)


def _invalid(reason: str) -> SignalResult:
    return SignalResult(MeasurementStatus.INVALID, reason=reason)


def _values(
    values: Sequence[float],
    samples: int | None,
    reason: str = "",
    threshold: float | None = None,
    labels: Sequence[Mapping[str, str]] | None = None,
) -> SignalResult:
    series_labels = tuple(tuple(sorted(mapping.items())) for mapping in labels) if labels is not None else None
    return SignalResult(
        MeasurementStatus.VALUES,
        values=tuple(values),
        series_labels=series_labels if series_labels is not None else tuple(() for _ in values),
        samples=samples,
        reason=reason,
        threshold=threshold,
    )


def _with_queries(result: SignalResult, queries: tuple[str, ...], warnings: tuple[str, ...]) -> SignalResult:
    return SignalResult(
        status=result.status,
        values=result.values,
        series_labels=result.series_labels,
        samples=result.samples,
        threshold=result.threshold,
        query=queries[0] if queries else "",
        queries=queries,
        reason=result.reason,
        error=result.error,
        warnings=warnings,
    )


def _count(value: float) -> int:
    """A sample count from an extrapolated ``increase()`` (a float such as 199.7)."""
    return max(0, round(value))


def _sum_by(samples: Iterable[Sample], label: str) -> dict[str, float]:
    """Sum sample values per value of ``label`` (across versions, for monitors that name none)."""
    totals: dict[str, float] = defaultdict(float)
    for sample in samples:
        if not math.isnan(sample.value):
            totals[sample.labels.get(label, "")] += sample.value
    return dict(totals)


# --- the signals ------------------------------------------------------------------------------------------


def _compute_template(request: SignalRequest, answers: Sequence[_Index]) -> SignalResult:
    samples = answers[0].all_values()
    if not samples:
        return _no_data("the query returned no series")
    usable = [sample for sample in samples if not math.isnan(sample.value)]
    if not usable:
        return _no_data(f"the query returned only NaN ({len(samples)} series)")
    return _values([s.value for s in usable], None, labels=[s.labels for s in usable])


def _confusion(samples: Iterable[Sample]) -> dict[str, float] | None:
    """tp/fp/tn/fn summed over the selection; ``None`` when no labeled prediction series exists at all.

    An outcome absent while another is present is 0: its counter child is created on the first increment.
    """
    by_outcome = _sum_by(samples, "outcome")
    if not by_outcome:
        return None
    return {outcome: by_outcome.get(outcome, 0.0) for outcome in ("tp", "fp", "tn", "fn")}


def _compute_quality(request: SignalRequest, answers: Sequence[_Index]) -> SignalResult:
    counts = _confusion(answers[0].select(request))
    if counts is None:
        return _no_series(request, LABELED_PREDICTIONS)
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    # The sample count is the ratio's denominator, so minSamples guards exactly what the value rests on.
    signal = request.signal
    if signal == "accuracy":
        numerator, denominator, what = tp + tn, tp + fp + tn + fn, "labeled predictions"
    elif signal == "precision":
        numerator, denominator, what = tp, tp + fp, "positive predictions with a label"
    elif signal == "recall":
        numerator, denominator, what = tp, tp + fn, "labeled positives"
    else:
        numerator, denominator, what = 2 * tp, 2 * tp + fp + fn, "tp + fp + fn"
    samples = tp + fp + fn if signal == "f1" else denominator
    if denominator <= 0:
        return _no_data(f"{signal}: no {what} for {_describe(request)} over {request.window}")
    return _values(
        [numerator / denominator],
        _count(samples),
        f"tp={tp:.0f} fp={fp:.0f} tn={tn:.0f} fn={fn:.0f} over {request.window}",
    )


def _compute_fairness(request: SignalRequest, answers: Sequence[_Index]) -> SignalResult:
    per_group: dict[str, list[Sample]] = defaultdict(list)
    for sample in answers[0].select(request):
        per_group[sample.labels.get("group", "")].append(sample)
    if not per_group:
        return _no_series(request, LABELED_PREDICTIONS)
    rates: dict[str, float] = {}
    sizes: dict[str, float] = {}
    left_out: list[str] = []
    for group, samples in sorted(per_group.items()):
        counts = _confusion(samples)
        assert counts is not None
        total = sum(counts.values())
        if total <= 0:
            continue
        if total < request.min_samples:
            left_out.append(f"{group!r} ({total:.0f})")
            continue
        rates[group] = (counts["tp"] + counts["fp"]) / total
        sizes[group] = total
    if len(rates) < 2:
        small = f"; left out for fewer than {request.min_samples}: {', '.join(left_out)}" if left_out else ""
        return _no_data(
            f"fairnessGap: labeled predictions from {len(rates)} group(s) over {request.window}; "
            f"a gap needs at least two{small}"
        )
    highest = max(rates, key=rates.__getitem__)
    lowest = min(rates, key=rates.__getitem__)
    smallest = min(sizes, key=sizes.__getitem__)
    detail = (
        f"positive-prediction rate {rates[highest]:.4g} in group {highest!r} vs {rates[lowest]:.4g} in group "
        f"{lowest!r}; smallest group {smallest!r} has {sizes[smallest]:.0f} labeled predictions"
    )
    if left_out:
        detail += f"; left out for fewer than {request.min_samples}: {', '.join(left_out)}"
    # The smallest group compared decides how far the gap can be trusted.
    return _values([rates[highest] - rates[lowest]], _count(sizes[smallest]), detail)


def _compute_error_rate(request: SignalRequest, answers: Sequence[_Index]) -> SignalResult:
    requests_seen = [s.value for s in answers[1].select(request) if not math.isnan(s.value)]
    if not requests_seen:
        return _no_series(request, REQUESTS)
    total = sum(requests_seen)
    if total <= 0:
        return _no_data(f"errorRate: no requests for {_describe(request)} over {request.window}")
    errors = sum(s.value for s in answers[0].select(request) if not math.isnan(s.value))
    return _values([errors / total], _count(total), f"{errors:.0f} errors in {total:.0f} requests")


def _compute_latency(request: SignalRequest, answers: Sequence[_Index]) -> SignalResult:
    quantiles = answers[0].select(request)
    if not quantiles:
        return _no_series(request, f"{REQUEST_DURATION}_bucket")
    usable = [s for s in quantiles if not math.isnan(s.value)]
    if not usable:
        return _no_data(f"{request.signal}: no requests for {_describe(request)} over {request.window}")
    count = sum(s.value for s in answers[1].select(request) if not math.isnan(s.value))
    return _values([s.value for s in usable], _count(count), labels=[s.labels for s in usable])


def _compute_feature_rate(request: SignalRequest, answers: Sequence[_Index]) -> SignalResult:
    observations = _sum_by(answers[1].select(request), "feature")
    if not observations:
        return _no_series(request, FEATURE_OBSERVATIONS)
    rows = max(observations.values())
    if rows <= 0:
        return _no_data(f"{request.signal}: no rows for {_describe(request)} over {request.window}")
    numerators = _sum_by(answers[0].select(request), "feature")
    rates: dict[str, float] = {}
    for feature, seen in observations.items():
        if seen > 0:
            rates[feature] = numerators.get(feature, 0.0) / seen
    # Violations of features the profile does not know (kind unknown_feature) have no observation counter of
    # their own: count them per row.
    for feature, count in numerators.items():
        if feature not in observations:
            rates[feature] = count / rows
    worst = max(rates, key=rates.__getitem__)
    return _values(
        [rates[worst]],
        _count(rows),
        f"highest in feature {worst!r}: {numerators.get(worst, 0.0):.0f} of "
        f"{observations.get(worst, rows):.0f} over {request.window}",
    )


def _compute_pods(request: SignalRequest, answers: Sequence[_Index]) -> SignalResult:
    pods = answers[0].select(request)
    if not pods:
        return _no_data(
            f"{request.signal}: no {CONTAINER_CPU if request.signal == 'cpu' else CONTAINER_MEMORY} series "
            f"joined to {_describe(request)} (needs cAdvisor metrics in this Prometheus and a pod label on the "
            "sidecar's series)"
        )
    usable = [s for s in pods if not math.isnan(s.value)]
    if not usable:
        return _no_data(f"{request.signal}: only NaN for {_describe(request)}")
    names = ", ".join(sorted(s.labels.get("pod", "?") for s in usable))
    return _values([s.value for s in usable], None, f"one value per pod: {names}", labels=[s.labels for s in usable])


# --- drift ------------------------------------------------------------------------------------------------


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
    """Cumulative counts by ``le`` per (version, feature)."""

    cumulative: dict[tuple[str, str], dict[float, float]] = field(default_factory=lambda: defaultdict(dict))

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], feature_label: str | None) -> _Histograms:
        histograms = cls()
        for sample in samples:
            feature = sample.labels.get(feature_label, "") if feature_label else PREDICTION_FEATURE
            try:
                bound = float(sample.labels.get("le", ""))
            except ValueError:
                continue
            key = (sample.labels.get("version", ""), feature)
            histograms.cumulative[key][bound] = sample.value
        return histograms


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


def _thresholds(request: SignalRequest, index: _Index) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for sample in index.select(request):
        if sample.labels.get("method") == request.drift_method and math.isfinite(sample.value):
            found[(sample.labels.get("version", ""), sample.labels.get("feature", ""))] = sample.value
    return found


def _pick(
    request: SignalRequest,
    method: DriftMethod,
    scores: list[_Score],
    skipped: list[str],
    threshold_query: _Index | None,
) -> SignalResult:
    """Report the worst feature (over versions too): max score, or max score/threshold with threshold auto."""
    sparse = [score for score in scores if score.observations < request.min_samples]
    if sparse and len(sparse) < len(scores):
        # Leave sparse features out, unless all are sparse: then the engine's minSamples reports NoData.
        skipped = [*skipped, *(f"feature {s.feature!r}: {s.observations:.0f} observations" for s in sparse)]
        scores = [score for score in scores if score.observations >= request.min_samples]
    if not scores:
        why = "; ".join(skipped[:5]) if skipped else "no feature histograms"
        return _no_data(f"{request.signal}: nothing to compare for {_describe(request)} over {request.window}: {why}")
    higher = method.direction == "higher_is_drift"
    if threshold_query is not None:
        known = _thresholds(request, threshold_query)
        for score in scores:
            score.threshold = known.get((score.version, score.feature))
        scores = [score for score in scores if score.threshold is not None]
        if not scores:
            return _no_data(
                f"{request.signal}: threshold auto, but no {DRIFT_THRESHOLD}{{method={quote(request.drift_method)}}} "
                f"for the measured features of {_describe(request)}"
            )

        def badness(score: _Score) -> float:
            assert score.threshold is not None
            if higher:
                return score.score / score.threshold if score.threshold > 0 else math.inf
            return score.threshold / score.score if score.score > 0 else math.inf

        worst = max(scores, key=badness)
    else:
        worst = max(scores, key=lambda s: s.score) if higher else min(scores, key=lambda s: s.score)
    detail = f"{request.drift_method} {worst.score:.4g} in feature {worst.feature!r} (version {worst.version!r})"
    if worst.threshold is not None:
        detail += f", calibrated threshold {worst.threshold:.4g}"
    detail += f"; {len(scores)} feature(s) compared"
    if skipped:
        detail += f", {len(skipped)} skipped"
    return _values([worst.score], _count(worst.observations), detail, threshold=worst.threshold)


def _compute_data_drift(request: SignalRequest, answers: Sequence[_Index]) -> SignalResult:
    method = METHODS[request.drift_method]
    current = _Histograms.from_samples(answers[0].select(request), "feature")
    reference = _Histograms.from_samples(answers[1].select(request), "feature")
    scores: list[_Score] = []
    skipped: list[str] = []
    for (version, feature), counts in sorted(current.cumulative.items()):
        ref = reference.cumulative.get((version, feature))
        if ref is None:
            skipped.append(f"feature {feature!r} has no {FEATURE_REFERENCE}")
            continue
        bins = _bins(counts, ref)
        if isinstance(bins, str):
            skipped.append(f"feature {feature!r}: {bins}")
            continue
        value = _score(method, bins[1], bins[0])
        if isinstance(value, str):
            skipped.append(f"feature {feature!r}: {value}")
            continue
        scores.append(_Score(version, feature, value, float(bins[0].sum())))

    # Categorical features: counts per category against the reference shares.
    categories_now: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for sample in answers[2].select(request):
        key = (sample.labels.get("version", ""), sample.labels.get("feature", ""))
        if not math.isnan(sample.value):
            categories_now[key][sample.labels.get("category", "")] = sample.value
    categories_ref: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for sample in answers[3].select(request):
        key = (sample.labels.get("version", ""), sample.labels.get("feature", ""))
        if not math.isnan(sample.value):
            categories_ref[key][sample.labels.get("category", "")] = sample.value
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


def _compute_prediction_drift(request: SignalRequest, answers: Sequence[_Index]) -> SignalResult:
    method = METHODS[request.drift_method]
    current = _Histograms.from_samples(answers[0].select(request), None)
    reference = _Histograms.from_samples(answers[1].select(request), None)
    scores: list[_Score] = []
    skipped: list[str] = []
    for (version, feature), counts in sorted(current.cumulative.items()):
        ref = reference.cumulative.get((version, feature))
        if ref is None:
            skipped.append(f"version {version!r} has no {PREDICTION_REFERENCE}")
            continue
        bins = _bins(counts, ref)
        if isinstance(bins, str):
            skipped.append(f"version {version!r}: {bins}")
            continue
        value = _score(method, bins[1], bins[0])
        if isinstance(value, str):
            skipped.append(f"version {version!r}: {value}")
            continue
        scores.append(_Score(version, feature, value, float(bins[0].sum())))
    return _pick(request, method, scores, skipped, answers[2] if request.auto_threshold else None)
