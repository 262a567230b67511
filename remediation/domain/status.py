"""Status updates to the on-call channel, in seed 001's templates and Slack's incoming-webhook shape.

Seed 000: "status update every 30 min for SEV1/2 even when nothing changes". The respond flow
posts one at each state change and, for SEV1/SEV2, a periodic one from a background thread
while the incident is open. A failed post is logged and never stops the incident loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

import httpx
from pydantic import SecretStr

from remediation.target.inventory import Target

__all__ = [
    "PeriodicUpdates",
    "Severity",
    "StatusSender",
    "StatusWebhook",
    "initial_text",
    "resolved_text",
    "sender_for",
    "update_text",
]

Severity = Literal["SEV1", "SEV2", "SEV3", "SEV4"]
log = logging.getLogger("remediation.domain.status")


def initial_text(severity: str, service: str, incident_id: str, impact: str, every_min: float | None) -> str:
    lines = [f"🚨 Incident Alert - {severity}", "", f"Service: {service}", f"Incident: {incident_id}",
             f"Impact: {impact}", "Status: Investigating", "ETA: unknown"]
    if every_min:
        lines += ["", f"Updates will follow every {every_min:g} minutes."]
    return "\n".join(lines)


def update_text(severity: str, service: str, incident_id: str, status: str, impact: str, progress: str,
                next_steps: str, every_min: float | None) -> str:
    lines = [f"📊 Incident Update - {severity}", "", f"Service: {service}", f"Incident: {incident_id}",
             f"Status: {status}", f"Impact: {impact}", f"Progress: {progress}", f"Next Steps: {next_steps}"]
    if every_min:
        lines += ["", f"Next update in {every_min:g} minutes."]
    return "\n".join(lines)


def resolved_text(severity: str, service: str, incident_id: str, duration: str, root_cause: str,
                  resolution: str, review: str) -> str:
    return "\n".join([f"✅ Incident Resolved - {severity}", "", f"Service: {service}", f"Incident: {incident_id}",
                      f"Duration: {duration}", f"Root Cause: {root_cause}", f"Resolution: {resolution}", "",
                      f"Post-incident review scheduled for {review}."])


class StatusSender(Protocol):
    def send(self, text: str) -> bool: ...


class StatusWebhook:
    """Posts `{"text": ...}` to an incoming-webhook URL (a secret: it never reaches logs or errors)."""

    def __init__(self, url: SecretStr, client: httpx.Client) -> None:
        self._url = url
        self._http = client

    def send(self, text: str) -> bool:
        try:
            response = self._http.post(self._url.get_secret_value(), json={"text": text})
        except httpx.HTTPError as exc:
            log.warning("status update not delivered: %s", type(exc).__name__)
            return False
        if response.status_code >= 300:
            log.warning("status update not delivered: HTTP %d", response.status_code)
            return False
        return True


class _NoChannel:
    def send(self, text: str) -> bool:
        log.info("no status channel configured; update not sent: %s", text.splitlines()[0])
        return False


def sender_for(target: Target) -> StatusSender:
    cfg = target.notifications
    if cfg is None:
        return _NoChannel()
    return StatusWebhook(cfg.status_webhook.resolve(), httpx.Client(timeout=cfg.timeout_s))


@dataclass
class PeriodicUpdates:
    """Sends `make_text()` every `interval_s` until stopped; the first one after one interval."""

    interval_s: float
    make_text: Callable[[], str]
    sender: StatusSender
    sent: list[datetime] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="status-updates", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.sender.send(self.make_text()):
                self.sent.append(datetime.now(UTC))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
