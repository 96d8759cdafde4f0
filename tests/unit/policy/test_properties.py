"""Properties over arbitrary measurement sequences (hypothesis)."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from policy_support import T0, accuracy_rule, monitor

from modelmonitor.policy import (
    Measurement,
    OutcomeKind,
    PolicyState,
    Series,
    State,
    classify,
    evaluate,
    render_status,
    step,
)

HOLDS = st.sampled_from(
    [
        Measurement.error("timeout"),
        Measurement.error("HTTP 503"),
        Measurement.no_data("empty"),
        Measurement.values(),
        Measurement.value(float("nan"), 500),
        Measurement.value(0.1, 3),  # below minSamples: NoData
        Measurement.invalid("string result"),
    ]
)
VALUES = st.builds(
    lambda v, n: Measurement.value(v, n),
    st.floats(min_value=0.0, max_value=1.0),
    st.integers(min_value=0, max_value=1000),
)
MULTI = st.builds(
    lambda vs: Measurement.values(*(Series(v, 500) for v in vs)),
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=4),
)
ANY_MEASUREMENT = st.one_of(HOLDS, VALUES, MULTI)
GAPS = st.integers(min_value=1, max_value=400)
RULES = st.builds(
    lambda f, k, clear, no_data, reduce: accuracy_rule(
        for_seconds=f,
        keep_firing_for_seconds=k,
        clear_threshold=clear,
        no_data=no_data,
        reduce=reduce,
        min_samples=100,
    ),
    st.sampled_from([0, 30, 300]),
    st.sampled_from([0, 60]),
    st.sampled_from([None, 0.88]),
    st.sampled_from(["hold", "ok"]),
    st.sampled_from([None, "max", "min", "avg", "any", "all"]),
)


@settings(max_examples=200, deadline=None)
@given(
    rule=RULES,
    prefix=st.lists(st.tuples(GAPS, ANY_MEASUREMENT), max_size=8),
    holds=st.lists(st.tuples(GAPS, HOLDS), min_size=1, max_size=20),
)
def test_errors_and_missing_data_never_produce_an_action(rule, prefix, holds) -> None:  # type: ignore[no-untyped-def]
    """Whatever came before, a cycle whose measurement is Error, NoData or Invalid decides no action
    (with noData hold or ok; noData: breach is the user's explicit opt-in to act on absence)."""
    spec = monitor(rule)
    status: dict[str, object] = {}
    now = T0
    for gap, measurement in prefix:
        now += timedelta(seconds=gap)
        status = render_status(spec, evaluate(spec, status, {rule.name: measurement}, now), prior_status=status)
    for gap, measurement in holds:
        now += timedelta(seconds=gap)
        result = evaluate(spec, status, {rule.name: measurement}, now)
        assert not [d for d in result.decisions if d.kind.value == "act"]
        assert not any(s.started_firing for s in result.steps)
        status = render_status(spec, result, prior_status=status)


@settings(max_examples=300, deadline=None)
@given(rule=RULES, script=st.lists(st.tuples(GAPS, ANY_MEASUREMENT), min_size=1, max_size=25))
def test_state_round_trips_through_status_and_json(rule, script) -> None:  # type: ignore[no-untyped-def]
    """Every state the engine produces survives to_status -> JSON -> from_status unchanged, and continuing
    from the restored state gives the same result as continuing from the original."""
    state = PolicyState.initial(rule.name, T0)
    now = T0
    for gap, measurement in script:
        now += timedelta(seconds=gap)
        outcome = classify(rule, measurement, clearing=state.clearing)
        state = step(rule, state, outcome, now).state
        restored = PolicyState.from_status(json.loads(json.dumps(state.to_status())))
        assert restored == state
        state = restored


@settings(max_examples=200, deadline=None)
@given(rule=RULES, script=st.lists(st.tuples(GAPS, ANY_MEASUREMENT), min_size=1, max_size=25))
def test_episode_invariants(rule, script) -> None:  # type: ignore[no-untyped-def]
    """Firing is only entered on a Breach; an episode fires at most once; it never fires before `for`."""
    state = PolicyState.initial(rule.name, T0)
    now = T0
    fired_episodes: list[object] = []
    for gap, measurement in script:
        now += timedelta(seconds=gap)
        outcome = classify(rule, measurement, clearing=state.clearing)
        result = step(rule, state, outcome, now)
        if result.state.state is State.FIRING and state.state is not State.FIRING:
            assert outcome.kind is OutcomeKind.BREACH
        if result.started_firing:
            assert result.state.active_since not in fired_episodes
            fired_episodes.append(result.state.active_since)
            assert result.state.active_since is not None
            assert (now - result.state.active_since).total_seconds() >= rule.for_seconds
        if outcome.kind not in (OutcomeKind.OK, OutcomeKind.BREACH):
            assert result.state.active_since == state.active_since  # holds keep the episode
            assert result.state.episode_state is state.episode_state
        state = result.state
