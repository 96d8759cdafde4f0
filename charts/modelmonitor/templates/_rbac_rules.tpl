{{/*
The operator's RBAC rules, generated from operator/modelmonitor/rbac.py (RULES and LEASE_RULES, the one
definition) by `make generate`: do not edit by hand. tests/unit/test_chart.py fails when this file and the
module disagree.
*/}}
{{- define "modelmonitor.rbacRules" -}}
# watch ModelMonitors (specs and approval annotations)
- apiGroups: ["modelmonitor.dev"]
  resources: ["modelmonitors"]
  verbs: ["get", "list", "watch"]
# write each monitor's status
- apiGroups: ["modelmonitor.dev"]
  resources: ["modelmonitors/status"]
  verbs: ["get", "patch", "update"]
# post Events on monitors (transitions, actions, alerts); patch counts a repeated Event on the same object
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# read the Prometheus credentials a monitor names, cached per TTL (no list, no watch: not every Secret)
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# scale steps and ledgers (patch), rollback and promotion of the pod template (update, with resourceVersion)
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "patch", "update"]
# the revision history: last-known-good and rollback
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get", "list"]
# find an HPA targeting the workload and change its bounds instead of the replicas
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "patch"]
# create retraining Jobs, follow them, mark them handled
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "create", "patch"]
# read the termination message of a retraining Job's pod
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
{{- end }}
{{- define "modelmonitor.leaseRules" -}}
# each replica holds and renews its own Lease, reads the others' to share the monitors, deletes its own on a clean stop and those not renewed for an hour
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "create", "update", "delete"]
{{- end }}
