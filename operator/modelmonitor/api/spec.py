"""The desired state of a ModelMonitor: what to watch, how to reach Prometheus, the policies and the actions."""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from modelmonitor.api.actions import Action
from modelmonitor.api.auth import HttpAuth, HttpTLS
from modelmonitor.api.common import (
    ACTION_NAME_PATTERN,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    HTTP_URL_PATTERN,
    PROMETHEUS_LABEL_PATTERN,
    ApiModel,
    Duration,
    PositiveDuration,
    ShortText,
    cel,
    duration_seconds,
    field_error,
    k8s,
)
from modelmonitor.api.registry import RegistrySpec
from modelmonitor.promql import TEMPLATE_PLACEHOLDERS, PromQLTemplateError, Template

Signal = Literal[
    "accuracy",
    "precision",
    "recall",
    "f1",
    "dataDrift",
    "predictionDrift",
    "latencyP50",
    "latencyP95",
    "latencyP99",
    "errorRate",
    "fairnessGap",
    "equalOpportunityGap",
    "disparateImpact",
    "missingRate",
    "schemaViolationRate",
    "cpu",
    "memory",
    "labelCoverage",
    "multiclassAccuracy",
    "macroF1",
    "mae",
    "rmse",
    "estimatedAccuracy",
    "estimatedPrecision",
    "estimatedRecall",
]
SIGNALS: tuple[Signal, ...] = get_args(Signal)
DRIFT_SIGNALS: tuple[Signal, ...] = ("dataDrift", "predictionDrift")
# Signals that take labelDelay: the share of predictions that got their label, judged on predictions made
# labelDelay earlier; and the label-based quality signals, judged on the maturity cohort (sidecar flag
# --label-maturity).
LABEL_DELAY_SIGNALS: tuple[Signal, ...] = (
    "labelCoverage",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "multiclassAccuracy",
    "macroF1",
    "mae",
    "rmse",
    "equalOpportunityGap",
)
_LABEL_DELAY_NAMES = ", ".join(LABEL_DELAY_SIGNALS)

# Drift methods the fleet's summed counts support (current counts against the reference proportions the sidecar
# exports); psi when a drift policy names none.
DriftMethodName = Literal["psi", "jensen_shannon", "hellinger", "linf"]
DRIFT_METHODS: tuple[DriftMethodName, ...] = get_args(DriftMethodName)

# Labels that tell the sidecar's series apart (or that the monitor sets itself): spec.model.labels cannot name
# them, because the built-in signals group and select by them.
RESERVED_MODEL_LABELS = (
    "namespace",
    "model",
    "version",
    "pod",
    "le",
    "feature",
    "category",
    "group",
    "predicted",
    "outcome",
    "code",
    "kind",
    "method",
    "class",
    "result",
    "metric",
)

Op = Literal["<", "<=", ">", ">="]

# condition.falseAlarmRate when a policy states none.
DEFAULT_FALSE_ALARM_RATE = 1e-5

# Placeholders a `query` template may use (the PromQL module renders them; it is the one place that knows
# PromQL quoting).
QUERY_PLACEHOLDERS: tuple[str, ...] = tuple(TEMPLATE_PLACEHOLDERS)

ActionName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=ACTION_NAME_PATTERN)]

MAX_POLICIES = 32
MAX_ACTIONS = 16
MAX_ACTIONS_PER_POLICY = 8


class Target(ApiModel):
    """The workload serving the model: what gets scaled, rolled back or promoted into."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "self.kind in ['Deployment', 'StatefulSet'] || has(self.apiVersion)",
                    "apiVersion is required when kind is neither Deployment nor StatefulSet",
                    field_path=".apiVersion",
                ),
                cel(
                    "!(self.kind in ['Deployment', 'StatefulSet']) || !has(self.apiVersion) "
                    "|| self.apiVersion == 'apps/v1'",
                    "apiVersion must be apps/v1 for a Deployment or StatefulSet",
                    field_path=".apiVersion",
                ),
            ]
        )
    )

    kind: str = Field(
        default="Deployment",
        max_length=63,
        pattern=r"^[A-Z][A-Za-z0-9]*$",
        description=(
            "Kind of the workload: Deployment (the default), StatefulSet, or any kind with a /scale "
            "subresource (then apiVersion is required). Rollback needs a Deployment."
        ),
    )
    name: str = Field(
        max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the workload in the monitor's namespace."
    )
    api_version: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?v[0-9]+((alpha|beta)[0-9]+)?$",
        description="API group and version of the workload, e.g. apps/v1 (the default for Deployment and StatefulSet).",
    )

    @property
    def resolved_api_version(self) -> str:
        """The apiVersion to use: the given one, or apps/v1 for Deployments and StatefulSets."""
        return self.api_version or "apps/v1"

    @model_validator(mode="after")
    def _check(self) -> Target:
        builtin = self.kind in ("Deployment", "StatefulSet")
        if not builtin and self.api_version is None:
            raise field_error("apiVersion", f"is required when kind is {self.kind}")
        if builtin and self.api_version not in (None, "apps/v1"):
            raise field_error("apiVersion", f"must be apps/v1 for a {self.kind} (got {self.api_version!r})")
        return self


class ModelSelector(ApiModel):
    """Which model's series to read: the values of the sidecar's `model` and `version` labels."""

    name: str = Field(min_length=1, max_length=253, description="Value of the `model` label on the sidecar's series.")
    version: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Value of the `version` label; when unset, all versions of the model are read together.",
    )
    labels: dict[str, ShortText] = Field(
        default_factory=dict,
        max_length=8,
        description=(
            "Extra label matchers (equality) that narrow every built-in signal, e.g. cluster: eu-1 when one "
            "Prometheus (Thanos, Mimir) holds many clusters: only series carrying all these label values count. "
            "Built-in signals still send one query per signal kind for all monitors. query: templates are not "
            "narrowed (write the matchers in the template). model and version are set through name and version; "
            "namespace is the monitor's own; labels the sidecar's series are split by (pod, le, feature, "
            "category, group, predicted, outcome, code, kind, method, class, result, metric) are not allowed."
        ),
        json_schema_extra=k8s(
            validations=[
                cel(
                    "self.all(k, k.matches('"
                    + PROMETHEUS_LABEL_PATTERN
                    + "') && !(k in ["
                    + ", ".join(f"'{name}'" for name in RESERVED_MODEL_LABELS)
                    + "]))",
                    "label names must match "
                    + PROMETHEUS_LABEL_PATTERN
                    + " and not be one of "
                    + ", ".join(RESERVED_MODEL_LABELS),
                )
            ]
        ),
    )

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: dict[str, ShortText]) -> dict[str, ShortText]:
        for key in labels:
            if not re.fullmatch(PROMETHEUS_LABEL_PATTERN, key):
                raise ValueError(f"{key!r} is not a Prometheus label name")
            if key in ("model", "version"):
                raise ValueError(f"{key!r} is set through model.{key}, not labels")
            if key in RESERVED_MODEL_LABELS:
                raise ValueError(
                    f"{key!r} cannot narrow the built-in signals (they select or group by it); "
                    f"not one of {', '.join(RESERVED_MODEL_LABELS)}"
                )
        return labels


class PrometheusConnection(ApiModel):
    """How to reach the Prometheus that scrapes the model's sidecars."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "!has(self.headers) || !self.headers.exists(k, k.lowerAscii() == 'authorization')",
                    "put credentials in auth (bearerTokenSecretRef or basicAuthSecretRef), not in an "
                    "Authorization header, so they stay in a Secret",
                    field_path=".headers",
                )
            ]
        )
    )

    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090. Defaults to the "
        "Prometheus URL the operator is configured with.",
    )
    timeout: PositiveDuration = Field(default="10s", description="Time limit for each query.")
    headers: dict[str, ShortText] = Field(
        default_factory=dict,
        max_length=16,
        description="Extra HTTP headers sent with every query, e.g. X-Scope-OrgID: team-a for a multi-tenant backend.",
    )
    auth: HttpAuth | None = Field(default=None, description="Credentials, read from Secrets.")
    tls: HttpTLS | None = Field(default=None, description="TLS settings for https:// URLs.")

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, ShortText]) -> dict[str, ShortText]:
        for key in headers:
            if key.lower() == "authorization":
                raise ValueError("put credentials in auth, not in an Authorization header")
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", key):
                raise ValueError(f"{key!r} is not an HTTP header name")
        return headers


class Condition(ApiModel):
    """When a measurement is a breach: `value op threshold`. With clearThreshold, a firing policy clears only
    once the value is back past clearThreshold (hysteresis)."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "has(self.threshold) != (has(self.autoThreshold) && self.autoThreshold)",
                    "set exactly one of threshold (a number) or autoThreshold: true",
                    field_path=".threshold",
                ),
                cel(
                    "!has(self.clearThreshold) || !has(self.threshold) || "
                    "((self.op == '<' || self.op == '<=') ? self.clearThreshold >= self.threshold "
                    ": self.clearThreshold <= self.threshold)",
                    "clearThreshold must lie on the safe side of threshold: >= threshold when op is < or <=, "
                    "<= threshold when op is > or >=",
                    field_path=".clearThreshold",
                ),
                cel(
                    "!has(self.clearThreshold) || !has(self.autoThreshold) || !self.autoThreshold",
                    "clearThreshold cannot be combined with autoThreshold (the calibrated threshold moves)",
                    field_path=".clearThreshold",
                ),
            ]
        )
    )

    op: Op = Field(description="Comparison that means breach: <, <=, > or >= (value op threshold).")
    threshold: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="The breach threshold. Exactly one of threshold or autoThreshold.",
    )
    auto_threshold: bool | None = Field(
        default=None,
        description=(
            "Instead of a fixed number, judge each feature at the number of rows it has in the policy's window: "
            "its threshold is the score a drift-free window of that many rows exceeds at falseAlarmRate divided "
            "by the number of features compared (derived from the reference proportions the sidecar exports). "
            "Only for the dataDrift and predictionDrift signals."
        ),
    )
    false_alarm_rate: float = Field(
        default=DEFAULT_FALSE_ALARM_RATE,
        gt=0,
        le=0.2,
        description=(
            "The share of evaluations of a drift-free model whose window breaches with autoThreshold, for the "
            "policy as a whole (split evenly over the features compared); also the false-discovery rate of the "
            "Benjamini-Hochberg selection that names the drifting features. Default 1e-5: an evaluation every "
            "30s is 2,880 a day, and windows overlap, so a per-evaluation rate must be tiny for false episodes "
            "to be rare (see docs/benchmarks.md)."
        ),
    )
    clear_threshold: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description=(
            "A firing policy resolves only once the value is on the safe side of this (>= it for < and <=, <= it "
            "for > and >=). Defaults to threshold."
        ),
    )

    @property
    def threshold_setting(self) -> float | Literal["auto"]:
        """The threshold as the policy engine takes it: a number, or "auto" for a calibrated one."""
        if self.auto_threshold:
            return "auto"
        assert self.threshold is not None  # guaranteed by _check
        return self.threshold

    @model_validator(mode="after")
    def _check(self) -> Condition:
        auto = bool(self.auto_threshold)
        if (self.threshold is not None) == auto:
            raise field_error("threshold", "set exactly one of threshold (a number) or autoThreshold: true")
        if self.clear_threshold is not None:
            if auto:
                raise field_error("clearThreshold", "cannot be combined with autoThreshold")
            assert self.threshold is not None
            low = self.op in ("<", "<=")
            if (low and self.clear_threshold < self.threshold) or (not low and self.clear_threshold > self.threshold):
                side = ">=" if low else "<="
                raise field_error(
                    "clearThreshold",
                    f"{self.clear_threshold} is on the breaching side of threshold {self.threshold} for op "
                    f"{self.op}: it must be {side} threshold",
                )
        return self


class SequentialDetection(ApiModel):
    """Accumulate evidence across evaluations with a CUSUM instead of judging each window alone."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "has(self.referenceLevel) == has(self.standardDeviation)",
                    "set both referenceLevel and standardDeviation, or neither",
                    field_path=".standardDeviation",
                )
            ]
        )
    )

    false_alarm_every: PositiveDuration = Field(
        description=(
            "The false-alarm budget in time: at most one false alarm per this long, on average, while nothing "
            "changed (e.g. 90d). The CUSUM's boundary follows from it and the policy window; at least 10 windows."
        ),
    )
    reference_level: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description=(
            "For signals other than dataDrift and predictionDrift (required for them, refused for the drift "
            "signals, which are standardized by their own null distribution): the signal's level while all is well. "
            "condition.threshold is then the level to detect fastest."
        ),
    )
    standard_deviation: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description=(
            "With referenceLevel (and required with it): how far one window's value strays from referenceLevel "
            "while all is well (its standard deviation)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> SequentialDetection:
        if (self.reference_level is None) != (self.standard_deviation is None):
            raise field_error("standardDeviation", "set both referenceLevel and standardDeviation, or neither")
        return self


class Detection(ApiModel):
    """How the policy decides that a signal is bad: each window alone (the default), or sequentially."""

    sequential: SequentialDetection | None = Field(
        default=None,
        description=(
            "Run a CUSUM over the policy's standardized signal, one non-overlapping window at a time; the policy "
            "breaches while the CUSUM is above a boundary derived from falseAlarmEvery (status shows the statistic "
            "as value, the boundary as threshold, and keeps the statistic so a restart resumes it)."
        ),
    )


class Policy(ApiModel):
    """One guarded property of the model: a measurement, a condition meaning breach, how long it must last, and
    the actions to take while it fires."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel("has(self.signal) != has(self.query)", "set exactly one of signal or query"),
                cel(
                    "!has(self.condition.autoThreshold) || !self.condition.autoThreshold || "
                    "(has(self.signal) && self.signal in ['dataDrift', 'predictionDrift'])",
                    "condition.autoThreshold is only available for the dataDrift and predictionDrift signals",
                    field_path=".condition.autoThreshold",
                ),
                cel(
                    "!has(self.method) || (has(self.signal) && self.signal in ['dataDrift', 'predictionDrift'])",
                    "method is only available for the dataDrift and predictionDrift signals",
                    field_path=".method",
                ),
                cel(
                    "!has(self.labelDelay) || (has(self.signal) && self.signal in ["
                    + ", ".join(f"'{name}'" for name in LABEL_DELAY_SIGNALS)
                    + "])",
                    f"labelDelay is only available for the {_LABEL_DELAY_NAMES} signals",
                    field_path=".labelDelay",
                ),
                cel(
                    "!has(self.detection) || !has(self.detection.sequential) || "
                    "((has(self.signal) && self.signal in ['dataDrift', 'predictionDrift']) "
                    "!= has(self.detection.sequential.referenceLevel))",
                    "detection.sequential.referenceLevel (with standardDeviation) is required for signals other than "
                    "dataDrift and predictionDrift, and refused for them (drift is standardized by its own null "
                    "distribution)",
                    field_path=".detection.sequential.referenceLevel",
                ),
                cel(
                    "!has(self.detection) || !has(self.detection.sequential) || !has(self.condition.clearThreshold)",
                    "condition.clearThreshold cannot be combined with detection.sequential (the CUSUM has a boundary)",
                    field_path=".condition.clearThreshold",
                ),
            ]
        )
    )

    name: str = Field(
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Name of the policy, unique in the monitor (lower case, digits and -).",
    )
    signal: Signal | None = Field(
        default=None,
        description=(
            "A built-in measurement over the sidecar's metrics: accuracy, precision, recall, f1 (from joined "
            "labels), dataDrift, predictionDrift (the worst feature's score with the policy's method), "
            "latencyP50/P95/P99 (seconds), errorRate, missingRate, schemaViolationRate (the worst feature's rate), "
            "cpu (cores), memory (bytes); fairness across the sidecar's groups: fairnessGap (demographic-parity "
            "difference: highest minus lowest positive-prediction rate, no labels needed), disparateImpact "
            "(lowest over highest positive-prediction rate; 1 is parity, below 0.8 fails the four-fifths rule), "
            "equalOpportunityGap (highest minus lowest true-positive rate, from joined labels); groups with fewer "
            "than minSamples are left out. Labels: labelCoverage (labels joined over the window / predictions "
            "that waited for one, see labelDelay); multiclassAccuracy and macroF1 (multiclass models, from "
            "per-class tp/fp/fn of joined labels); mae and rmse (regression models, in the label's unit); "
            "estimatedAccuracy, estimatedPrecision, estimatedRecall (before labels arrive, from the profile's "
            "score calibration: the mean calibrated probability that a prediction is correct; expected true "
            "positives over positive predictions; over expected positives; they assume covariate shift only). "
            "Exactly one of signal or query."
        ),
    )
    method: DriftMethodName | None = Field(
        default=None,
        description=(
            "The drift method of a dataDrift or predictionDrift policy (only those): psi (the default), "
            "jensen_shannon (distance, log base 2), hellinger or linf (largest change in one bucket's or "
            "category's share); all are high under drift. With condition.autoThreshold the threshold calibrated "
            "for this method is used."
        ),
    )
    label_delay: PositiveDuration | None = Field(
        default=None,
        description=(
            "The maturity delay of a label-based policy (labelCoverage, accuracy, precision, recall, f1, "
            "multiclassAccuracy, macroF1, mae, rmse, equalOpportunityGap), e.g. 1h "
            "when labels arrive within an hour. labelCoverage: labels joined over the window are set against "
            "the predictions made over a window of the same length that ended labelDelay ago (PromQL offset), "
            "so predictions younger than the time their labels take are not counted as unlabeled. The others "
            "judge the maturity cohort: predictions that turned labelDelay old during the window, with the "
            "labels that joined within labelDelay of the prediction (the sidecars must run with "
            "--label-maturity set to the same duration; NoData otherwise). Unset: the same window, labels "
            "counted as they join."
        ),
    )
    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description=(
            "A PromQL template returning the value to compare, for anything the built-in signals do not cover. "
            "Placeholders {{model}}, {{version}}, {{namespace}} and {{monitor}} become quoted PromQL strings (write "
            "them bare) and {{window}} the policy's window, e.g. "
            "sum(rate(my_errors_total{model={{model}}}[{{window}}])). Exactly one of signal or query."
        ),
    )
    window: PositiveDuration = Field(default="5m", description="The time range each measurement covers (e.g. 10m).")
    condition: Condition = Field(description="When a measurement is a breach.")
    for_: Duration = Field(
        default="0s",
        alias="for",
        description="How long breaches must last before the policy fires (Pending until then).",
    )
    keep_firing_for: Duration = Field(
        default="0s",
        description="How long a firing policy keeps firing after the value is back to normal (anti-flap).",
    )
    min_samples: int = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="Fewer samples than this in the window is NoData, never a breach (e.g. 200 joined labels).",
    )
    no_data: Literal["hold", "ok", "breach"] = Field(
        default="hold",
        description=(
            "What missing data means: hold (keep the current state; the default), ok (treat as healthy) or breach. "
            "Prometheus errors are never treated as data."
        ),
    )
    reduce: Literal["max", "min", "avg", "any", "all"] | None = Field(
        default=None,
        description=(
            "How several series become one value: max, min, avg, or any/all (breach when any/all series breach). "
            "Unset, the worst series decides in the direction of the comparison: the lowest for < and <=, the "
            "highest for > and >= (as any). The status message names the series that decided by its labels."
        ),
    )
    severity: Literal["info", "warning", "critical"] = Field(
        default="warning", description="Severity carried by Events and alerts."
    )
    actions: list[ActionName] = Field(
        default_factory=list,
        max_length=MAX_ACTIONS_PER_POLICY,
        description="Names of actions in spec.actions to take while this policy fires.",
        json_schema_extra=k8s(list_type="set"),
    )
    dry_run: bool = Field(
        default=False, description="Evaluate and record what would be done, but take none of this policy's actions."
    )
    detection: Detection | None = Field(
        default=None,
        description="Sequential detection across evaluations (see docs/policies.md); unset: each window alone.",
    )

    @field_validator("actions")
    @classmethod
    def _check_action_names(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("names an action more than once")
        return names

    @field_validator("query")
    @classmethod
    def _check_query(cls, query: str | None) -> str | None:
        if query is None:
            return None
        try:
            Template.parse(query)
        except PromQLTemplateError as exc:
            raise ValueError(str(exc).removeprefix("query: ")) from None
        return query

    @model_validator(mode="after")
    def _check(self) -> Policy:
        if (self.signal is None) == (self.query is None):
            raise field_error("signal", "set exactly one of signal or query")
        if self.condition.auto_threshold and self.signal not in DRIFT_SIGNALS:
            raise field_error(
                "condition.autoThreshold", "is only available for the dataDrift and predictionDrift signals"
            )
        if self.method is not None and self.signal not in DRIFT_SIGNALS:
            raise field_error("method", "is only available for the dataDrift and predictionDrift signals")
        if self.label_delay is not None and self.signal not in LABEL_DELAY_SIGNALS:
            raise field_error("labelDelay", f"is only available for the {_LABEL_DELAY_NAMES} signals")
        sequential = self.detection.sequential if self.detection is not None else None
        if sequential is not None:
            self._check_sequential(sequential)
        return self

    def _check_sequential(self, sequential: SequentialDetection) -> None:
        where = "detection.sequential"
        if self.condition.clear_threshold is not None:
            raise field_error("condition.clearThreshold", f"cannot be combined with {where} (the CUSUM has a boundary)")
        if duration_seconds(sequential.false_alarm_every) < 10 * duration_seconds(self.window):
            raise field_error(
                f"{where}.falseAlarmEvery",
                f"{sequential.false_alarm_every} is fewer than 10 windows of {self.window}",
            )
        if self.signal in DRIFT_SIGNALS:
            if sequential.reference_level is not None:
                raise field_error(
                    f"{where}.referenceLevel",
                    f"is not used by {self.signal}: drift is standardized by its own null distribution",
                )
            return
        if sequential.reference_level is None:
            raise field_error(
                f"{where}.referenceLevel",
                "is required (with standardDeviation) for signals other than dataDrift and predictionDrift",
            )
        assert self.condition.threshold is not None  # autoThreshold is refused for these signals
        worse_is_higher = self.condition.op in (">", ">=")
        if (self.condition.threshold > sequential.reference_level) != worse_is_higher:
            raise field_error(
                "condition.threshold",
                f"{self.condition.threshold} must lie on the breaching side ({self.condition.op}) of "
                f"{where}.referenceLevel {sequential.reference_level}",
            )


class Combine(ApiModel):
    """How the monitor's policies combine into actions."""

    mode: Literal["anyOf", "allOf"] = Field(
        default="anyOf",
        description=(
            "anyOf (the default): each firing policy takes its own actions. allOf: actions are taken only while "
            "every policy fires; each policy's actions then run."
        ),
    )


_ACTION_NAMES_RULE = "self.policies.all(p, !has(p.actions) || p.actions.all(a, has(self.actions) && a in self.actions))"
_REGISTRY_PROMOTION_RULE = (
    "has(self.registry) || !has(self.actions) || "
    "self.actions.all(k, !has(self.actions[k].promote) || self.actions[k].promote.from != 'registry')"
)


class ModelMonitorSpec(ApiModel):
    """Which model to watch, the policies that guard it, and the actions to take when they fire."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    _ACTION_NAMES_RULE,
                    "every action named in spec.policies[].actions must be defined in spec.actions",
                    field_path=".policies",
                ),
                cel(
                    "!has(self.actions) || self.actions.all(k, k.matches('" + ACTION_NAME_PATTERN + "'))",
                    "action names must match " + ACTION_NAME_PATTERN,
                    field_path=".actions",
                ),
                cel(
                    _REGISTRY_PROMOTION_RULE,
                    "promote.from: registry needs spec.registry (the MLflow registry and the registered model)",
                    field_path=".registry",
                ),
            ]
        )
    )

    target: Target = Field(description="The workload serving the model.")
    model: ModelSelector = Field(description="The model's label values on the sidecar's series.")
    prometheus: PrometheusConnection = Field(
        default_factory=PrometheusConnection,
        description="How to reach Prometheus; by default the operator's configured Prometheus.",
    )
    registry: RegistrySpec | None = Field(
        default=None,
        description=(
            "The MLflow model registry holding the model's registered versions: promotions pin a version's source "
            "URI and move alias once it proved itself, rollbacks move alias back; status.registry records which "
            "version is served and the history of both."
        ),
    )
    interval: PositiveDuration = Field(default="30s", description="How often the policies are evaluated.")
    policies: list[Policy] = Field(
        min_length=1,
        max_length=MAX_POLICIES,
        description="The policies guarding the model; names are unique.",
        json_schema_extra=k8s(list_type="map", list_map_keys=["name"]),
    )
    combine: Combine = Field(default_factory=Combine, description="How policies combine into actions.")
    actions: dict[str, Action] = Field(
        default_factory=dict,
        max_length=MAX_ACTIONS,
        description="Named actions the policies refer to; each has a type: scale, rollback, retrain or alert.",
    )
    dry_run: bool = Field(
        default=False,
        description=(
            "Evaluate and record what would be done, but take no action at all (the MonitorDegraded alert, about "
            "the monitor's own health, still goes out)."
        ),
    )
    paused: bool = Field(default=False, description="Stop evaluating and acting; status.phase becomes Paused.")
    degraded_after_errors: int = Field(
        default=3,
        ge=1,
        le=1000,
        description=(
            "After this many evaluation cycles in a row in which a policy failed to measure, the monitor is Degraded "
            "and alerts: a MonitorDegraded Warning Event once per episode and a MonitorDegraded alert through every "
            "alert action, re-sent while it lasts and resolved when every policy measures again."
        ),
    )

    @field_validator("interval")
    @classmethod
    def _check_interval(cls, interval: str) -> str:
        # Shorter intervals only load Prometheus: scrapes rarely happen more than every few seconds.
        if duration_seconds(interval) < 1:
            raise ValueError(f"{interval} is shorter than the minimum of 1s")
        return interval

    @field_validator("actions")
    @classmethod
    def _check_action_keys(cls, actions: dict[str, Action]) -> dict[str, Action]:
        for name in actions:
            if len(name) > 63 or not re.fullmatch(ACTION_NAME_PATTERN, name):
                raise ValueError(f"action name {name!r} must match {ACTION_NAME_PATTERN} and be at most 63 long")
        return actions

    @model_validator(mode="after")
    def _check(self) -> ModelMonitorSpec:
        for name, action in self.actions.items():
            promote = getattr(action, "promote", None)
            if promote is not None and promote.from_ == "registry" and self.registry is None:
                raise field_error(
                    f"actions.{name}.promote.from", "registry needs spec.registry (the MLflow registry and the model)"
                )
        seen: set[str] = set()
        for i, policy in enumerate(self.policies):
            if policy.name in seen:
                raise field_error(f"policies[{i}].name", f"{policy.name!r} is used by more than one policy")
            seen.add(policy.name)
            missing = [name for name in policy.actions if name not in self.actions]
            if missing:
                raise field_error(
                    f"policies[{i}].actions",
                    f"policy {policy.name} names actions not defined in spec.actions: {', '.join(missing)}",
                )
        return self
