"""audit-export: one incident's runs, approvals, side effects and evidence, sealed for auditors."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.states import Completed, Failed, State

from remediation.audit.history import incident_runs
from remediation.audit.report import render
from remediation.flowkit.params import DryRunRead, IncidentId, TargetName, described
from remediation.flowkit.runbook import runbook_text
from remediation.target.inventory import load_target
from tasks.evidence_store import store_audit_export, verify_audit_export
from tasks.prefect_api import build_audit_export

RUNBOOK = "audit-export"


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def audit_export(incident_id: IncidentId, target: TargetName = "sandbox", dry_run: DryRunRead = False) -> State:
    """Gather every run tagged with the incident, re-verify its evidence in S3, chain the records by
    hash, and store the report, the records and the chain head beside the evidence."""
    log = get_run_logger()
    inv = load_target(target)
    # Not tagged `incident:<id>` itself: an export is about the incident, not part of it.
    if dry_run:
        with get_client(sync_client=True) as client:
            runs = incident_runs(client, incident_id)
        return Completed(message=f"dry run: would export {len(runs)} run(s) of {incident_id}",
                         data={"outcome": "dry-run", "runs": [str(r.id) for r in runs]})
    export = build_audit_export(inv, incident_id)
    where = store_audit_export(inv, export)
    problems = verify_audit_export(inv, export, where)
    create_markdown_artifact(key=f"audit-{incident_id.lower()}", markdown=render(export),
                             description=f"audit export of {incident_id}; stored at {where['s3']}")
    log.info("audit export of %s: %d records, head %s, stored at %s", incident_id,
             export["chain_head"]["count"], export["chain_head"]["head"][:16], where["s3"])
    # The signed head in the run's result too: a third copy outside the bucket, beside the database's.
    data = {"where": where, "chain_head": where["head"], "runs": export["runs"], "problems": problems}
    if problems:
        return Failed(message=f"audit export stored, but {len(problems)} problem(s): {problems[0]}", data=data)
    return Completed(message=f"{export['runs']} run(s), {export['chain_head']['count']} records sealed; "
                             f"stored at {where['s3']}", data=data)
