"""Stable names for an alert group: incident id, group fingerprint, Prefect idempotency key.

All three derive from one basis, `source \\x1f group key \\x1f episode start (UTC, ISO)`. The
episode start is the earliest alert start the group had when it began firing, kept by the intake
journal until the group resolves (`IntakeJournal.episode_start`), so every retry and restart, and
every replica sharing the journal, computes the same values:

- incident id  `INC-<YYYYMMDD of the start>-<first 10 hex of sha256(basis)>`, e.g.
  `INC-20260314-3fa94c0b1e` (matches `remediation.flowkit.params.IncidentId`);
- fingerprint  first 16 hex of sha256(source \\x1f group key): one per group, the same for its
  firing and resolved notifications and across restarts of the group; the Prefect event
  resource is `remediation.alert.<fingerprint>`;
- idempotency key  `alert-capture:v1:<full sha256(basis)>`. Prefect keeps it per flow and
  forever, so a group that resolves and fires again (a new start) gets a new incident and a
  new run, while every repeat of one firing returns the run it already has.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from remediation.alerts.models import AlertGroup

__all__ = ["GroupIdentity", "group_fingerprint", "identify"]

_SEP = "\x1f"


@dataclass(frozen=True)
class GroupIdentity:
    incident_id: str
    fingerprint: str
    idempotency_key: str

    @property
    def short_fingerprint(self) -> str:
        return self.fingerprint[:12]


def group_fingerprint(group: AlertGroup) -> str:
    return hashlib.sha256(_SEP.join((group.source, group.group_key)).encode()).hexdigest()[:16]


def identify(group: AlertGroup, episode_start: datetime | None = None) -> GroupIdentity:
    """`episode_start`: the journal's start for the group (default: this notification's earliest)."""
    started = episode_start or group.starts_at
    start = started.isoformat() if started is not None else "-"
    basis = _SEP.join((group.source, group.group_key, start))
    digest = hashlib.sha256(basis.encode()).hexdigest()
    day = started.strftime("%Y%m%d") if started is not None else "0"
    fingerprint = group_fingerprint(group)
    return GroupIdentity(
        incident_id=f"INC-{day}-{digest[:10]}",
        fingerprint=fingerprint,
        idempotency_key=f"alert-capture:v1:{digest}",
    )
