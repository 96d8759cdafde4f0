"""The remediation actions a ModelMonitor can take, and the safety rails every action carries.

An action is one entry of ``spec.actions`` (a map from the action's name to its settings); ``type`` selects
which of scale, rollback, retrain or alert it is. In the CRD the four types share one object schema (a
structural schema cannot branch on a value); CEL rules generated from these models refuse the fields that do
not belong to the chosen type, and the per-type defaults below are applied by these models.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from modelmonitor.api.common import (
    DNS_SUBDOMAIN_PATTERN,
    HTTP_URL_PATTERN,
    PROMETHEUS_LABEL_PATTERN,
    ApiModel,
    Duration,
    LongText,
    PositiveDuration,
    ShortText,
    cel,
    field_error,
    k8s,
)

ActionType = Literal["scale", "rollback", "retrain", "alert"]
ACTION_TYPES: tuple[ActionType, ...] = ("scale", "rollback", "retrain", "alert")

_COOLDOWN_HELP = (
    "Minimum time between two runs of this action for this monitor (e.g. 5m). Defaults depend on the type: "
    "scale 5m, rollback 30m, retrain 6h, alert 0s."
)


class Budget(ApiModel):
    """At most `max` runs of this action in any sliding window of length `per`; further runs are skipped and
    recorded as Skipped in status."""

    max: int = Field(ge=1, le=10_000, description="How many runs are allowed within `per`.")
    per: PositiveDuration = Field(description="Length of the sliding window the budget applies to (e.g. 24h).")


class ActionRails(ApiModel):
    """Fields every action carries, whatever its type."""

    cooldown: Duration = Field(description=_COOLDOWN_HELP)
    budget: Budget | None = Field(
        default=None, description="A limit on how many times this action may run per time window."
    )
    dry_run: bool = Field(
        default=False,
        description="Decide but do not act: status and Events say what would have been done.",
    )
    require_approval: bool = Field(
        default=False,
        description=(
            "Wait for a person: the decided action is recorded as Pending in status and runs only once the "
            "ModelMonitor is annotated to approve it (the annotation and key are shown in status)."
        ),
    )


class ScaleDown(ApiModel):
    """Give back what this scale action added, once the policies that name it have stayed clear. Opt-in: without
    `scaleDown` replicas and HorizontalPodAutoscaler bounds the action raised stay where it left them."""

    enabled: bool = Field(
        default=True,
        description=(
            "Step back down after the policies clear. false keeps the settings but gives nothing back (replicas "
            "and HorizontalPodAutoscaler bounds stay where the action left them)."
        ),
    )
    stabilization_window: Duration = Field(
        default="5m",
        description=(
            "How long every policy that names this action must have stayed clear (Inactive, measured OK) before "
            "the first step down; as the HorizontalPodAutoscaler's scaleDown.stabilizationWindowSeconds (also 5m "
            "by default). NoData or Error on any of those policies is not clear: the window starts again once "
            "they are measured OK. Later steps down follow one per cooldown of the action."
        ),
    )
    step: int = Field(
        default=1,
        ge=1,
        le=1000,
        description=(
            "Replicas given back per step. Each step lowers the replicas (or, when a HorizontalPodAutoscaler "
            "targets the workload, the minReplicas it raised, and maxReplicas as far as it was raised) toward the "
            "count the action started from, never below the action's minReplicas; at most one step per cooldown "
            "of the action, counted together with its steps up."
        ),
    )


class ScaleAction(ActionRails):
    """Change the number of replicas of the target workload (Deployment, StatefulSet, or anything with a /scale
    subresource). When a HorizontalPodAutoscaler targets the workload, its minReplicas/maxReplicas are changed
    instead, so the operator never fights the autoscaler."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "has(self.step) != has(self.percent)",
                    "a scale action takes exactly one of step or percent",
                    field_path=".step",
                ),
                cel(
                    "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                    "minReplicas must not be greater than maxReplicas",
                    field_path=".minReplicas",
                ),
                cel("!has(self.step) || self.step != 0", "step must not be zero", field_path=".step"),
                cel("!has(self.percent) || self.percent != 0", "percent must not be zero", field_path=".percent"),
                cel(
                    "!has(self.scaleDown) || (has(self.step) && self.step > 0) || "
                    "(has(self.percent) && self.percent > 0)",
                    "scaleDown applies only to a scale action that scales up (a positive step or percent)",
                    field_path=".scaleDown",
                ),
            ]
        )
    )

    type: Literal["scale"] = Field(description="The kind of action: scale, rollback, retrain or alert.")
    cooldown: Duration = Field(default="5m", description=_COOLDOWN_HELP)
    step: int | None = Field(
        default=None,
        ge=-1000,
        le=1000,
        description="Replicas to add per run (negative to remove). Exactly one of step or percent.",
    )
    percent: int | None = Field(
        default=None,
        ge=-100,
        le=1000,
        description=(
            "Change the replica count by this percentage of the current count per run, rounded away from zero "
            "(negative to remove). Exactly one of step or percent."
        ),
    )
    min_replicas: int = Field(default=1, ge=0, le=100_000, description="Never scale below this many replicas.")
    max_replicas: int = Field(ge=1, le=100_000, description="Never scale above this many replicas (required).")
    stabilization_window: Duration = Field(
        default="0s",
        description=(
            "Recommendations over this window are compared and the most conservative one is applied, as in the "
            "HorizontalPodAutoscaler's behavior.stabilizationWindowSeconds; 0s applies each decision as made."
        ),
    )
    scale_down: ScaleDown | None = Field(
        default=None,
        description=(
            "Give back what the action added once its policies have stayed clear for a stabilization window: "
            "step back toward the replica count (or HorizontalPodAutoscaler minReplicas/maxReplicas) it started "
            "from, one step per cooldown, never below minReplicas, with the same dryRun, approval, cooldown and "
            "budget rails as its steps up. Only for actions that scale up; nothing is given back when it is "
            "absent. If someone else changes the replicas (or bounds) after the action's last step, it gives "
            "nothing back and says so in status."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> ScaleAction:
        if (self.step is None) == (self.percent is None):
            raise field_error("step", "a scale action takes exactly one of step or percent")
        if self.step == 0:
            raise field_error("step", "must not be zero")
        if self.percent == 0:
            raise field_error("percent", "must not be zero")
        if self.min_replicas > self.max_replicas:
            raise field_error("minReplicas", f"{self.min_replicas} is greater than maxReplicas ({self.max_replicas})")
        if self.scale_down is not None and (self.step or self.percent or 0) < 0:
            raise field_error("scaleDown", "applies only to a scale action that scales up (a positive step or percent)")
        return self


class RollbackAction(ActionRails):
    """Restore the target Deployment's pod template from its last-known-good ReplicaSet: the revision that was
    live while every policy stayed OK for `settlePeriod`. At most one automatic rollback per bad revision."""

    type: Literal["rollback"] = Field(description="The kind of action: scale, rollback, retrain or alert.")
    cooldown: Duration = Field(default="30m", description=_COOLDOWN_HELP)
    to: Literal["lastKnownGood"] = Field(
        default="lastKnownGood",
        description=(
            "Which revision to return to. lastKnownGood: the revision recorded in status.lastKnownGood, found "
            "by its pod-template hash (Kubernetes renumbers restored revisions)."
        ),
    )
    settle_period: PositiveDuration = Field(
        default="10m",
        description="How long every policy must stay OK on a revision before it becomes the last-known-good.",
    )


class EnvPromotion(ApiModel):
    """Write the model version into an environment variable of a container of the workload's pod template."""

    container: str = Field(max_length=63, min_length=1, description="Name of the container in the pod template.")
    name: str = Field(
        max_length=253,
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        description="Name of the environment variable that receives the version (e.g. MODEL_VERSION).",
    )


class ImagePromotion(ApiModel):
    """Use the model version as the image tag of a container of the workload's pod template."""

    container: str = Field(max_length=63, min_length=1, description="Name of the container in the pod template.")


class AnnotationPromotion(ApiModel):
    """Write the model version into an annotation of the workload's pod template (which starts a rollout)."""

    key: str = Field(
        max_length=317,
        pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Annotation key, e.g. modelmonitor.dev/model-version.",
    )


class PromotionTarget(ApiModel):
    """Where in the workload the new model version is written. Exactly one of env, image or annotation."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "[has(self.env), has(self.image), has(self.annotation)].filter(x, x).size() == 1",
                    "set exactly one of env, image or annotation",
                )
            ]
        )
    )

    env: EnvPromotion | None = Field(default=None, description="Set an environment variable to the version.")
    image: ImagePromotion | None = Field(default=None, description="Use the version as an image tag.")
    annotation: AnnotationPromotion | None = Field(
        default=None, description="Set a pod-template annotation to the version."
    )

    @model_validator(mode="after")
    def _check(self) -> PromotionTarget:
        chosen = [name for name in ("env", "image", "annotation") if getattr(self, name) is not None]
        if len(chosen) != 1:
            # The problem is the object as a whole: reported at its own location (…promote.to).
            raise ValueError(f"set exactly one of env, image or annotation (got {', '.join(chosen) or 'none'})")
        return self


class Promotion(ApiModel):
    """After the retraining Job succeeds, read the new model version from it and write it into the workload.
    The new revision must then stay healthy for the rollback settle period before it becomes last-known-good.
    A failed Job promotes nothing."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "self.from != 'annotation' || has(self.key)",
                    "key is required when from is annotation",
                    field_path=".key",
                ),
                cel(
                    "self.from != 'registry' || !has(self.to.image)",
                    "from: registry writes the version's source URI, which is no image tag: use to.env or "
                    "to.annotation",
                    field_path=".to",
                ),
                cel(
                    "self.from != 'registry' || (!has(self.key) && !has(self.container))",
                    "key and container belong to from: annotation or terminationMessage, not registry",
                    field_path=".from",
                ),
            ]
        )
    )

    from_: Literal["annotation", "terminationMessage", "registry"] = Field(
        alias="from",
        description=(
            "Where the Job reports the version. annotation: an annotation on the Job, named by key. "
            "terminationMessage: the termination message of the Job's container; if key is set the message is "
            "read as a JSON object and that key taken, otherwise the whole message (trimmed) is the version. "
            "registry: the version of spec.registry.model that the Job registered and tagged "
            "modelmonitor.dev/job=<its own name> (given to it as MODELMONITOR_JOB); its immutable source URI is "
            "written into the workload, and spec.registry.alias moves to it once its revision became "
            "last-known-good."
        ),
    )
    key: str | None = Field(
        default=None,
        max_length=317,
        min_length=1,
        description="The annotation key (from: annotation) or JSON key (from: terminationMessage).",
    )
    container: str | None = Field(
        default=None,
        max_length=63,
        description="For from: terminationMessage, the Job container to read; defaults to the first container.",
    )
    to: PromotionTarget = Field(description="Where the version is written in the target workload.")

    @model_validator(mode="after")
    def _check(self) -> Promotion:
        if self.from_ == "annotation" and self.key is None:
            raise field_error("key", "is required when from is annotation")
        if self.from_ == "registry":
            if self.to.image is not None:
                raise field_error(
                    "to", "from: registry writes a source URI, which is no image tag: use env or annotation"
                )
            if self.key is not None or self.container is not None:
                raise field_error("from", "key and container belong to annotation or terminationMessage, not registry")
        return self


class JobTemplateMetadata(ApiModel):
    """Labels and annotations for the retraining Job."""

    labels: dict[str, ShortText] = Field(
        default_factory=dict, max_length=64, description="Labels added to the Job (besides the operator's own)."
    )
    annotations: dict[str, LongText] = Field(
        default_factory=dict, max_length=64, description="Annotations added to the Job (besides the evidence)."
    )


class JobTemplate(ApiModel):
    """The Job to run, as in a CronJob's jobTemplate: optional metadata and a batch/v1 JobSpec."""

    metadata: JobTemplateMetadata | None = Field(default=None, description="Labels and annotations for the Job.")
    spec: dict[str, Any] = Field(
        description=(
            "A batch/v1 JobSpec (template.spec.containers, backoffLimit, activeDeadlineSeconds, ...). The pod "
            "runs as the action's serviceAccountName; the evidence (monitor, policy, signal, value, threshold, "
            "window) is added as MODELMONITOR_* environment variables and as annotations."
        ),
        json_schema_extra=k8s(preserve_unknown_fields=True),
    )


class RetrainAction(ActionRails):
    """Run a retraining Job from a template in the monitor's namespace, one at a time per monitor, and optionally
    promote the model version it produced into the workload."""

    type: Literal["retrain"] = Field(description="The kind of action: scale, rollback, retrain or alert.")
    cooldown: Duration = Field(default="6h", description=_COOLDOWN_HELP)
    job_template: JobTemplate = Field(description="The Job to create (required).")
    service_account_name: str = Field(
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=(
            "ServiceAccount the retraining pod runs as, in the monitor's namespace (required). Never the "
            "operator's own: the Job gets only the rights you grant this account."
        ),
    )
    concurrency: int = Field(
        default=1,
        ge=1,
        le=1,
        description="How many retraining Jobs of this monitor may run at once. Only 1 is supported.",
    )
    promote: Promotion | None = Field(
        default=None, description="Write the model version the Job produced into the workload on success."
    )

    @model_validator(mode="after")
    def _check(self) -> RetrainAction:
        # The Job spec is free-form in the CRD (x-kubernetes-preserve-unknown-fields), so the API server cannot
        # check it: these are the mistakes that would otherwise surface only when the Job is created.
        spec = self.job_template.spec
        template = spec.get("template")
        pod = template.get("spec") if isinstance(template, dict) else None
        if not isinstance(pod, dict):
            raise field_error("jobTemplate.spec.template.spec", "is required (the pod to run)")
        containers = pod.get("containers")
        if not isinstance(containers, list) or not containers:
            raise field_error("jobTemplate.spec.template.spec.containers", "must list at least one container")
        for i, container in enumerate(containers):
            if not isinstance(container, dict) or not container.get("name") or not container.get("image"):
                raise field_error(f"jobTemplate.spec.template.spec.containers[{i}]", "needs a name and an image")
        restart = pod.get("restartPolicy")
        if restart not in ("Never", "OnFailure"):
            raise field_error(
                "jobTemplate.spec.template.spec.restartPolicy",
                f"must be Never or OnFailure for a Job (got {restart!r})",
            )
        account = pod.get("serviceAccountName")
        if account is not None and account != self.service_account_name:
            raise field_error(
                "jobTemplate.spec.template.spec.serviceAccountName",
                f"{account!r} differs from serviceAccountName ({self.service_account_name!r}); set only the latter",
            )
        if self.promote is not None and self.promote.container is not None:
            names = [c.get("name") for c in containers]
            if self.promote.container not in names:
                raise field_error(
                    "promote.container", f"{self.promote.container!r} is not a container of the Job ({names})"
                )
        return self


class Endpoint(ApiModel):
    """An HTTP endpoint."""

    url: str = Field(max_length=2048, pattern=HTTP_URL_PATTERN, description="http:// or https:// URL of the endpoint.")


class AlertAction(ActionRails):
    """Tell people. A Kubernetes Event is always emitted; with alertmanager set, an alert is posted to the
    Alertmanager API v2 (labels and annotations carry monitor, policy, severity, value, threshold, window and
    query), re-sent while the policy fires and resolved when it clears; with webhook set, the same alert is
    POSTed as JSON."""

    type: Literal["alert"] = Field(description="The kind of action: scale, rollback, retrain or alert.")
    cooldown: Duration = Field(default="0s", description=_COOLDOWN_HELP)
    alertmanager: Endpoint | None = Field(
        default=None, description="Alertmanager to post to, e.g. http://alertmanager.monitoring:9093."
    )
    webhook: Endpoint | None = Field(default=None, description="Generic webhook receiving the alert as JSON.")
    resend_interval: PositiveDuration = Field(
        default="1m", description="How often a firing alert is re-sent (its endsAt is pushed forward each time)."
    )
    labels: dict[str, ShortText] = Field(
        default_factory=dict,
        max_length=16,
        description="Extra labels on the alert, for Alertmanager routing (e.g. team: fraud).",
        json_schema_extra=k8s(
            validations=[
                cel(
                    "self.all(k, k.matches('" + PROMETHEUS_LABEL_PATTERN + "'))",
                    "label names must match " + PROMETHEUS_LABEL_PATTERN,
                )
            ]
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> AlertAction:
        for key in self.labels:
            if not _is_label_name(key):
                raise field_error("labels", f"{key!r} is not a Prometheus label name")
        return self


def _is_label_name(name: str) -> bool:
    return re.fullmatch(PROMETHEUS_LABEL_PATTERN, name) is not None


Action = Annotated[
    ScaleAction | RollbackAction | RetrainAction | AlertAction,
    Field(discriminator="type"),
]
"""One named action: its ``type`` selects scale, rollback, retrain or alert."""
