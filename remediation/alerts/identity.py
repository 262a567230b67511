"""Stable names for an alert group: incident id, group fingerprint, Prefect idempotency key.

All three derive from one basis, `source \\x1f group key \\x1f earliest start (UTC, ISO)`,
so every replica, retry and restart computes the same values with no shared memory:

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

from remediation.alerts.models import AlertGroup

__all__ = ["GroupIdentity", "identify"]

_SEP = "\x1f"


@dataclass(frozen=True)
class GroupIdentity:
    incident_id: str
    fingerprint: str
    idempotency_key: str

    @property
    def short_fingerprint(self) -> str:
        return self.fingerprint[:12]


def identify(group: AlertGroup) -> GroupIdentity:
    start = group.starts_at.isoformat() if group.starts_at is not None else "-"
    basis = _SEP.join((group.source, group.group_key, start))
    digest = hashlib.sha256(basis.encode()).hexdigest()
    day = group.starts_at.strftime("%Y%m%d") if group.starts_at is not None else "0"
    fingerprint = hashlib.sha256(_SEP.join((group.source, group.group_key)).encode()).hexdigest()[:16]
    return GroupIdentity(
        incident_id=f"INC-{day}-{digest[:10]}",
        fingerprint=fingerprint,
        idempotency_key=f"alert-capture:v1:{digest}",
    )
