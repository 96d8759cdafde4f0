"""Restricting a batched query to the models this replica measures: in parts, so that no Prometheus answer holds
more than a budget of series, and whenever those models are a small share of the whole answer.

A batched query asks for every model's series at once (one query per signal kind, whatever the number of
monitors). Its answer grows with the models in Prometheus: a latency histogram is about 9 series per model, so at
11,000 models one answer passes 100,000 series, which costs Prometheus, the wire and the operator's memory more
than it should. When a query's answer would pass the budget, it is sent in parts instead, each restricted to some
of the models this replica measures (``namespace=~"..."``, ``model=~"..."`` literal alternations, which cost
Prometheus no more than the whole query: docs/operator.md) and sized to fit.

Below the budget the query is also restricted when this replica's models select at most `RESTRICT_AT_MOST` of the
whole answer's series: with several replicas sharing the monitors each asks for its own share only (Prometheus
then works on each series once, not once per replica), and so does a replica whose monitors watch few of the
models in Prometheus. Otherwise (one replica measuring most of the models) it stays one unrestricted query. Which
share a restriction selects is known once the query has been answered whole, which is how a query that fits is
first sent.

The sizes come from the answers themselves: a `SeriesBook` remembers, per query, how many series its whole answer
and each (namespace, model) had in the last answers. A query never sent before is first counted with
``count (query)`` (one series); when that passes the budget, the models this replica asks for are counted with
``count by (namespace, model) (query)`` restricted to at most ``budget`` models at a time (one series per model),
and so are models that appear later (a new monitor). Between two cycles a model can grow (a new version being
rolled out, new features): a part can then pass the budget by that growth, once, until its answer is learnt. The
sizes of models no longer asked for (another replica's) are those of their last answer.

A part asks for the namespaces and the model names of its models, so it also selects the models in the cross
product of the two lists (``team-b/fraud`` when ``team-a/fraud`` and ``team-b/churn`` are in the part). Those are
counted in its size (the book knows them from earlier answers), kept out of the measurements (each model's series
are read from the part it belongs to only) and learnt like the rest. Parts are filled in (namespace, model) order,
so a part spans few namespaces and the cross product stays small; when the cross product selects more than
`RESTRICT_AT_MOST` of a query that fits the budget (the same model names in every namespace, shared out by
replica), the query is sent whole.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from modelmonitor.adapters.prometheus import Sample
from modelmonitor.signals.answers import Restriction

#: A model as the answers tell them apart: (namespace, model).
ModelKey = tuple[str, str]

#: The default budget: series in one Prometheus answer (``MODELMONITOR_MAX_SERIES_PER_ANSWER``).
DEFAULT_MAX_SERIES = 100_000

#: A query that fits the budget is restricted to this replica's models when they select at most this share of its
#: whole answer's series (two replicas: about half each).
RESTRICT_AT_MOST = 0.75

#: What is known of a query not sent for this long is dropped (a day: longer than any monitor's interval).
FORGET_AFTER_SECONDS = 24 * 3600.0


def counting(query: str) -> str:
    """The query that counts ``query``'s series per model: one series per model in the answer."""
    return f"count by (namespace, model) ({query})"


def total(query: str) -> str:
    """The query that counts ``query``'s series: one series (none when the answer would be empty)."""
    return f"count ({query})"


def model_of(sample: Sample) -> ModelKey:
    return (sample.labels.get("namespace", ""), sample.labels.get("model", ""))


@dataclass(frozen=True)
class Part:
    """One part of a split query: the models it is for, what it selects, and the series it should hold."""

    models: tuple[ModelKey, ...]
    restriction: Restriction
    #: Series expected in its answer, the cross product's included (unknown models count 0).
    expected: int


def restriction_of(models: Iterable[ModelKey]) -> Restriction:
    """The matchers that select ``models``: their namespaces and their model names, each sorted."""
    chosen = list(models)
    return Restriction(
        namespaces=tuple(sorted({namespace for namespace, _ in chosen})),
        models=tuple(sorted({model for _, model in chosen})),
    )


def split(models: Iterable[ModelKey], sizes: Mapping[ModelKey, int], budget: int) -> list[Part]:
    """Share ``models`` out over parts whose answers hold at most ``budget`` series each.

    ``sizes`` holds the series of every model known (requested or not: those in the cross product of a part's
    namespaces and model names are selected too, and counted). Each model is in exactly one part. A model larger
    than the budget on its own gets a part of its own (it cannot be cut further), which passes the budget.
    Greedy, in (namespace, model) order.
    """
    if budget < 1:
        raise ValueError(f"series budget {budget!r}: expected >= 1")
    by_namespace: dict[str, dict[str, int]] = defaultdict(dict)
    by_model: dict[str, dict[str, int]] = defaultdict(dict)
    for (namespace, model), size in sizes.items():
        by_namespace[namespace][model] = size
        by_model[model][namespace] = size

    parts: list[Part] = []
    chosen: list[ModelKey] = []
    namespaces: set[str] = set()
    names: set[str] = set()
    expected = 0

    def close() -> None:
        nonlocal chosen, namespaces, names, expected
        if chosen:
            parts.append(Part(tuple(chosen), restriction_of(chosen), expected))
        chosen, namespaces, names, expected = [], set(), set(), 0

    for key in sorted(set(models)):
        namespace, model = key
        added = _added(namespace, model, namespaces, names, by_namespace, by_model)
        if chosen and expected + added > budget:
            close()
            added = _added(namespace, model, namespaces, names, by_namespace, by_model)
        chosen.append(key)
        namespaces.add(namespace)
        names.add(model)
        expected += added
    close()
    return parts


def _added(
    namespace: str,
    model: str,
    namespaces: set[str],
    names: set[str],
    by_namespace: Mapping[str, Mapping[str, int]],
    by_model: Mapping[str, Mapping[str, int]],
) -> int:
    """Series a part selecting ``namespaces`` x ``names`` gains by adding ``namespace/model``."""
    added = 0
    if namespace not in namespaces:
        # The new namespace's models whose names the part already lists, and this one's.
        added += sum(size for name, size in by_namespace.get(namespace, {}).items() if name in names or name == model)
    if model not in names:
        # This name in the namespaces the part already lists (this namespace was counted above if new).
        added += sum(size for where, size in by_model.get(model, {}).items() if where in namespaces)
    return added


@dataclass
class SeriesBook:
    """What the answers of each batched query to one Prometheus held, and the budget: the series of the whole
    answer, and per model.

    Kept by the loop across cycles (one per Prometheus client), read and written by `measure`.
    """

    #: The most series one answer may hold.
    budget: int = DEFAULT_MAX_SERIES
    _totals: dict[str, int] = field(default_factory=dict)
    _sizes: dict[str, dict[ModelKey, int]] = field(default_factory=dict)
    _used: dict[str, float] = field(default_factory=dict)
    #: Queries whose size per model is known for every model of the whole answer (it was answered whole).
    _complete: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"series budget {self.budget!r}: expected >= 1")

    def known(self, query: str) -> bool:
        """Whether the size of ``query``'s whole answer is known (counted, or answered before)."""
        with self._lock:
            return query in self._totals

    def fits(self, query: str) -> bool:
        """Whether ``query``'s whole answer fits the budget, as far as is known."""
        with self._lock:
            return self._totals.get(query, 0) <= self.budget

    def counting_parts(self, query: str, models: Iterable[ModelKey]) -> list[Part]:
        """Parts to count the series of those of ``models`` whose size is unknown, with
        ``count by (namespace, model)``: one series per model selected, so at most ``budget`` models a part."""
        with self._lock:
            sizes = self._sizes.get(query, {})
            unknown = sorted({key for key in models if key not in sizes})
            ones = dict.fromkeys([*sizes, *unknown], 1)
        return split(unknown, ones, self.budget) if unknown else []

    def plan(self, query: str, models: Sequence[ModelKey]) -> list[Part] | None:
        """``None`` to send ``query`` whole (unrestricted), else its parts for ``models``: always when the whole
        answer would pass the budget, and below it when ``models`` select at most `RESTRICT_AT_MOST` of it."""
        with self._lock:
            whole = self._totals.get(query, 0)
            fits = whole <= self.budget
            if fits and (whole == 0 or query not in self._complete):
                return None
            sizes = dict(self._sizes.get(query, {}))
        limit = RESTRICT_AT_MOST * whole
        if fits and sum(sizes.get(key, 0) for key in models) > limit:
            return None  # the cross product only adds to the models' own series: no need to split to know
        parts = split(models, sizes, self.budget)
        if fits and sum(part.expected for part in parts) > limit:
            return None
        return parts

    def learn_total(self, query: str, total: int) -> None:
        """Remember the series of ``query``'s whole answer, counted with ``count(query)``."""
        with self._lock:
            self._totals[query] = total
            self._used[query] = time.monotonic()

    def learn(
        self, query: str, samples: Iterable[Sample], asked: Iterable[ModelKey], *, whole: bool, counted: bool
    ) -> None:
        """Remember the series per model of an answer to ``query``.

        ``asked``: the models the answer was for; one absent from it has no series (0). ``whole``: the answer was
        not restricted, so it replaces everything known of the query. ``counted``: the answer is a
        ``count by (namespace, model)`` of the query, whose values are the sizes; otherwise every sample is one
        series. The whole answer's size follows an answer (a part's models are updated in it, the others kept).
        """
        found: dict[ModelKey, int] = dict.fromkeys(asked, 0)
        for sample in samples:
            key = model_of(sample)
            found[key] = found.get(key, 0) + (int(sample.value) if counted else 1)
        with self._lock:
            sizes = {} if whole else self._sizes.setdefault(query, {})
            if whole:
                self._complete.add(query)
            before = sum(sizes.get(key, 0) for key in found)
            sizes.update(found)
            self._sizes[query] = sizes
            if not counted:
                # A count of some models is already in the whole answer's count; an answer is what it is now.
                total = 0 if whole else self._totals.get(query, 0)
                self._totals[query] = max(0, total + sum(found.values()) - before)
            self._used[query] = time.monotonic()

    def forget_unused(self, seconds: float = FORGET_AFTER_SECONDS) -> None:
        """Drop what is known of queries not answered for ``seconds`` (a policy removed, a window changed)."""
        oldest = time.monotonic() - seconds
        with self._lock:
            for query in [q for q, used in self._used.items() if used < oldest]:
                del self._used[query]
                self._sizes.pop(query, None)
                self._totals.pop(query, None)
                self._complete.discard(query)
