"""What an alert tells a flow run it started: the shape the receiver hands to capture-evidence.

Shared contract between `remediation.alerts` (the receiver, which builds it from a
webhook) and `flows/capture_evidence.py` (which records it in the bundle's manifest).
It holds labels and a summary only; annotations, URLs and raw payloads stay out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

__all__ = ["AlertContext", "AlertSource"]

AlertSource = Literal["alertmanager", "grafana", "sentry", "generic"]


class AlertContext(BaseModel):
    source: AlertSource
    fingerprint: str
    group_key: str
    starts_at: datetime | None
    labels: dict[str, str]
    summary: str = ""
