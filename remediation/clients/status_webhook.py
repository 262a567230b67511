"""The on-call channel: a Slack-shaped incoming webhook (`{"text": ...}`). A failed post is logged and
reported as not delivered; it never raises, so a status update can never stop an incident loop."""

from __future__ import annotations

import logging
from typing import Protocol

import httpx
from pydantic import SecretStr

from remediation.domain.text import for_slack

__all__ = ["NoChannel", "StatusSender", "StatusWebhook"]

log = logging.getLogger("remediation.status")


class StatusSender(Protocol):
    def send(self, text: str) -> bool: ...


class StatusWebhook:
    """Posts `{"text": ...}` to an incoming-webhook URL (a secret: it never reaches logs or errors).
    Our texts use no Slack markup, so all of it is escaped: nothing quoted in it can mention or link."""

    def __init__(self, url: SecretStr, client: httpx.Client) -> None:
        self._url = url
        self._http = client

    def send(self, text: str) -> bool:
        try:
            response = self._http.post(self._url.get_secret_value(), json={"text": for_slack(text)})
        except httpx.HTTPError as exc:
            log.warning("status update not delivered: %s", type(exc).__name__)
            return False
        if response.status_code >= 300:
            log.warning("status update not delivered: HTTP %d", response.status_code)
            return False
        return True


class NoChannel:
    """A target without a channel: updates are logged, not sent."""

    def send(self, text: str) -> bool:
        log.info("no status channel configured; update not sent: %s", text.splitlines()[0])
        return False
