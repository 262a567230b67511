"""Webhook payloads the receiver accepts, and the one shape they all become: `AlertGroup`.

Sender payloads (Alertmanager, Grafana, Sentry) ignore unknown fields, because
senders add fields between versions and an upgrade must not start failing alerts.
The generic shape is ours, so it forbids unknown fields: a typo fails with 422.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from remediation.evidence.alert_context import AlertSource

__all__ = [
    "AlertGroup",
    "AlertmanagerAlert",
    "AlertmanagerWebhook",
    "GenericAlert",
    "GrafanaAlert",
    "GrafanaWebhook",
    "SentryEvent",
    "SentryWebhook",
]

Status = Literal["firing", "resolved"]
Labels = dict[str, str]
_MAX_SUMMARY = 500


class _Sender(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


@dataclass(frozen=True)
class AlertGroup:
    """One notification about one alert group, whatever sent it."""

    source: AlertSource
    group_key: str
    status: Status
    #: Earliest start among the group's alerts (UTC); with the group key it names the incident.
    starts_at: datetime | None
    #: Labels the routes match on (for a group: the labels every alert shares).
    labels: Labels
    summary: str = ""
    #: The sender's own ids for the alerts in this notification (Alertmanager fingerprints, Sentry issue id).
    alert_ids: tuple[str, ...] = field(default_factory=tuple)
    #: A group of alerts that fires, changes and resolves as one (Alertmanager, Grafana): its incident is
    #: named by its episode (`IntakeJournal.episode_start`), not by whichever alert is oldest right now.
    episodic: bool = False


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def _summary(*candidates: str | None) -> str:
    text = next((c for c in candidates if c), "")
    return text if len(text) <= _MAX_SUMMARY else text[: _MAX_SUMMARY - 1] + "…"


# --- Prometheus Alertmanager, webhook v4 ------------------------------------------------------
class AlertmanagerAlert(_Sender):
    # Field names are the wire format's (camelCase), so a model reads like the sender's docs.
    status: Status
    labels: Labels = {}
    annotations: Labels = {}
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""


class AlertmanagerWebhook(_Sender):
    version: Literal["4"]
    groupKey: str = Field(min_length=1, max_length=2048)
    truncatedAlerts: int = 0
    status: Status
    receiver: str = ""
    groupLabels: Labels = {}
    commonLabels: Labels = {}
    commonAnnotations: Labels = {}
    externalURL: str = ""
    alerts: list[AlertmanagerAlert] = Field(min_length=1)

    def to_group(self) -> AlertGroup:
        # The earliest start over every alert in the notification (firing or resolved), so the
        # firing and the later resolved notification of one group name the same incident.
        first = min(self.alerts, key=lambda a: a.startsAt)
        labels = dict(self.commonLabels) or dict(first.labels)
        return AlertGroup(
            source="alertmanager", episodic=True,
            group_key=self.groupKey,
            status=self.status,
            starts_at=_utc(first.startsAt),
            labels=labels,
            summary=_summary(
                self.commonAnnotations.get("summary"), first.annotations.get("summary"),
                self.commonAnnotations.get("description"), labels.get("alertname"),
            ),
            alert_ids=tuple(a.fingerprint for a in self.alerts if a.fingerprint),
        )


# --- Grafana alerting (unified alerting webhook contact point) --------------------------------
class GrafanaAlert(AlertmanagerAlert):
    dashboardURL: str = ""
    panelURL: str = ""
    silenceURL: str = ""
    valueString: str = ""


class GrafanaWebhook(_Sender):
    """Grafana's payload is Alertmanager's plus a title, a message and an org (`version` "1")."""

    version: str = "1"
    groupKey: str = Field(min_length=1, max_length=2048)
    status: Status
    receiver: str = ""
    orgId: int | None = None
    title: str = ""
    message: str = ""
    groupLabels: Labels = {}
    commonLabels: Labels = {}
    commonAnnotations: Labels = {}
    externalURL: str = ""
    alerts: list[GrafanaAlert] = Field(min_length=1)

    def to_group(self) -> AlertGroup:
        first = min(self.alerts, key=lambda a: a.startsAt)
        labels = dict(self.commonLabels) or dict(first.labels)
        key = f"{self.orgId}/{self.groupKey}" if self.orgId is not None else self.groupKey
        return AlertGroup(
            source="grafana", episodic=True, group_key=key, status=self.status, starts_at=_utc(first.startsAt),
            labels=labels,
            summary=_summary(
                self.commonAnnotations.get("summary"), first.annotations.get("summary"),
                self.title, labels.get("alertname"),
            ),
            alert_ids=tuple(a.fingerprint for a in self.alerts if a.fingerprint),
        )


# --- Sentry issue alert (integration platform, resource `event_alert`) ------------------------
class SentryEvent(_Sender):
    issue_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")
    event_id: str = ""
    project: int | str | None = None
    title: str = ""
    level: str = ""
    environment: str | None = None
    web_url: str = ""
    occurred_at: AwareDatetime | None = Field(default=None, alias="datetime")
    timestamp: float | None = None
    #: Sentry sends tags as [key, value] pairs.
    tags: list[tuple[str, str]] = []

    @field_validator("issue_id", mode="before")
    @classmethod
    def _issue_id_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) else v

    def occurred(self) -> datetime | None:
        if self.occurred_at is not None:
            return _utc(self.occurred_at)
        if self.timestamp is not None:
            return datetime.fromtimestamp(self.timestamp, UTC)
        return None


class SentryData(_Sender):
    event: SentryEvent
    triggered_rule: str = ""


class SentryWebhook(_Sender):
    action: str = "triggered"
    data: SentryData

    def to_group(self, window_s: int) -> AlertGroup:
        """An issue is Sentry's group; its start is the event time floored to the dedup window."""
        ev = self.data.event
        occurred = ev.occurred()
        if occurred is None:
            raise ValueError("data.event has neither `datetime` nor `timestamp`")
        bucket = int(occurred.timestamp()) // window_s * window_s
        labels: Labels = {k: v for k, v in ev.tags}
        labels.update({
            "project": str(ev.project or ""), "level": ev.level,
            "environment": ev.environment or labels.get("environment", ""),
            "sentry_rule": self.data.triggered_rule,
        })
        return AlertGroup(
            source="sentry", group_key=f"sentry:{ev.project}:{ev.issue_id}", status="firing",
            starts_at=datetime.fromtimestamp(bucket, UTC), labels={k: v for k, v in labels.items() if v},
            summary=_summary(ev.title, self.data.triggered_rule), alert_ids=(ev.issue_id,),
        )


# --- Generic JSON (ours) -----------------------------------------------------------------------
LabelName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class GenericAlert(BaseModel):
    """`POST /alerts/generic`: any system that can send JSON with a bearer token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Whatever groups notifications about one problem (same key + same start = same incident).
    group_key: str = Field(min_length=1, max_length=512)
    status: Status = "firing"
    #: When the problem started; timezone required (`2026-01-02T03:04:05Z`).
    starts_at: AwareDatetime
    labels: dict[LabelName, Annotated[str, Field(max_length=1024)]] = {}
    summary: str = Field(default="", max_length=2000)
    #: The sender's id for the alert, if it has one.
    fingerprint: str = Field(default="", max_length=128)

    def to_group(self) -> AlertGroup:
        return AlertGroup(
            source="generic", group_key=self.group_key, status=self.status, starts_at=_utc(self.starts_at),
            labels=dict(self.labels), summary=_summary(self.summary),
            alert_ids=(self.fingerprint,) if self.fingerprint else (),
        )
