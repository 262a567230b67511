"""Tasks for the auditor's export: read the incident's history, seal it, store it beside the evidence."""

from __future__ import annotations

from typing import Any

from prefect import task

from remediation import connect
from remediation.audit import export as audit
from remediation.inventory import Target
from remediation.policy import READ_ONLY

__all__ = ["build_audit_export", "store_audit_export", "verify_audit_export"]


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
