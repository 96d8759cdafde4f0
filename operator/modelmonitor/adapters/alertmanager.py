"""Sending alerts: the Alertmanager API v2 and a generic JSON webhook, behind a Protocol.

Alertmanager identifies an alert by its label set; posting the same labels again refreshes it, and an alert
whose ``endsAt`` is in the past is resolved. So sending is idempotent: a re-send after an operator restart only
refreshes the alert. Blocking (``requests`` underneath); the actions call it from worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import requests


class AlertError(RuntimeError):
    """An alert could not be delivered; the message names the endpoint and what went wrong."""


class AlertSender(Protocol):
    """What the alert action needs."""

    def post_alerts(self, alertmanager_url: str, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST ``alerts`` (Alertmanager API v2 objects) to ``<alertmanager_url>/api/v2/alerts``."""
        ...

    def post_webhook(self, url: str, payload: Mapping[str, Any]) -> None:
        """POST ``payload`` as JSON to ``url``."""
        ...


class HttpAlertSender:
    """`AlertSender` over one `requests` session (connection reuse across alerts)."""

    def __init__(self, timeout_seconds: float = 5.0, session: requests.Session | None = None) -> None:
        self.timeout_seconds = timeout_seconds
        self.session = session if session is not None else requests.Session()

    def _post(self, url: str, body: Any, what: str) -> None:
        try:
            response = self.session.post(url, json=body, timeout=self.timeout_seconds)
        except requests.RequestException as exc:
            raise AlertError(f"{what} {url}: {type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise AlertError(f"{what} {url}: HTTP {response.status_code} {response.text[:300].strip()}")

    def post_alerts(self, alertmanager_url: str, alerts: Sequence[Mapping[str, Any]]) -> None:
        url = alertmanager_url.rstrip("/") + "/api/v2/alerts"
        self._post(url, [dict(a) for a in alerts], "posting to Alertmanager")

    def post_webhook(self, url: str, payload: Mapping[str, Any]) -> None:
        self._post(url, dict(payload), "posting to the webhook")
