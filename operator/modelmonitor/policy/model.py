"""The engine's inputs: what a policy asks (`Rule`), what Prometheus answered (`Measurement`), and the
monitor-level settings (`MonitorSpec`).

These are plain frozen dataclasses, not the API's pydantic models: the operator shell maps a validated
ModelMonitor into them (`modelmonitor.policy.spec` does it from the camelCase spec dict), so the engine can be
tested with nothing but literals. Every constructor checks its own invariants and raises ValueError naming the
field, because a rule that is silently wrong (a clear threshold on the unsafe side, a negative ``for``) would
make the engine act at the wrong time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

from modelmonitor.policy.cusum import SequentialRule


class Op(StrEnum):
    """The comparison in a policy's condition: the policy breaches while ``value <op> threshold``."""

    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="

    def holds(self, value: float, threshold: float) -> bool:
        """Whether ``value <op> threshold``, i.e. whether this value breaches that threshold."""
        if self is Op.LT:
            return value < threshold
        if self is Op.LE:
            return value <= threshold
        if self is Op.GT:
            return value > threshold
        return value >= threshold

    @property
    def higher_is_worse(self) -> bool:
        """True for ``>``/``>=`` (latency, drift, error rate), False for ``<``/``<=`` (accuracy, recall)."""
        return self in (Op.GT, Op.GE)


class NoDataPolicy(StrEnum):
    """What a policy does when there is nothing to judge (empty answer, NaN, too few samples)."""

    HOLD = "hold"  # the default: keep the state and its timers, never act
    OK = "ok"  # missing data counts as healthy (e.g. a batch job that is quiet at night)
    BREACH = "breach"  # missing data counts as a breach (e.g. a heartbeat that must always be there)


class Reduce(StrEnum):
    """How several series become one outcome; never "whichever came last".

    A rule without one (``Rule.reduce`` None, the API's default) lets the worst series decide in the direction of
    the comparison, as ``any`` does: the lowest for ``<``/``<=``, the highest for ``>``/``>=``. A fixed ``max``
    default would hide a failing series behind a healthy one whenever lower is worse.
    """

    MAX = "max"
    MIN = "min"
    AVG = "avg"
    ANY = "any"  # breach if any series breaches (judged on the worst series)
    ALL = "all"  # breach only if every series breaches (judged on the best series)


class Severity(StrEnum):
    """How urgent a firing policy is; carried into decisions, Events and alerts."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Combine(StrEnum):
    """How a monitor's policies combine into actions."""

    ANY_OF = "anyOf"  # each firing policy triggers its own actions
    ALL_OF = "allOf"  # actions are taken only while every policy is firing


class MeasurementKind(StrEnum):
    """What a policy's measurement holds."""

    VALUES = "Values"  # one or more series with a number each (may be empty: then it is NoData)
    NO_DATA = "NoData"  # Prometheus answered, but there is nothing to measure (absent series, NaN, no traffic)
    ERROR = "Error"  # no measurement: Prometheus unreachable, HTTP error, timeout, PromQL error, bad answer
    INVALID = "Invalid"  # cannot be measured as written (bad window, template, method; an unusable shape)


def _require_finite(value: float, field_name: str, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{owner}: {field_name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class Rule:
    """One policy of a ModelMonitor, as the engine needs it.

    With ``auto_threshold`` (``threshold: auto``) the threshold comes with each measurement (`for_measurement`);
    until one brings it the policy yields NoData. ``window`` and ``query`` are the user's text, kept only for
    messages and Events (a measurement replaces ``query`` with the PromQL it actually sent).
    """

    name: str
    op: Op
    threshold: float | None
    auto_threshold: bool = False
    clear_threshold: float | None = None
    for_seconds: float = 0.0
    keep_firing_for_seconds: float = 0.0
    min_samples: int = 0
    no_data: NoDataPolicy = NoDataPolicy.HOLD
    reduce: Reduce | None = None  # None: the worst series decides (see `Reduce`)
    severity: Severity = Severity.WARNING
    actions: tuple[str, ...] = ()
    dry_run: bool = False
    window: str = ""
    query: str = ""
    #: ``detection.sequential``: judge a CUSUM of the standardized signal instead of each window alone.
    sequential: SequentialRule | None = None

    def __post_init__(self) -> None:
        owner = f"policy {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("policy name must be a non-empty string")
        # Accept the API's literal strings ("<", "hold", ...) as well as the enums.
        for attr, enum in (
            ("op", Op),
            ("no_data", NoDataPolicy),
            ("reduce", Reduce),
            ("severity", Severity),
        ):
            raw = getattr(self, attr)
            if attr == "reduce" and raw is None:
                continue
            try:
                object.__setattr__(self, attr, enum(raw))
            except ValueError:
                allowed = ", ".join(repr(m.value) for m in enum)
                raise ValueError(f"{owner}: {attr} must be one of {allowed}, got {raw!r}") from None
        object.__setattr__(self, "actions", tuple(self.actions))
        if self.threshold is not None:
            _require_finite(self.threshold, "threshold", owner)
        if self.clear_threshold is not None:
            _require_finite(self.clear_threshold, "clearThreshold", owner)
        for attr, label in (("for_seconds", "for"), ("keep_firing_for_seconds", "keepFiringFor")):
            value = getattr(self, attr)
            _require_finite(value, label, owner)
            if value < 0:
                raise ValueError(f"{owner}: {label} must not be negative, got {value}s")
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int) or self.min_samples < 0:
            raise ValueError(f"{owner}: minSamples must be a non-negative integer, got {self.min_samples!r}")
        if self.threshold is not None and self.clear_threshold is not None:
            # The clear threshold must lie on the healthy side, or the policy could never clear (or would
            # clear while still breaching).
            op = Op(self.op)
            if op.higher_is_worse and self.clear_threshold > self.threshold:
                raise ValueError(
                    f"{owner}: clearThreshold {self.clear_threshold:g} must not be above threshold "
                    f"{self.threshold:g} for op '{op.value}' (it is the level at which the policy clears)"
                )
            if not op.higher_is_worse and self.clear_threshold < self.threshold:
                raise ValueError(
                    f"{owner}: clearThreshold {self.clear_threshold:g} must not be below threshold "
                    f"{self.threshold:g} for op '{op.value}' (it is the level at which the policy clears)"
                )

    def for_measurement(self, measurement: Measurement) -> Rule:
        """This rule as it applies to one cycle's measurement: with the calibrated threshold of a ``threshold:
        auto`` policy, and the PromQL the measurement sent for messages."""
        threshold = measurement.threshold if self.auto_threshold else self.threshold
        query = measurement.query or self.query
        if threshold != self.threshold:
            return replace(self, threshold=threshold, query=query)  # checked again: a calibrated threshold
        if query == self.query:
            return self
        # Only the text for messages differs (every cycle of a built-in signal): one copy per rule and text, not
        # checked again (`replace` would run every check), shared by the monitors that share the rule (a fleet from
        # one template) instead of one copy per policy of each monitor held until its status is written.
        known = _MEASURED_RULES.get((id(self), query))
        if known is not None and known[0] is self:
            return known[1]
        measured = object.__new__(Rule)
        measured.__dict__.update(self.__dict__, query=query)
        if len(_MEASURED_RULES) >= MEASURED_RULES_MAX:
            _MEASURED_RULES.clear()
        # The entry holds the rule itself, so its id cannot be reused while the entry exists.
        _MEASURED_RULES[(id(self), query)] = (self, measured)
        return measured


#: Rules given a cycle's PromQL text (`Rule.for_measurement`), by the rule's identity and the text.
_MEASURED_RULES: dict[tuple[int, str], tuple[Rule, Rule]] = {}
MEASURED_RULES_MAX = 4096


@dataclass(frozen=True)
class Series:
    """One series of a Prometheus answer: its value, how many samples stand behind it, and its labels."""

    value: float
    samples: int | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def label_text(self) -> str:
        """``{model="fraud",version="3"}`` for messages, or ``{}`` when the series has no labels."""
        return "{" + ",".join(f'{k}="{v}"' for k, v in self.labels) + "}"


@dataclass(frozen=True)
class Measurement:
    """What was measured for one policy in one cycle: the one measurement type from the signals to the verdict.

    Build it with the class methods (the signals add what the value is made of with the keyword fields).
    """

    kind: MeasurementKind
    series: tuple[Series, ...] = ()
    #: Why there is no value (NoData), or no measurement (Error, Invalid).
    reason: str = ""
    #: The threshold calibrated for ``threshold: auto`` (drift signals), else ``None``.
    threshold: float | None = None
    #: The main PromQL text sent (for Events and status messages); empty when nothing was sent.
    query: str = ""
    #: Every PromQL text the measurement used, main query first.
    queries: tuple[str, ...] = ()
    #: What the value is made of, for the policy's status message: the drift method and the worst feature,
    #: the groups compared and their counts, the counts behind a ratio.
    detail: str = ""
    #: Warnings Prometheus returned with the answers (e.g. a partial answer from a federated store).
    warnings: tuple[str, ...] = ()
    #: The evidence of this measurement on a standard normal scale, ``N(0, 1)`` while nothing changed (drift
    #: signals: the probit of the adjusted smallest p-value); what sequential detection accumulates. ``None``
    #: when the signal has no null distribution of its own.
    standardized: float | None = None

    def __post_init__(self) -> None:
        # Built per policy per cycle (thousands at scale): convert only what is not already the right type.
        if type(self.kind) is not MeasurementKind:
            object.__setattr__(self, "kind", MeasurementKind(self.kind))
        for name in ("series", "queries", "warnings"):
            if type(getattr(self, name)) is not tuple:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.kind is not MeasurementKind.VALUES and self.series:
            raise ValueError(f"a {self.kind.value} measurement carries no series values")

    def with_queries(self, queries: tuple[str, ...], warnings: tuple[str, ...] = ()) -> Measurement:
        """This measurement with the PromQL it was made from (main query first) and Prometheus' warnings on the
        answers: a copy, not checked again (made for every policy of every monitor in every cycle, where
        `dataclasses.replace` would run the checks again)."""
        copy = object.__new__(Measurement)
        copy.__dict__.update(self.__dict__, query=queries[0] if queries else "", queries=queries, warnings=warnings)
        return copy

    @classmethod
    def value(cls, value: float, samples: int | None = None) -> Measurement:
        """A single-series answer (a scalar, or a vector with one element)."""
        return cls(MeasurementKind.VALUES, (Series(value, samples),))

    @classmethod
    def values(cls, *series: Series) -> Measurement:
        """A vector answer with any number of series (zero series is an empty answer: NoData)."""
        return cls(MeasurementKind.VALUES, tuple(series))

    @classmethod
    def no_data(cls, reason: str) -> Measurement:
        """The query ran but there was nothing to judge."""
        return cls(MeasurementKind.NO_DATA, (), reason)

    @classmethod
    def error(cls, reason: str) -> Measurement:
        """The query could not be run or answered (HTTP, timeout, PromQL error)."""
        return cls(MeasurementKind.ERROR, (), reason)

    @classmethod
    def invalid(cls, reason: str) -> Measurement:
        """The answer had a shape this policy cannot use."""
        return cls(MeasurementKind.INVALID, (), reason)


@dataclass(frozen=True)
class MonitorSpec:
    """The monitor-level settings the engine needs, plus the policies in spec order.

    ``action_types`` maps each named action to its type (scale, rollback, retrain, alert); it lets decisions say
    what they are and lets the engine send "resolved" only to alerts.
    """

    namespace: str
    name: str
    policies: tuple[Rule, ...]
    combine: Combine = Combine.ANY_OF
    dry_run: bool = False
    paused: bool = False
    degraded_after_errors: int = 3
    action_types: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = f"monitor {self.namespace}/{self.name}"
        if not self.namespace or not self.name:
            raise ValueError("monitor namespace and name must be non-empty")
        try:
            object.__setattr__(self, "combine", Combine(self.combine))
        except ValueError:
            raise ValueError(f"{owner}: combine.mode must be 'anyOf' or 'allOf', got {self.combine!r}") from None
        object.__setattr__(self, "policies", tuple(self.policies))
        object.__setattr__(self, "action_types", MappingProxyType(dict(self.action_types)))
        names = [rule.name for rule in self.policies]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"{owner}: policy names must be unique, repeated: {', '.join(duplicates)}")
        if (
            isinstance(self.degraded_after_errors, bool)
            or not isinstance(self.degraded_after_errors, int)
            or self.degraded_after_errors < 1
        ):
            raise ValueError(
                f"{owner}: degradedAfterErrors must be a positive integer, got {self.degraded_after_errors!r}"
            )
        if self.action_types:
            for rule in self.policies:
                unknown = [a for a in rule.actions if a not in self.action_types]
                if unknown:
                    raise ValueError(
                        f"{owner}: policy {rule.name!r} names actions that are not defined in spec.actions: "
                        f"{', '.join(unknown)}"
                    )

    def rule(self, name: str) -> Rule:
        """The policy called ``name``; KeyError when there is none."""
        for rule in self.policies:
            if rule.name == name:
                return rule
        raise KeyError(name)
