"""``spec.registry``: the MLflow model registry that holds the model's registered versions.

With a registry the workload always pins a version's immutable ``source`` URI, never an alias: a retrain's
registered version is pinned (``promote: {from: registry}``), moved under ``alias`` once it became
last-known-good, and a rollback moves ``alias`` back to the version of the last-known-good revision.
"""

from __future__ import annotations

import re

from pydantic import ConfigDict, Field, field_validator

from modelmonitor.api.auth import HttpAuth, HttpTLS
from modelmonitor.api.common import HTTP_URL_PATTERN, ApiModel, PositiveDuration, cel, k8s

# MLflow's own limits: registered model names and aliases (aliases are lower-case-insensitive identifiers and
# must not look like a version number, "v3", which MLflow refuses).
ALIAS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
TAG_KEY_PATTERN = r"^[A-Za-z0-9_.\-/ ]+$"

#: The tag a retraining Job puts on the model version it registered: its own name (``MODELMONITOR_JOB``).
JOB_TAG = "modelmonitor.dev/job"


class MlflowConnection(ApiModel):
    """How to reach the MLflow tracking server (its REST API serves the model registry)."""

    tracking_uri: str = Field(
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="Base URL of the MLflow tracking server, e.g. http://mlflow.mlops:5000.",
    )
    timeout: PositiveDuration = Field(default="10s", description="Time limit for each request to the registry.")
    auth: HttpAuth | None = Field(
        default=None,
        description=(
            "Credentials, read from Secrets: a bearer token (as MLFLOW_TRACKING_TOKEN) or a username and password "
            "(as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)."
        ),
    )
    tls: HttpTLS | None = Field(default=None, description="TLS settings for https:// tracking URIs.")


class RegistrySpec(ApiModel):
    """The registered model served by the target, in an MLflow model registry."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            validations=[
                cel(
                    "!self.alias.matches('^[vV][0-9]+$') && self.alias.lowerAscii() != 'latest'",
                    "alias must not be latest nor look like a version (v1): MLflow refuses such aliases",
                    field_path=".alias",
                )
            ]
        )
    )

    mlflow: MlflowConnection = Field(description="The MLflow tracking server.")
    model: str = Field(
        min_length=1, max_length=256, description="Name of the registered model (as in MLflow's registry)."
    )
    alias: str = Field(
        default="champion",
        min_length=1,
        max_length=255,
        pattern=ALIAS_PATTERN,
        description=(
            "The alias the operator moves: to a promoted version once its revision became last-known-good, and "
            "back to the last-known-good revision's version after a rollback."
        ),
    )
    previous_tag: str = Field(
        default="previous-champion",
        min_length=1,
        max_length=250,
        pattern=TAG_KEY_PATTERN,
        description=(
            "Tag set on the version the alias leaves when a promoted version takes it (value: when, and which "
            "version replaced it)."
        ),
    )
    rolled_back_tag: str = Field(
        default="rolled-back",
        min_length=1,
        max_length=250,
        pattern=TAG_KEY_PATTERN,
        description="Tag set on the version a rollback left (value: when, and why).",
    )

    @field_validator("alias")
    @classmethod
    def _check_alias(cls, alias: str) -> str:
        if alias.lower() == "latest" or re.fullmatch(r"[vV][0-9]+", alias):
            raise ValueError(f"{alias!r}: MLflow refuses the alias latest and aliases that look like a version (v1)")
        return alias
