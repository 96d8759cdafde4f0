"""The operator and sidecar images, built with podman from docker/Dockerfile (`modelmonitor images ...`)."""
