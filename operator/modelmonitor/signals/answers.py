"""Splitting batched answers per monitor, and building the `Measurement` each signal returns.

A batched query is grouped by every label that tells monitors apart: ``namespace``, ``model``, ``version``
(for monitors that name one) and the union of the label names in the batch's ``spec.model.labels``. Each
monitor then takes the samples whose labels match all of its own values and sums (or, for reference ratios,
takes the largest) over the labels it does not name.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from modelmonitor.adapters.prometheus import QueryResult, Sample
from modelmonitor.policy.model import Measurement, MeasurementKind, Series
from modelmonitor.promql import matches_any, quote
from modelmonitor.signals.request import SignalRequest


class Index:
    """One answer's samples by (namespace, model), built once and shared by every request that reads it."""

    def __init__(self, answer: QueryResult) -> None:
        self.answer = answer
        self._by_model: dict[tuple[str, str], list[Sample]] = defaultdict(list)
        for sample in answer.samples:
            labels = sample.labels
            self._by_model[(labels.get("namespace", ""), labels.get("model", ""))].append(sample)

    def select(self, request: SignalRequest) -> list[Sample]:
        """The samples of the request's model whose labels match its version and ``spec.model.labels``."""
        samples = self._by_model.get((request.namespace, request.model), [])
        wanted = request.selector
        if not wanted:
            return samples
        return [s for s in samples if all(s.labels.get(name) == value for name, value in wanted)]

    def all_values(self) -> list[Sample]:
        """Every sample (for `query:` answers, which belong to one monitor)."""
        return list(self.answer.samples)


Compute = Callable[[SignalRequest, Sequence[Index]], Measurement]


@dataclass(frozen=True)
class Plan:
    """The queries one request needs (main query first) and how to turn their answers into its measurement."""

    queries: tuple[str, ...]
    compute: Compute


@dataclass(frozen=True)
class Restriction:
    """The models one part of a split batched query asks for (`modelmonitor.signals.split`): every series
    selector of the query gets a ``namespace`` and a ``model`` matcher listing them."""

    namespaces: tuple[str, ...]
    models: tuple[str, ...]

    def matchers(self, *, models: bool = True) -> tuple[str, ...]:
        """The matchers; without the model one for series that know pods, not models (cAdvisor's)."""
        namespace = matches_any("namespace", self.namespaces)
        return (namespace, matches_any("model", self.models)) if models else (namespace,)


@dataclass(frozen=True)
class Grouping:
    """The ``by (...)`` labels that tell the monitors of one batch apart, and which models the query asks for."""

    #: ``namespace, model`` plus ``version`` for monitors that name one.
    keys: tuple[str, ...]
    #: The union of the label names of ``spec.model.labels`` over the batch, sorted.
    extra: tuple[str, ...] = ()
    #: ``None``: every model's series (one query for the whole fleet); else only these models'.
    only: Restriction | None = None

    def by(self, *more: str) -> str:
        """The ``by`` clause: the grouping keys, the batch's extra labels, then ``more`` (each name once)."""
        return ", ".join(dict.fromkeys((*self.keys, *self.extra, *more)))

    def select(self, metric: str, *matchers: str, models: bool = True) -> str:
        """The series selector of ``metric`` with ``matchers`` (PromQL text such as ``result="joined"``) and the
        restriction's matchers, if any (``models=False``: only its namespaces, for series without a model)."""
        restricted = self.only.matchers(models=models) if self.only is not None else ()
        inner = ", ".join((*matchers, *restricted))
        return f"{metric}{{{inner}}}" if inner else metric

    @classmethod
    def of(
        cls, request: SignalRequest, extra: Sequence[str], *, version: bool = False, only: Restriction | None = None
    ) -> Grouping:
        """The grouping for ``request``: by version when it names one (or when ``version`` forces it)."""
        keys = ("namespace", "model", "version") if version or request.version is not None else ("namespace", "model")
        return cls(keys, tuple(extra), only)


def describe(request: SignalRequest) -> str:
    """The monitor's selection in PromQL terms, for NoData reasons."""
    parts = [f"namespace={quote(request.namespace)}", f"model={quote(request.model)}"]
    parts.extend(f"{name}={quote(value)}" for name, value in request.selector)
    return "{" + ", ".join(parts) + "}"


def no_series(request: SignalRequest, metric: str) -> Measurement:
    """NoData: not a single series of ``metric`` for the monitor's selection."""
    return Measurement.no_data(
        f"no {metric} series for {describe(request)} over {request.window} (is the sidecar scraped, and do its "
        "series carry the namespace label from service discovery"
        + (" and the labels of spec.model.labels" if request.labels else "")
        + "?)"
    )


def values(
    numbers: Sequence[float],
    samples: int | None,
    detail: str = "",
    *,
    threshold: float | None = None,
    labels: Sequence[Mapping[str, str]] | None = None,
) -> Measurement:
    """A measurement with one series per number; ``labels`` parallel to ``numbers`` when known."""
    label_pairs = [tuple(sorted(m.items())) for m in labels] if labels is not None else [() for _ in numbers]
    series = tuple(Series(v, samples, pairs) for v, pairs in zip(numbers, label_pairs, strict=True))
    return Measurement(MeasurementKind.VALUES, series, detail=detail, threshold=threshold)


def count(value: float) -> int:
    """A sample count from an extrapolated ``increase()`` (a float such as 199.7)."""
    return max(0, round(value))


def sum_by(samples: Iterable[Sample], label: str) -> dict[str, float]:
    """Sum sample values per value of ``label`` (across versions and extra labels the monitor does not name)."""
    totals: dict[str, float] = defaultdict(float)
    for sample in samples:
        if not math.isnan(sample.value):
            totals[sample.labels.get(label, "")] += sample.value
    return dict(totals)


def sum_by_two(samples: Iterable[Sample], first: str, second: str) -> dict[str, dict[str, float]]:
    """Sum sample values per (``first``, ``second``) label values, nested."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for sample in samples:
        if not math.isnan(sample.value):
            totals[sample.labels.get(first, "")][sample.labels.get(second, "")] += sample.value
    return {key: dict(inner) for key, inner in totals.items()}


def confusion(samples: Iterable[Sample]) -> dict[str, float] | None:
    """tp/fp/tn/fn summed over the selection; ``None`` when no labeled prediction series exists at all.

    An outcome absent while another is present is 0: its counter child is created on the first increment.
    """
    by_outcome = sum_by(samples, "outcome")
    if not by_outcome:
        return None
    return {outcome: by_outcome.get(outcome, 0.0) for outcome in ("tp", "fp", "tn", "fn")}
