"""The alert receiver: webhooks in, deduplicated read-only capture runs out (README.md here)."""

from __future__ import annotations

from remediation.alerts.app import create_app
from remediation.alerts.auth import Credentials
from remediation.alerts.identity import GroupIdentity, identify
from remediation.alerts.journal import IntakeJournal
from remediation.alerts.models import AlertGroup
from remediation.alerts.routing import ReceiverConfig, load_config
from remediation.alerts.starter import (
    PrefectRunStarter,
    RecordingRunStarter,
    RunStarter,
    StartError,
)

__all__ = [
    "AlertGroup",
    "Credentials",
    "GroupIdentity",
    "IntakeJournal",
    "PrefectRunStarter",
    "ReceiverConfig",
    "RecordingRunStarter",
    "RunStarter",
    "StartError",
    "create_app",
    "identify",
    "load_config",
]
