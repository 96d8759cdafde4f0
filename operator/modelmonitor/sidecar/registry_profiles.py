"""Reference profiles per registered model version, kept in the MLflow registry.

The reference a model is judged against belongs to the model version: ``modelmonitor profile build --registry``
stores the profile in the tracking server's artifact store and tags the registered version with its URI
(``modelmonitor.dev/profile``); the sidecar, given the registry and the version it serves (its number, or the
source URI the workload pins), loads that version's profile, so a promoted version is judged against its own
reference. Credentials come from MLflow's own environment variables (`modelmonitor.mlflowrest.settings_from_env`).
"""

from __future__ import annotations

from modelmonitor.mlflowrest import PROFILE_TAG, MlflowRegistry, RegistryError, settings_from_env


def artifact_path(model: str, version: str) -> str:
    """Where a version's profile is stored in the artifact store."""
    return f"modelmonitor/profiles/{model}/{version}/profile.json"


def store_profile(url: str, model: str, version: str, profile_json: bytes) -> str:
    """Store ``profile_json`` as the reference of version ``version`` of ``model``; the artifact's URI.
    Raises `RegistryError` (e.g. the version does not exist)."""
    client = MlflowRegistry(settings_from_env(url))
    try:
        client.version(model, version)  # refuse to store a profile for a version that does not exist
        uri = client.upload_artifact(artifact_path(model, version), profile_json)
        client.set_tag(model, version, PROFILE_TAG, uri)
        return uri
    finally:
        client.close()


def fetch_profile(url: str, model: str, *, version: str | None = None, source: str | None = None) -> tuple[bytes, str]:
    """The profile JSON of the version of ``model`` numbered ``version``, or pinned by ``source``, and a description
    of which version it is. Raises `RegistryError` naming what is missing."""
    client = MlflowRegistry(settings_from_env(url))
    try:
        if version is not None:
            found = client.version(model, version)
        elif source is not None:
            serving = client.serving(model, source)
            if serving is None:
                raise RegistryError(f"no registered version of {model} has the source {source}")
            found = serving
        else:
            raise RegistryError("name the version: its number or the source URI the model serves")
        uri = found.tags.get(PROFILE_TAG)
        if not uri:
            raise RegistryError(
                f"version {found.version} of {model} has no {PROFILE_TAG} tag: store its profile with "
                f"`modelmonitor profile build ... --registry {url} --registered-model {model} "
                f"--registered-version {found.version}`"
            )
        return client.download_artifact(uri), f"version {found.version} of {model} ({uri})"
    finally:
        client.close()
