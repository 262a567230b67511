"""Tasks on the evidence store (S3): upload and re-verify bundles, store the auditor's export and
incident documents beside the evidence. Every write is idempotent by itself (identical objects are
skipped; new objects go under new, timestamped prefixes), so none is cached: a re-run looks at S3 again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from remediation.audit import export as audit
from remediation.evidence.anchored import anchor_bundle, describe
from remediation.evidence.bundle import UploadRecord, bundle_dir, evidence_root, s3_prefix, upload_bundle
from remediation.target import connect
from remediation.target.inventory import Target
from tasks.policy import IDEMPOTENT_WRITE, READ_ONLY, task

__all__ = ["anchor_evidence_bundle", "store_audit_export", "store_incident_document", "upload_evidence_bundle",
           "verify_audit_export"]


@task(name="upload-evidence-bundle", **IDEMPOTENT_WRITE)
def upload_evidence_bundle(
    target: Target, bundle: str, verified: dict[str, dict[str, Any]] | None = None
) -> UploadRecord:
    """Upload, stream back and re-hash every object, then mark the bundle uploaded (idempotent).
    `verified`: the files this run already uploaded and re-verified early (`EarlyUpload`)."""
    store = connect.evidence_store(target)
    record, _ = upload_bundle(Path(bundle), store, expect_lock=target.evidence.object_lock_days is not None,
                              verified=verified)
    return record


@task(name="anchor-evidence-bundle", **IDEMPOTENT_WRITE)
def anchor_evidence_bundle(target: Target, bundle: str) -> dict[str, Any]:
    """Record the uploaded bundle's versions and hashes in the target's database, outside the bucket."""
    return describe(anchor_bundle(Path(bundle), connect.database(target, "rp-evidence")))


@task(name="store-audit-export", **IDEMPOTENT_WRITE)
def store_audit_export(target: Target, export: dict[str, Any]) -> dict[str, Any]:
    # Writes only new objects under a new, timestamped prefix: a retry cannot overwrite evidence.
    return audit.store(export, target, connect.evidence_store(target))


@task(name="verify-audit-export", **READ_ONLY)
def verify_audit_export(target: Target, export: dict[str, Any], where: dict[str, Any]) -> list[str]:
    """Read back what `store_audit_export` wrote: the head it signed and anchored, the export's objects."""
    return audit.verify(target, connect.evidence_store(target), export, where["head"], prefix=where["prefix"],
                        export_sha256=where["sha256"][audit.EXPORT])


@task(name="store-incident-document", **IDEMPOTENT_WRITE)
def store_incident_document(target: Target, incident_id: str, folder: str, filename: str, text: str) -> dict[str, Any]:
    """A document (e.g. the postmortem) in the incident's evidence: a new local folder and its S3 copy."""
    directory = bundle_dir(evidence_root(), incident_id, folder)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(text)
    store = connect.evidence_store(target)
    key = f"{s3_prefix(target.evidence.prefix, datetime.now(UTC), incident_id, folder)}/{filename}"
    stored = store.put_file(key, path)
    return {"local": str(path), "s3": f"s3://{store.bucket}/{key}", "sha256": stored.sha256_hex}
