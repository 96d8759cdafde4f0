"""The monitoring sidecar: turns a model's traffic into mergeable Prometheus metrics.

In-process use (a model server that logs its own predictions)::

    from prometheus_client import CollectorRegistry, start_http_server
    from modelmonitor.sidecar import Monitor, load_profile

    monitor = Monitor(load_profile("profile.json"), model="churn", version="v3")
    registry = CollectorRegistry()
    registry.register(monitor.collector())
    start_http_server(8081, registry=registry)
    monitor.log_batch(features, predictions=classes, scores=probabilities, request_ids=ids)
    monitor.log_labels([("r-1", 1), ("r-2", 0)])
"""

from modelmonitor.sidecar.encode import BatchError
from modelmonitor.sidecar.monitor import Monitor, MonitorSettings
from modelmonitor.sidecar.profile import Profile, ProfileError
from modelmonitor.sidecar.profile import load as load_profile

__all__ = ["BatchError", "Monitor", "MonitorSettings", "Profile", "ProfileError", "load_profile"]
