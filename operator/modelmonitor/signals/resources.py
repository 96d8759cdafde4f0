"""cpu (cores) and memory (bytes): cAdvisor's container metrics joined to the model's pods."""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelmonitor.metricnames import REQUEST_ERRORS
from modelmonitor.policy.model import Measurement
from modelmonitor.signals.answers import Grouping, Index, Plan, describe, values
from modelmonitor.signals.request import SignalRequest

SIGNALS = ("cpu", "memory")

# cAdvisor (kubelet) container metrics.
CONTAINER_CPU = "container_cpu_usage_seconds_total"
CONTAINER_MEMORY = "container_memory_working_set_bytes"


def plan(request: SignalRequest, grouping: Grouping, window: str) -> Plan:
    """One value per pod of the model.

    cAdvisor series know pods, not models: join them with an always-present sidecar series of the same pod (the
    error counter exists from the sidecar's start) to learn the pod's model. The sidecar side is the "many"
    side, so a pod serving several models gives each of them the pod's usage instead of failing the whole
    fleet's query with a many-to-many match error. The batch's extra labels (``spec.model.labels``, e.g.
    ``cluster``) are join keys too: in a store holding many clusters, pods of the same name in two clusters
    stay apart, and cAdvisor's series must carry those labels as the sidecar's do.
    """
    join = ", ".join(dict.fromkeys(("namespace", "pod", *grouping.extra)))
    pod_model = f"group by ({join}, model, version) ({grouping.select(REQUEST_ERRORS)})"
    containers = ('container!=""', 'container!="POD"')
    if request.signal == "cpu":
        usage = f"sum by ({join}) (rate({grouping.select(CONTAINER_CPU, *containers, models=False)}[{window}]))"
    else:
        usage = (
            f"sum by ({join}) (max_over_time({grouping.select(CONTAINER_MEMORY, *containers, models=False)}[{window}]))"
        )
    return Plan((f"{pod_model} * on ({join}) group_left () {usage}",), _compute)


def _compute(request: SignalRequest, answers: Sequence[Index]) -> Measurement:
    pods = answers[0].select(request)
    if not pods:
        return Measurement.no_data(
            f"{request.signal}: no {CONTAINER_CPU if request.signal == 'cpu' else CONTAINER_MEMORY} series "
            f"joined to {describe(request)} (needs cAdvisor metrics in this Prometheus and a pod label on the "
            "sidecar's series)"
        )
    usable = [s for s in pods if not math.isnan(s.value)]
    if not usable:
        return Measurement.no_data(f"{request.signal}: only NaN for {describe(request)}")
    names = ", ".join(sorted(s.labels.get("pod", "?") for s in usable))
    return values([s.value for s in usable], None, f"one value per pod: {names}", labels=[s.labels for s in usable])
