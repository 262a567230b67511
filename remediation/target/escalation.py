"""Who is told when an incident stays open, and when its postmortem is due — per target.

Seed 001's escalation matrix: "P1/P2: Engineering Manager at 30 min, CTO at 1 hour; P3: Team Lead, then
Engineering Manager; P4: Team Lead" (P1–P4 are SEV1–SEV4 here). Postmortem deadlines: seed 000 "5
business days for SEV1, 10 for SEV2"; seed 003 "within 2 business days for SEV-1, a week for SEV-2";
seed 004 "Post-mortem within 48 hours". Contacts are webhooks by role (Slack incoming-webhook shape), as
references: a webhook URL is a credential.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from remediation.domain.escalation import ROLE, EscalationStep, PostmortemDue
from remediation.target.secrets import SecretRef

__all__ = ["Contact", "Escalation"]

Severity = Literal["SEV1", "SEV2", "SEV3", "SEV4"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(_Strict):
    name: str = Field(min_length=1, max_length=120)
    #: Where the escalation is posted (Slack incoming-webhook shape: `{"text": ...}`).
    webhook: SecretRef


#: Seed 000's deadlines, for a target that names none.
SEED_000_DUE: dict[Severity, PostmortemDue] = {"SEV1": PostmortemDue(business_days=5),
                                               "SEV2": PostmortemDue(business_days=10)}


class Escalation(_Strict):
    #: Per severity, in order: who is told how long after acknowledgement if the incident is still open.
    ladder: dict[Severity, list[EscalationStep]] = {}
    contacts: dict[Annotated[str, Field(pattern=ROLE)], Contact] = {}
    postmortem_due: dict[Severity, PostmortemDue] = Field(default_factory=lambda: dict(SEED_000_DUE))

    @model_validator(mode="after")
    def _contacts_known(self) -> Escalation:
        missing = sorted({s.role for steps in self.ladder.values() for s in steps} - set(self.contacts))
        if missing:
            raise ValueError(f"escalation.ladder names roles without a contact: {missing}")
        return self
