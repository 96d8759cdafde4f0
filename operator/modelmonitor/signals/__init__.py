"""Built-in signals and `query:` policies, measured for all monitors at once.

Input: the (monitor, policy) requests of one evaluation cycle, from ALL monitors that share a Prometheus.
Output: one `modelmonitor.policy.Measurement` per request (the policy engine's own type): values with their
sample counts and labels, the queries used, what the value is made of (``detail``), or why there is no value
(NoData) or no measurement (Error, Invalid).

Batched: the built-in signals issue one query per (signal kind, window, grouping) for every model at once,
grouped ``by (namespace, model)`` (``by (namespace, model, version)`` for monitors that name a version) plus
the label names of every monitor's ``spec.model.labels`` in the batch, and the answer is split back per monitor
(`answers`). Queries per cycle grow with the number of distinct signal kinds and windows, not with the number
of monitors. `query:` policies are rendered per monitor and cost one query each.

Label requirement: the sidecar's series must carry a ``namespace`` label with the pod's namespace, which
Prometheus' Kubernetes service discovery adds as a target label (``__meta_kubernetes_namespace`` relabelled to
``namespace``, as the Prometheus Operator and the usual ``kubernetes-pods`` job do). The ``cpu`` and ``memory``
signals also need a ``pod`` target label, to join cAdvisor's container metrics with the sidecar's series.

Never a made-up value: an absent series is NoData with the reason, never 0 (KEDA's ``ignoreNullValues`` turned
an empty answer into 0 and scaled production down during a Prometheus outage). A ratio's numerator counts as 0
only when its denominator proves the sidecar was scraped in the window (a labelled counter such as
``modelmonitor_feature_missing_total{feature="age"}`` does not exist until the first missing value). A failed
query is an Error for every request that needed it, never NoData.

The metric names come from `modelmonitor.metricnames`, which the sidecar exports from.

Split when large: a batched query whose answer would hold more series than a budget (100,000 by default) is sent
in parts, each restricted to some of the models asked for (`split`); the queries per cycle then grow with the
series over the budget, and each replica of several asks for its own share only.

Modules: `request` (what is asked, what a cycle returns), `planning` (which queries), `answers` (splitting per
monitor), `split` (splitting a query by models), `measure` (the cycle), and one module per family of signals:
`quality`, `fairness`, `traffic`, `dataquality`, `drift`, `resources`, `template`, `coverage` (labelCoverage),
`multiclass`, `regression`, `estimated` (estimatedAccuracy, estimatedPrecision, estimatedRecall).
"""

from __future__ import annotations

from modelmonitor.api.spec import DRIFT_SIGNALS
from modelmonitor.metricnames import PREDICTION_FEATURE
from modelmonitor.signals.measure import measure
from modelmonitor.signals.request import BUILTIN_SIGNALS, FLEET_DRIFT_METHODS, CycleMeasurements, SignalRequest
from modelmonitor.signals.split import SeriesBook

__all__ = [
    "BUILTIN_SIGNALS",
    "DRIFT_SIGNALS",
    "FLEET_DRIFT_METHODS",
    "PREDICTION_FEATURE",
    "CycleMeasurements",
    "SeriesBook",
    "SignalRequest",
    "measure",
]
