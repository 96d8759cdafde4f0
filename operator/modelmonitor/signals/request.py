"""What the loop asks for (`SignalRequest`) and what one cycle of measuring returns (`CycleMeasurements`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelmonitor.api.spec import DEFAULT_FALSE_ALARM_RATE, DRIFT_METHODS, SIGNALS
from modelmonitor.policy.model import Measurement

#: The signal names are the API's (one list: the CRD enum and the PromQL plans must agree; a unit test checks
#: that every one of them has a plan).
BUILTIN_SIGNALS: tuple[str, ...] = SIGNALS

#: Drift methods computable from what the sidecar exports: current counts against reference *proportions*
#: (``..._reference_ratio``). Only methods that compare proportions qualify; the chi-square homogeneity test
#: needs the reference's own sample size, and KS / Wasserstein need raw values. The API's ``method`` enum.
FLEET_DRIFT_METHODS: tuple[str, ...] = DRIFT_METHODS


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
    #: ``spec.model.labels``: extra equality matchers every built-in signal applies, as sorted (name, value)
    #: pairs (hashable). Series without the label, or with another value, are not this monitor's.
    labels: tuple[tuple[str, str], ...] = ()
    #: ``threshold: auto``: judge each feature at the rows in its window (drift signals only).
    auto_threshold: bool = False
    #: The policy's ``condition.falseAlarmRate``: the share of drift-free windows that breach with
    #: ``threshold: auto``, for the policy as a whole (split over the features compared).
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE
    #: Drift method for dataDrift / predictionDrift (the policy's ``method``), one of ``FLEET_DRIFT_METHODS``.
    drift_method: str = "psi"
    #: The policy's minSamples. The engine applies it to ``samples``; the fairness signals and the drift signals
    #: also leave out the groups / features with fewer observations, so one sparse group or feature
    #: (``__other__``, a mostly-missing column) neither blocks the measurement nor dominates it with noise.
    min_samples: int = 0
    #: The policy's labelDelay (a validated PromQL duration), ``None`` for none. labelCoverage: the predictions
    #: counted are those of the window that ended this long ago; accuracy, precision, recall, f1: the maturity
    #: cohort of this age (`modelmonitor.signals.maturity`).
    label_delay: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(sorted(dict(self.labels).items())))

    @property
    def selector(self) -> tuple[tuple[str, str], ...]:
        """Every label a series must carry to be this monitor's, beyond namespace and model."""
        version = (("version", self.version),) if self.version is not None else ()
        return (*version, *self.labels)


@dataclass(frozen=True)
class CycleMeasurements:
    """Everything measured in one cycle, and what it cost."""

    results: Mapping[SignalRequest, Measurement]
    #: Distinct queries sent for built-in signals (independent of the number of monitors).
    batched_queries: int
    #: Queries sent for `query:` policies (one per policy).
    template_queries: int
    #: Queries that came back as errors.
    failed_queries: int
    #: Wall time spent waiting for Prometheus, summed over queries (they run in parallel).
    query_seconds: float = 0.0
    #: Series in the largest answer of the cycle.
    largest_answer: int = 0
    #: Batched queries sent restricted to the requests' models, in parts: their answer would pass the series budget,
    #: or those models are a small share of it.
    split_queries: int = 0

    @property
    def queries(self) -> int:
        """Total queries sent this cycle."""
        return self.batched_queries + self.template_queries
