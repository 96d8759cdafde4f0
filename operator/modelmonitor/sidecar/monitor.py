"""The monitor: everything one sidecar knows about the traffic it has seen, updated a batch at a time.

It keeps two kinds of state. **Counters** (requests, feature histograms at the reference bucket bounds, category
counts, missing values, schema violations, predictions, confusion outcomes per group) only ever grow and are
exported as Prometheus counters and histograms, so the fleet view is a sum over replicas. **Windows** (the last
``window_size`` rows of features and predictions, the last joined labels) are fixed-size ring buffers from which the
per-replica drift, quality and fairness gauges are computed at scrape time. Every structure is bounded: memory is
flat however long the sidecar runs.

The same object is the in-process Python API: a model server can create a :class:`Monitor`, call
:meth:`Monitor.log_batch` / :meth:`Monitor.log_events` / :meth:`Monitor.log_labels`, and expose
:meth:`Monitor.collector` on its own Prometheus registry. All methods are thread-safe.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from modelmonitor.sidecar.datafiles import canonical_category
from modelmonitor.sidecar.encode import BatchError, FeatureColumns, FeatureEncoder
from modelmonitor.sidecar.labels import (
    HeldOutcome,
    JoinResults,
    LabelStore,
    Maturity,
    PendingPrediction,
    hold_or_late,
)
from modelmonitor.sidecar.labelstore.memory import MemoryLabelStore
from modelmonitor.sidecar.profile import OTHER, NumericalReference, Profile
from modelmonitor.stats.probability import calibrated, probability_correct

_OUTCOME_CODES = {(1, 1): 0, (1, 0): 1, (0, 0): 2, (0, 1): 3}
"""(predicted positive, label positive) to the confusion outcome's code, an index into ``OUTCOMES``."""

NO_GROUP = "__none__"
"""Group label of a prediction that came without a group attribute."""

DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Latency bucket bounds (seconds): Prometheus' defaults plus 1 ms and 2.5 ms, where model servers live."""

VIOLATION_KINDS = ("type", "range", "unseen_category", "non_finite")
"""Per-feature schema violation kinds; ``unknown_feature`` is counted apart, under feature ``__unknown__``."""


@dataclass(frozen=True)
class MonitorSettings:
    """Bounds and knobs of one monitor. Every size here caps memory or label cardinality."""

    window_size: int | None = None
    """Rows in the drift window; default: the profile's (the size its thresholds were calibrated for)."""
    min_window_rows: int | None = None
    """Rows needed before drift scores are exported; default: the full window (what the thresholds assume)."""
    quality_window: int = 1000
    """Joined labels kept for the per-replica accuracy / precision / recall / F1 and fairness gauges."""
    label_ttl_seconds: float = 3600.0
    """How long a prediction waits for its label before it is counted as expired (the default memory store)."""
    label_capacity: int = 100_000
    """Most predictions waiting for a label; the oldest are expired first (the default memory store)."""
    max_groups: int = 20
    """Distinct group values exported (beyond: ``__other__``), when the profile does not list them."""
    max_classes: int = 50
    """Distinct predicted classes exported (beyond: ``__other__``), when the profile does not list them."""
    latency_buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    """Bucket bounds (seconds) of the latency histogram."""
    min_group_rows: int = 30
    """Rows a group needs in the window before it takes part in a fairness gap (fewer: too noisy to compare)."""
    label_maturities: tuple[Maturity, ...] = ()
    """Maturity ages (``--label-maturity``): each joined label is also counted, under its maturity, when its
    prediction reaches that age, if it joined by then (else it counts as late)."""


@dataclass
class EventBatch:
    """One batch of prediction events in columns, ready to ingest.

    Attributes:
        features: encoded feature values (see :class:`FeatureColumns`).
        request_ids: per event, the id labels will be joined on (None: not joinable).
        predictions: per event, the predicted class or value as sent (None: none).
        scores: per event, the predicted score / probability of the positive class (NaN: none).
        groups: per event, the group attribute value (None: none).
        status: per event, the HTTP status the model answered with (200 for a successful push event).
        latency: per event, the model latency in seconds (NaN: not measured).
    """

    features: FeatureColumns
    request_ids: Sequence[str | None] | None = None
    predictions: Sequence[Any] | npt.NDArray[Any] | None = None
    scores: npt.NDArray[np.float64] | None = None
    groups: Sequence[Any] | None = None
    status: npt.NDArray[np.int64] | None = None
    latency: npt.NDArray[np.float64] | None = None

    @property
    def size(self) -> int:
        """Events in the batch."""
        return self.features.rows


class _Table:
    """Label values of one capped label (groups, classes): fixed first, then first-come up to ``cap``."""

    def __init__(self, fixed: Sequence[str], cap: int, *, reserved: Sequence[str] = ()) -> None:
        self.names: list[str] = [*reserved, *fixed]
        self.codes: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        self.dynamic = not fixed
        self.limit = len(reserved) + (len(fixed) if fixed else cap)
        self.size = self.limit + 1  # + __other__
        self.other = self.limit

    def code(self, name: str) -> int:
        known = self.codes.get(name)
        if known is not None:
            return known
        if self.dynamic and len(self.names) < self.limit:
            self.codes[name] = len(self.names)
            self.names.append(name)
            return self.codes[name]
        return self.other

    def label(self, code: int) -> str:
        return OTHER if code == self.other else self.names[code]


class _Ring:
    """A fixed-size ring buffer of rows; ``view()`` returns the filled rows (in no particular order)."""

    def __init__(self, size: int, width: int | None, dtype: type, fill: float | int) -> None:
        shape = (size,) if width is None else (size, width)
        self.data: npt.NDArray[Any] = np.full(shape, fill, dtype=dtype)
        self.size = size
        self.head = 0
        self.filled = 0

    def push(self, rows: npt.NDArray[Any]) -> None:
        n = rows.shape[0]
        if n == 0:
            return
        if n >= self.size:
            self.data[...] = rows[n - self.size :]
            self.head, self.filled = 0, self.size
            return
        index = (self.head + np.arange(n)) % self.size
        self.data[index] = rows
        self.head = int((self.head + n) % self.size)
        self.filled = min(self.size, self.filled + n)

    def view(self) -> npt.NDArray[Any]:
        return self.data if self.filled == self.size else self.data[: self.filled]


@dataclass(frozen=True)
class Estimate:
    """Sums over scored predictions of their calibrated probability p of a positive label: performance before
    labels arrive (CBPE). Each is a counter, so the fleet's estimates are ratios of sums over replicas."""

    correct: float = 0.0
    """Sum of the probability of being right: p for a positive prediction, 1 - p for a negative one."""
    predictions: int = 0
    """Scored predictions (the estimated accuracy's denominator)."""
    positive_predictions: int = 0
    """Scored predictions that said positive (the estimated precision's denominator)."""
    true_positives: float = 0.0
    """Sum of p over positive predictions: the expected true positives."""
    positives: float = 0.0
    """Sum of p over all scored predictions: the expected positives (the estimated recall's denominator)."""

    def plus(self, other: Estimate) -> Estimate:
        """Both sums added."""
        return Estimate(
            self.correct + other.correct,
            self.predictions + other.predictions,
            self.positive_predictions + other.positive_predictions,
            self.true_positives + other.true_positives,
            self.positives + other.positives,
        )


@dataclass
class OutcomeCounts:
    """What joined labels said of their predictions, as counters: once as they join, and once per maturity age
    (the cohort of predictions that reached it). One set of fields, filled by one function for both."""

    confusion: npt.NDArray[np.int64]
    """Per group code, outcomes tp / fp / tn / fn (binary)."""
    class_outcomes: npt.NDArray[np.int64]
    """Multiclass: per class code, joined labels as tp / fp / fn (one-vs-rest)."""
    absolute_error: float = 0.0
    """Regression: sum of |prediction - label|."""
    squared_error: float = 0.0
    """Regression: sum of (prediction - label)^2."""
    regression_labeled: int = 0
    """Regression: labels with a numeric error."""

    @classmethod
    def zeros(cls, groups: int, classes: int) -> OutcomeCounts:
        """All at 0, for ``groups`` group codes and ``classes`` class codes."""
        return cls(np.zeros((groups, 4), dtype=np.int64), np.zeros((classes, 3), dtype=np.int64))

    def copy(self) -> OutcomeCounts:
        """A snapshot (for a scrape)."""
        return OutcomeCounts(
            self.confusion.copy(),
            self.class_outcomes.copy(),
            self.absolute_error,
            self.squared_error,
            self.regression_labeled,
        )


@dataclass
class Counters:
    """The monotonically growing counts (exported as Prometheus counters and histograms)."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    latency_buckets: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    latency_sum: float = 0.0
    feature_buckets: list[npt.NDArray[np.int64]] = field(default_factory=list)
    feature_sums: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    category_counts: list[npt.NDArray[np.int64]] = field(default_factory=list)
    observations: int = 0
    missing: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    violations: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    unknown_features: int = 0
    score_buckets: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    score_sum: float = 0.0
    class_counts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    group_predictions: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    outcomes: OutcomeCounts = field(default_factory=lambda: OutcomeCounts.zeros(0, 0))
    """Outcomes of joined labels, counted as they join."""
    matured: dict[str, OutcomeCounts] = field(default_factory=dict)
    """Per maturity name, outcomes counted when their prediction reached that age."""
    labels_late: dict[str, int] = field(default_factory=dict)
    """Per maturity name, labels that joined after their prediction was older than it."""
    label_predictions: int = 0
    """Predictions stored to wait for a label (they carried a request id)."""
    estimated: Estimate = field(default_factory=lambda: Estimate())
    """Sums of calibrated probabilities over scored predictions (estimated accuracy, precision, recall)."""
    labels_received: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)


class Monitor:
    """Counts and windows for one model version behind one sidecar (see the module docstring).

    Args:
        profile: the reference profile.
        model, version: the ``model`` and ``version`` label values of every exported series.
        settings: bounds and knobs.
        clock: monotonic seconds, for the label TTL; injectable for tests.
        wall_clock: Unix seconds, for the prediction times of the maturity cohorts; injectable for tests.
        label_store: where predictions wait for their labels; default: this process's memory, bounded by
            ``settings.label_ttl_seconds`` and ``settings.label_capacity``.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        model: str,
        version: str,
        settings: MonitorSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        label_store: LabelStore | None = None,
    ) -> None:
        self.profile = profile
        self.model = model
        self.version = version
        self.settings = settings = settings or MonitorSettings()
        self.encoder = FeatureEncoder(profile)
        self.lock = threading.Lock()
        self.window_size = settings.window_size or profile.window_size
        self.min_window_rows = min(settings.min_window_rows or self.window_size, self.window_size)
        numerical = [profile.features[i] for i in self.encoder.numerical_index]
        categorical = [profile.features[i] for i in self.encoder.categorical_index]
        self.numerical_refs: list[NumericalReference] = [f.reference for f in numerical]  # type: ignore[misc]
        self.numerical_names = [f.name for f in numerical]
        self.categorical_names = [f.name for f in categorical]
        self._minimum = np.array([r.minimum for r in self.numerical_refs])
        self._maximum = np.array([r.maximum for r in self.numerical_refs])

        prediction = profile.prediction
        self.score_ref = prediction.score if prediction else None
        self.class_ref = class_ref = prediction.classes if prediction else None
        self.count_classes = class_ref is not None or self.score_ref is None
        self.classes = _Table(class_ref.categories if class_ref else (), settings.max_classes)
        if profile.positive_class is not None:
            self.classes.code(profile.positive_class)  # the positive class always gets its own label value
        self.positive_code = None if profile.positive_class is None else self.classes.codes.get(profile.positive_class)
        self.groups = _Table(profile.groups, settings.max_groups, reserved=(NO_GROUP,))

        width = len(profile.features)
        self.counters = Counters(
            latency_buckets=np.zeros(len(settings.latency_buckets) + 1, dtype=np.int64),
            feature_buckets=[np.zeros(r.bounds.size + 1, dtype=np.int64) for r in self.numerical_refs],
            feature_sums=np.zeros(len(numerical)),
            category_counts=[np.zeros(len(f.reference.counts), dtype=np.int64) for f in categorical],
            missing=np.zeros(width, dtype=np.int64),
            violations={kind: np.zeros(width, dtype=np.int64) for kind in VIOLATION_KINDS},
            score_buckets=np.zeros(0 if self.score_ref is None else self.score_ref.bounds.size + 1, dtype=np.int64),
            class_counts=np.zeros(self.classes.size, dtype=np.int64),
            group_predictions=np.zeros((self.groups.size, 2), dtype=np.int64),
            outcomes=OutcomeCounts.zeros(self.groups.size, self.classes.size),
            matured={
                m.name: OutcomeCounts.zeros(self.groups.size, self.classes.size) for m in settings.label_maturities
            },
            labels_late={m.name: 0 for m in settings.label_maturities},
        )
        self._latency_bounds = np.asarray(settings.latency_buckets, dtype=np.float64)
        self._latency_list = list(settings.latency_buckets)
        self.numerical_window = _Ring(self.window_size, len(numerical), np.float64, math.nan)
        self.categorical_window = _Ring(self.window_size, len(categorical), np.int32, -1)
        self.score_window = _Ring(self.window_size, None, np.float64, math.nan)
        self.class_window = _Ring(self.window_size, None, np.int32, -1)
        # (predicted positive, group) of recent predictions: demographic parity needs no labels.
        self.prediction_group_window = _Ring(self.window_size, 2, np.int32, -1)
        # (outcome, group) of recent joined labels.
        self.quality_window = _Ring(settings.quality_window, 2, np.int32, -1)
        if label_store is None:
            label_store = MemoryLabelStore(
                ttl=settings.label_ttl_seconds, capacity=settings.label_capacity, clock=clock, wall_clock=wall_clock
            )
        self.labels: LabelStore = label_store
        self._wall_clock = wall_clock
        self.generation = 0
        """Bumped on every change, so scrape-time computations can be cached between changes."""

    # --- the in-process API ------------------------------------------------------------------------------

    def log_batch(
        self,
        features: npt.ArrayLike | Mapping[str, Any],
        *,
        predictions: Sequence[Any] | npt.ArrayLike | None = None,
        scores: npt.ArrayLike | None = None,
        request_ids: Sequence[str | None] | None = None,
        groups: Sequence[Any] | None = None,
        errors: npt.ArrayLike | None = None,
        latency_seconds: npt.ArrayLike | None = None,
    ) -> int:
        """Record a batch of predictions given as columns; returns the number of events recorded.

        Args:
            features: a ``(rows, features)`` array in profile order (NaN = missing), or a mapping of feature name
                to a column (array or list; None = missing).
            predictions: per row, the predicted class or value.
            scores: per row, the score / probability of the positive class (NaN = none).
            request_ids: per row, the id its label will arrive with (None = not joinable).
            groups: per row, the group attribute value.
            errors: per row, True if the model call failed.
            latency_seconds: per row, the model latency.

        Raises:
            BatchError: a shape mismatch, non-finite values or unknown feature names (nothing is recorded).
        """
        if isinstance(features, Mapping):
            rows = _column_length(features)
            encoded = self.encoder.encode_columns(features, rows)
            if encoded.unknown_features:
                raise BatchError(
                    "unknown_feature", f"features: not in the profile: {', '.join(sorted(encoded.unknown_features))}"
                )
        else:
            encoded = self.encoder.encode_matrix(features)
        rows = encoded.rows
        if np.isinf(encoded.numerical).any():
            raise BatchError("non_finite", "features: infinite values; send NaN for a missing value")
        status = None
        if errors is not None:
            failed = _column(errors, rows, "errors").astype(bool)
            status = np.where(failed, 500, 200).astype(np.int64)
        batch = EventBatch(
            features=encoded,
            request_ids=None if request_ids is None else _checked_length(request_ids, rows, "request_ids"),
            predictions=None if predictions is None else _checked_length(_as_array(predictions), rows, "predictions"),
            scores=None if scores is None else _column(scores, rows, "scores").astype(np.float64),
            groups=None if groups is None else _checked_length(groups, rows, "groups"),
            status=status,
            latency=None if latency_seconds is None else _column(latency_seconds, rows, "latency_seconds"),
        )
        self.ingest(batch)
        return rows

    def log_events(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Record push-format events (see ``docs/sidecar.md``); returns how many. Raises :class:`BatchError`."""
        from modelmonitor.sidecar.events import parse_events  # the parser imports this module

        batch = parse_events(events, self.encoder)
        self.ingest(batch)
        return batch.size

    def log_labels(self, labels: Sequence[tuple[str, Any]]) -> dict[str, int]:
        """Join true labels ``(request_id, label)`` to stored predictions; returns counts per result.

        Results: ``joined``, ``unmatched``, ``duplicate``, and ``deferred`` for labels a shared store will join
        once it is reachable again (counted under their final result then). May wait on a shared store: in an
        event loop, call it in a worker thread.
        """
        results = self.labels.join([(str(request_id), label) for request_id, label in labels])
        self._count_joins(results)
        counts = results.counts()
        if results.deferred:
            counts["deferred"] = results.deferred
        return counts

    def settle_labels(self) -> None:
        """Count the labels a shared store settled in the background, and the held outcomes whose prediction
        reached its maturity age (run before every scrape)."""
        settled = self.labels.settled()
        if settled.counts():
            self._count_joins(settled)
        matured = self.labels.matured()
        if matured:
            with self.lock:
                for outcome in matured:
                    counts = self.counters.matured.get(outcome.maturity)
                    if counts is not None:  # None: only for a maturity this sidecar was not started with
                        self._count_outcome(counts, outcome.record, outcome.label, window=False)
                self.generation += 1

    def _count_joins(self, results: JoinResults) -> None:
        held: list[HeldOutcome] = []
        with self.lock:
            for record, label in results.joined:
                self._count_outcome(self.counters.outcomes, record, label, window=True)
            received = self.counters.labels_received
            for result, count in results.counts().items():
                received[result] = received.get(result, 0) + count
            maturities = self.settings.label_maturities
            if maturities and results.joined:
                held, late = hold_or_late(results.joined, maturities, self._wall_clock())
                for name, count in late.items():
                    self.counters.labels_late[name] += count
            self.generation += 1
        if held:
            self.labels.hold(held)

    def _count_outcome(self, counts: OutcomeCounts, record: PendingPrediction, label: Any, *, window: bool) -> None:
        """Add one joined label's outcome to ``counts`` (and to the quality window when ``window``); the caller
        holds the lock."""
        positive = self.profile.positive_class
        label_positive = -1 if positive is None or label is None else int(canonical_category(label) == positive)
        if record.predicted_positive >= 0 and label_positive >= 0:
            outcome = _OUTCOME_CODES[(record.predicted_positive, label_positive)]
            # by name: each replica numbers its groups itself (__other__ is no name to learn)
            group = self.groups.other if record.group == OTHER else self.groups.code(record.group)
            counts.confusion[group, outcome] += 1
            if window:
                self.quality_window.push(np.array([[outcome, group]], dtype=np.int32))
        if record.predicted_value is not None and label is not None:
            self._count_labeled_value(counts, record.predicted_value, label)

    def _count_labeled_value(self, c: OutcomeCounts, predicted: float, label: Any) -> None:
        """Multiclass outcomes or regression errors of one joined label (the caller holds the lock)."""
        if self.profile.task == "multiclass":
            true_class = self.classes.code(canonical_category(label))
            predicted_class = int(predicted)
            if predicted_class == true_class:
                c.class_outcomes[true_class, 0] += 1
            else:
                c.class_outcomes[predicted_class, 1] += 1
                c.class_outcomes[true_class, 2] += 1
        elif self.profile.task == "regression":
            try:
                error = predicted - float(label)
            except (TypeError, ValueError):
                return  # not a number: no error to count (the join itself is counted)
            if math.isfinite(error):
                c.absolute_error += abs(error)
                c.squared_error += error * error
                c.regression_labeled += 1

    def reject(self, reason: str) -> None:
        """Count a refused payload under ``reason`` (the server calls this; so may an in-process caller)."""
        with self.lock:
            self.counters.rejected[reason] = self.counters.rejected.get(reason, 0) + 1

    def collector(self) -> Any:
        """A Prometheus collector for this monitor, to ``registry.register(...)``."""
        from modelmonitor.sidecar.metrics import MonitorCollector

        return MonitorCollector(self)

    # --- ingest ------------------------------------------------------------------------------------------

    def record_request(self, status: int, latency_seconds: float | None) -> None:
        """Count one model call (proxy mode: one HTTP exchange, whatever the number of rows in it).

        Plain Python, no numpy: it runs once per proxied call, where a few microseconds matter.
        """
        key = f"{status // 100}xx"
        with self.lock:
            c = self.counters
            c.requests[key] = c.requests.get(key, 0) + 1
            if status >= 500:
                c.errors += 1
            if latency_seconds is not None and math.isfinite(latency_seconds):
                c.latency_buckets[bisect.bisect_left(self._latency_list, latency_seconds)] += 1
                c.latency_sum += latency_seconds
            self.generation += 1

    def ingest(self, batch: EventBatch, *, count_requests: bool = True) -> None:
        """Add one encoded batch to the counters and windows (vectorized; holds the lock while updating).

        ``count_requests=False`` when the calls were counted already (:meth:`record_request`, proxy mode).
        """
        n = batch.size
        if n == 0:
            return
        classes, scores = self._prediction_columns(batch)
        predicted_positive = self._predicted_positive(classes, scores, n)
        predicted_values = self._predicted_values(classes, scores)
        estimate = self._estimate(scores, predicted_positive)
        with self.lock:
            group_codes = self._group_codes(batch, n)
            if count_requests:
                self._count_requests(batch, n)
            self._count_features(batch.features)
            self._count_predictions(classes, scores)
            c = self.counters
            valid = predicted_positive >= 0
            np.add.at(c.group_predictions, (group_codes[valid], predicted_positive[valid]), 1)
            self.prediction_group_window.push(np.column_stack([predicted_positive, group_codes]).astype(np.int32))
            if estimate is not None:
                c.estimated = c.estimated.plus(estimate)
            predicted_at = round(self._wall_clock(), 3) if self.settings.label_maturities else None
            records = self._pending_records(batch, predicted_positive, group_codes, predicted_values, predicted_at)
            c.label_predictions += len(records)
            self.generation += 1
        if records:
            self.labels.add(records)

    def _pending_records(
        self,
        batch: EventBatch,
        predicted_positive: npt.NDArray[np.int64],
        group_codes: npt.NDArray[np.int64],
        predicted_values: npt.NDArray[np.float64] | None,
        predicted_at: float | None,
    ) -> list[tuple[str, PendingPrediction]]:
        """(request id, record) of each joinable event (called under the lock: group names come from the table)."""
        if batch.request_ids is None:
            return []
        values: list[float | None] = (
            [None] * batch.size
            if predicted_values is None
            else [v if math.isfinite(v) else None for v in predicted_values.tolist()]
        )
        # Records are immutable values: one per distinct (prediction, group, value) of the batch, shared by its
        # events, keeps this at a dictionary lookup per event on the ingest path (binary models share the most).
        distinct: dict[tuple[int, int, float | None], PendingPrediction] = {}
        records: list[tuple[str, PendingPrediction]] = []
        for request_id, positive, group, value in zip(
            batch.request_ids, predicted_positive.tolist(), group_codes.tolist(), values, strict=True
        ):
            if request_id is None:
                continue
            key = (positive, group, value)
            record = distinct.get(key)
            if record is None:
                record = distinct[key] = PendingPrediction(positive, self.groups.label(group), value, predicted_at)
            records.append((str(request_id), record))
        return records

    def _count_requests(self, batch: EventBatch, n: int) -> None:
        c = self.counters
        if batch.status is None:
            c.requests["2xx"] = c.requests.get("2xx", 0) + n
        else:
            classes, counts = np.unique(batch.status // 100, return_counts=True)
            for status_class, count in zip(classes.tolist(), counts.tolist(), strict=True):
                key = f"{status_class}xx"
                c.requests[key] = c.requests.get(key, 0) + count
            c.errors += int(np.count_nonzero(batch.status >= 500))
        if batch.latency is not None:
            latency = batch.latency[np.isfinite(batch.latency)]
            if latency.size:
                index = np.searchsorted(self._latency_bounds, latency, side="left")
                c.latency_buckets += np.bincount(index, minlength=c.latency_buckets.size)
                c.latency_sum += float(latency.sum())

    def _count_features(self, features: FeatureColumns) -> None:
        c = self.counters
        c.observations += features.rows
        c.missing += features.missing
        c.violations["type"] += features.type_violations
        c.violations["unseen_category"] += features.unseen
        c.unknown_features += sum(features.unknown_features.values())
        values = features.numerical
        if values.shape[1]:
            finite = np.isfinite(values)
            infinite = np.isinf(values)
            outside = finite & ((values < self._minimum) | (values > self._maximum))
            out_index = self.encoder.numerical_index
            c.violations["non_finite"][out_index] += infinite.sum(axis=0)
            c.violations["range"][out_index] += outside.sum(axis=0)
            columns = np.ascontiguousarray(values.T)
            for j, reference in enumerate(self.numerical_refs):
                column = columns[j]
                if not finite[:, j].all():
                    column = column[finite[:, j]]
                buckets = c.feature_buckets[j]
                buckets += np.bincount(np.searchsorted(reference.bounds, column, side="left"), minlength=buckets.size)
                c.feature_sums[j] += float(column.sum())
            window_rows = values[-self.window_size :]
            if infinite.any():
                window_rows = np.where(np.isinf(window_rows), np.nan, window_rows)
            self.numerical_window.push(window_rows)
        codes = features.categorical
        if codes.shape[1]:
            for j, counts in enumerate(c.category_counts):
                column = codes[:, j]
                counts += np.bincount(column[column >= 0], minlength=counts.size)[: counts.size]
            self.categorical_window.push(codes[-self.window_size :])

    def _count_predictions(self, classes: npt.NDArray[np.int32] | None, scores: npt.NDArray[np.float64] | None) -> None:
        c = self.counters
        if classes is not None:
            known = classes[classes >= 0]
            c.class_counts += np.bincount(known, minlength=c.class_counts.size)
            self.class_window.push(classes[-self.window_size :])
        if scores is not None and self.score_ref is not None:
            finite = scores[np.isfinite(scores)]
            if finite.size:
                index = np.searchsorted(self.score_ref.bounds, finite, side="left")
                c.score_buckets += np.bincount(index, minlength=c.score_buckets.size)
                c.score_sum += float(finite.sum())
            self.score_window.push(scores[-self.window_size :])

    def _prediction_columns(
        self, batch: EventBatch
    ) -> tuple[npt.NDArray[np.int32] | None, npt.NDArray[np.float64] | None]:
        """(class codes or None, scores or None) for the batch; class codes are -1 where no class was given."""
        n = batch.size
        scores = batch.scores
        classes = None
        raw = batch.predictions
        if raw is not None:
            values = raw if isinstance(raw, np.ndarray) else _as_array(raw)
            numeric = values.dtype.kind in "iuf"
            if scores is None and numeric and self.score_ref is not None and self.class_ref is None:
                # A score distribution but no class distribution in the profile: a numeric prediction is the
                # score (or the regression value).
                scores = values.astype(np.float64)
            if self.count_classes:
                with self.lock:  # the class table may grow
                    classes = _codes_of(values, self.classes)
        if scores is not None and scores.shape != (n,):
            raise BatchError("wrong_shape", f"scores: expected {n} values, got shape {scores.shape}")
        return classes, scores

    def _predicted_positive(
        self, classes: npt.NDArray[np.int32] | None, scores: npt.NDArray[np.float64] | None, n: int
    ) -> npt.NDArray[np.int64]:
        """1 / 0 per event when the prediction was (not) the positive class, -1 when it cannot be told."""
        positive = np.full(n, -1, dtype=np.int64)
        if scores is not None:
            finite = np.isfinite(scores)
            positive[finite] = (scores[finite] >= self.profile.decision_threshold).astype(np.int64)
        if classes is not None and self.positive_code is not None:
            known = classes >= 0
            positive[known] = (classes[known] == self.positive_code).astype(np.int64)
        return positive

    def _predicted_values(
        self, classes: npt.NDArray[np.int32] | None, scores: npt.NDArray[np.float64] | None
    ) -> npt.NDArray[np.float64] | None:
        """What a label is compared with beyond the positive class: the class code of a multiclass prediction
        (NaN where none), the value of a regression prediction; None for binary models."""
        if self.profile.task == "multiclass" and classes is not None:
            return np.where(classes >= 0, classes, np.nan).astype(np.float64)
        if self.profile.task == "regression" and scores is not None:
            return scores.astype(np.float64)
        return None

    def _estimate(
        self, scores: npt.NDArray[np.float64] | None, predicted_positive: npt.NDArray[np.int64]
    ) -> Estimate | None:
        """The batch's sums of calibrated probabilities (None without a calibration or a scored prediction)."""
        calibration = self.profile.calibration
        if calibration is None or scores is None:
            return None
        usable = np.isfinite(scores) & (predicted_positive >= 0)
        if not usable.any():
            return None
        positive = calibrated(calibration.scores, calibration.probabilities, scores[usable])
        predicted = predicted_positive[usable]
        said_positive = predicted == 1
        return Estimate(
            correct=float(probability_correct(positive, predicted).sum()),
            predictions=int(positive.size),
            positive_predictions=int(np.count_nonzero(said_positive)),
            true_positives=float(positive[said_positive].sum()),
            positives=float(positive.sum()),
        )

    def _group_codes(self, batch: EventBatch, n: int) -> npt.NDArray[np.int64]:
        raw: Sequence[Any] | None = batch.groups
        if raw is None:
            raw = batch.features.group_values
        if raw is None:
            return np.zeros(n, dtype=np.int64)  # NO_GROUP is code 0
        return _codes_of(_as_array(raw), self.groups, missing=0).astype(np.int64)


def _as_array(values: Sequence[Any] | npt.ArrayLike) -> npt.NDArray[Any]:
    try:
        array = np.asarray(values)
    except ValueError:
        array = None
    if array is None or array.ndim != 1:
        items = list(values)  # type: ignore[arg-type]
        array = np.empty(len(items), dtype=object)
        array[:] = items
    return array


def _codes_of(values: npt.NDArray[Any], table: _Table, *, missing: int = -1) -> npt.NDArray[np.int32]:
    """Codes of ``values`` in ``table`` (distinct values looked up once); ``missing`` for None / NaN."""
    if values.dtype.kind == "O":
        uniques: dict[Any, int] = {}
        out = np.empty(len(values), dtype=np.int32)
        for index, value in enumerate(values.tolist()):
            key = value if not isinstance(value, list | dict) else repr(value)
            code = uniques.get(key)
            if code is None:
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    code = missing
                else:
                    code = table.code(canonical_category(value))
                uniques[key] = code
            out[index] = code
        return out
    distinct, inverse = np.unique(values, return_inverse=True)
    lookup = np.empty(len(distinct), dtype=np.int32)
    for index, value in enumerate(distinct.tolist()):
        if isinstance(value, float) and math.isnan(value):
            lookup[index] = missing
        else:
            lookup[index] = table.code(canonical_category(value))
    return lookup[inverse.reshape(-1)]


def _column_length(columns: Mapping[str, Any]) -> int:
    lengths = {name: len(values) for name, values in columns.items()}
    if not lengths:
        raise BatchError("wrong_shape", "features: no columns")
    distinct = set(lengths.values())
    if len(distinct) != 1:
        raise BatchError("wrong_shape", f"features: columns of different lengths: {lengths}")
    return distinct.pop()


def _checked_length(values: Sequence[Any] | npt.NDArray[Any], rows: int, name: str) -> Any:
    if len(values) != rows:
        raise BatchError("wrong_shape", f"{name}: {len(values)} values for {rows} rows")
    return values


def _column(values: npt.ArrayLike, rows: int, name: str) -> npt.NDArray[Any]:
    array = np.asarray(values)
    if array.shape != (rows,):
        raise BatchError("wrong_shape", f"{name}: expected {rows} values, got shape {array.shape}")
    return array
