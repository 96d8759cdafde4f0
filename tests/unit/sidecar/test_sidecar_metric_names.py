"""The sidecar exports exactly the names of `modelmonitor.metricnames`, which the operator's signals query."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from modelmonitor import metricnames
from modelmonitor.sidecar import Monitor
from modelmonitor.sidecar.profile import Profile

NAMES = {
    value
    for key, value in vars(metricnames).items()
    if key.isupper() and isinstance(value, str) and value.startswith(metricnames.PREFIX) and key != "PREFIX"
}


def test_every_exported_family_is_a_shared_name_and_every_shared_name_is_exported(profile: Profile) -> None:
    collector = Monitor(profile, model="churn", version="v3").collector()
    exported = {family.name + "_total" if family.type == "counter" else family.name for family in collector.describe()}
    assert exported == NAMES


def test_named_groups_are_exported_at_zero_before_any_prediction(profile: Profile) -> None:
    """A group's counter must exist at 0 before its first prediction, or increase() misses that prediction."""
    monitor = Monitor(profile, model="churn", version="v3")
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    assert profile.groups
    for group in profile.groups:
        for predicted in (metricnames.PREDICTED_POSITIVE, metricnames.PREDICTED_NEGATIVE):
            labels = {"model": "churn", "version": "v3", "group": group, "predicted": predicted}
            assert registry.get_sample_value(metricnames.GROUP_PREDICTIONS, labels) == 0
        for outcome in ("tp", "fp", "tn", "fn"):
            labels = {"model": "churn", "version": "v3", "group": group, "outcome": outcome}
            assert registry.get_sample_value(metricnames.LABELED_PREDICTIONS, labels) == 0
