"""Tasks that read the Prefect API itself: an incident's run history, as the auditor and the postmortem see it."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client

from remediation.audit import export as audit
from remediation.audit.history import flow_run_records, incident_runs
from remediation.evidence.scrub import for_target
from remediation.target import connect
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY, task

__all__ = ["build_audit_export", "read_incident_history"]


@task(name="build-audit-export", **READ_ONLY)
def build_audit_export(target: Target, incident_id: str) -> dict[str, Any]:
    return audit.build(target, incident_id, connect.evidence_store(target))


@task(name="read-incident-history", **READ_ONLY)
def read_incident_history(target: Target, incident_id: str) -> list[dict[str, Any]]:
    """Every run of the incident, as audit records (redacted), oldest first."""
    with get_client(sync_client=True) as client:
        items = flow_run_records(client, incident_runs(client, incident_id), for_target(target).text)
    return [{"kind": kind, "data": data} for kind, data in items]
