"""postmortem: seed 000's template, drafted from the incident's real flow-run history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, State
from pydantic import Field

from remediation.domain.escalation import due_rule
from remediation.domain.postmortem import render_postmortem
from remediation.flowkit.params import DryRunRead, IncidentId, Initiator, SeverityChoice, TargetName, described
from remediation.flowkit.run_context import tag_current_run
from remediation.flowkit.runbook import runbook_text
from remediation.target.inventory import load_target
from tasks.evidence_store import store_incident_document
from tasks.prefect_api import read_incident_history

RUNBOOK = "postmortem"
Title = Annotated[str, Field(
    pattern=r"^[\w .,:!?()#/@+'—–-]{1,120}$",
    description="One-line title of the incident, the postmortem's heading (e.g. `deposits failing after a deploy`)",
)]
#: How the response loop ended, as the respond flow says it (no control characters).
Outcome = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]{1,600}$",
                               description="How the response loop ended, one line (`respond` fills it in); "
                                           "empty: the summary says what the run history shows")]
Escalated = Annotated[list[Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]{1,300}$")]], Field(
    max_length=50, description="Who the response loop escalated to, one line each starting with its UTC time "
                               "(`respond` fills it in); empty: none")]


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def postmortem(
    incident_id: IncidentId,
    target: TargetName = "sandbox",
    severity: SeverityChoice = "SEV2",
    title: Title = "incident",
    initiated_by: Initiator = "unknown",
    outcome: Outcome | None = None,
    escalated: Escalated | None = None,
    dry_run: DryRunRead = False,
) -> State:
    """Fill the template from the incident's runs: timeline in UTC, approvals, levers, revert, verification,
    reconciliation; store it as an artifact and in the incident's evidence."""
    log = get_run_logger()
    inv = load_target(target)
    tag_current_run(incident_id, RUNBOOK, inv.name)
    records = read_incident_history(inv, incident_id)
    text = render_postmortem(incident_id, severity, title, records, authors=[initiated_by, "<fix author>"],
                             outcome=outcome, escalated=escalated,
                             due_rule=due_rule(severity, inv.escalation.postmortem_due.get(severity)))
    create_markdown_artifact(key=f"postmortem-{incident_id.lower()}", markdown=text,
                             description=f"postmortem draft for {incident_id}")
    if dry_run:
        return Completed(message="dry run: draft shown as an artifact, not stored", data={"markdown": text})
    folder = f"postmortem-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    where = store_incident_document(inv, incident_id, folder, "postmortem.md", text)
    log.info("postmortem draft stored at %s", where["s3"])
    return Completed(message=f"postmortem drafted from {sum(r['kind'] == 'flow-run' for r in records)} run(s); "
                             f"stored at {where['s3']}", data={"markdown": text, **where})
