"""When an open incident is escalated, what the contact is told, and when its postmortem is due."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from remediation.domain.postmortem import business_days_after

__all__ = ["ROLE", "EscalationStep", "PostmortemDue", "due_rule", "due_steps", "escalation_text", "postmortem_due"]

ROLE = r"^[a-z][a-z0-9-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EscalationStep(_Strict):
    #: Seconds after the incident was acknowledged (seed 001: 1800 and 3600).
    after_s: float = Field(ge=0, le=7 * 86400)
    role: Annotated[str, Field(pattern=ROLE)]


class PostmortemDue(_Strict):
    business_days: int | None = Field(default=None, ge=1, le=60)
    hours: float | None = Field(default=None, gt=0, le=24 * 60)

    @model_validator(mode="after")
    def _one(self) -> PostmortemDue:
        if (self.business_days is None) == (self.hours is None):
            raise ValueError("a postmortem deadline is either business_days or hours")
        return self


def due_steps(steps: list[EscalationStep], elapsed_s: float, done: set[int]) -> list[tuple[int, EscalationStep]]:
    """The ladder's steps whose time has come and that were not taken yet, in order."""
    return [(i, s) for i, s in enumerate(steps) if i not in done and elapsed_s >= s.after_s]


def escalation_text(severity: str, service: str, incident_id: str, role: str, name: str, open_min: float,
                    status: str, impact: str, progress: str) -> str:
    return "\n".join([f"⏫ Incident Escalation - {severity}", "", f"To: {name} ({role})", f"Service: {service}",
                      f"Incident: {incident_id}", f"Open for: {open_min:.0f} min", f"Status: {status}",
                      f"Impact: {impact}", f"Progress: {progress}", "",
                      "Escalated by the target's ladder (seed 001 escalation matrix)."])


def postmortem_due(declared: datetime, rule: PostmortemDue | None) -> datetime | None:
    """When the postmortem is due: so many business days after the declaration day, or so many hours after."""
    if rule is None:
        return None
    if rule.hours is not None:
        return declared + timedelta(hours=rule.hours)
    assert rule.business_days is not None
    day = business_days_after(declared.date(), rule.business_days)
    return datetime.combine(day, declared.timetz())


def due_rule(severity: str, rule: PostmortemDue | None) -> Callable[[datetime], tuple[datetime | None, str]]:
    """The postmortem's deadline as the target declares it for `severity`, for `render_postmortem`."""
    def due(declared: datetime) -> tuple[datetime | None, str]:
        if rule is None:
            return None, f"the target sets no deadline for {severity}"
        how = (f"{rule.hours:g} hours after {declared:%Y-%m-%d %H:%M} UTC" if rule.hours is not None
               else f"{rule.business_days} business days after {declared.date().isoformat()}")
        return postmortem_due(declared, rule), f"{how}, the target's rule for {severity}"
    return due
