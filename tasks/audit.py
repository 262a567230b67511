"""Tasks for the auditor's export: read the incident's history, seal it, store it beside the evidence."""

from __future__ import annotations

from typing import Any

from prefect import task

from remediation.audit import export as audit
from remediation.target import connect
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY

__all__ = [
    "build_audit_export", "read_incident_history", "store_audit_export", "store_incident_document",
    "verify_audit_export",
]


@task(name="build-audit-export", **READ_ONLY)
def build_audit_export(target: Target, incident_id: str) -> dict[str, Any]:
    return audit.build(target, incident_id, connect.evidence_store(target))


@task(name="store-audit-export", **{**READ_ONLY, "retries": 2})
def store_audit_export(target: Target, export: dict[str, Any]) -> dict[str, Any]:
    # Writes only new objects under a new, timestamped prefix: a retry cannot overwrite evidence.
    return audit.store(export, target, connect.evidence_store(target))


@task(name="verify-audit-export", **READ_ONLY)
def verify_audit_export(target: Target, export: dict[str, Any]) -> list[str]:
    return audit.verify(target, connect.evidence_store(target), export, export["chain_head"])


@task(name="read-incident-history", **READ_ONLY)
def read_incident_history(target: Target, incident_id: str) -> list[dict[str, Any]]:
    """Every run of the incident, as audit records (redacted), oldest first."""
    from prefect.client.orchestration import get_client

    from remediation.audit.history import flow_run_records, incident_runs
    from remediation.evidence.redact import for_target

    with get_client(sync_client=True) as client:
        items = flow_run_records(client, incident_runs(client, incident_id), for_target(target).text)
    return [{"kind": kind, "data": data} for kind, data in items]


@task(name="store-incident-document", **{**READ_ONLY, "retries": 2})
def store_incident_document(target: Target, incident_id: str, folder: str, filename: str, text: str) -> dict[str, Any]:
    """A document (e.g. the postmortem) in the incident's evidence: a new local folder and its S3 copy."""
    from datetime import UTC, datetime

    from remediation.evidence.bundle import bundle_dir, evidence_root, s3_prefix

    directory = bundle_dir(evidence_root(), incident_id, folder)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(text)
    store = connect.evidence_store(target)
    key = f"{s3_prefix(target.evidence.prefix, datetime.now(UTC), incident_id, folder)}/{filename}"
    stored = store.put_file(key, path)
    return {"local": str(path), "s3": f"s3://{store.bucket}/{key}", "sha256": stored.sha256_hex}
