"""Evidence bundles that S3 was down for, uploaded later; small objects read back for verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from remediation.errors import ClientError
from remediation.evidence.bundle import evidence_root, load_manifest, pending_bundles, upload_bundle
from remediation.evidence.redact import for_target
from remediation.target import connect
from remediation.target.inventory import Target, load_target

__all__ = ["fetch_manifest", "sync_bundles"]


def sync_bundles(root: Path | None = None) -> list[dict[str, Any]]:
    """Upload every pending bundle under `root` (default: the evidence root); each exactly once."""
    results: list[dict[str, Any]] = []
    for directory in pending_bundles(root or evidence_root()):
        manifest = load_manifest(directory)
        try:
            inv = load_target(manifest.target)
        except ClientError as exc:
            results.append({"bundle": str(directory), "uploaded": False, "error": str(exc)})
            continue
        redactor = for_target(inv)
        try:
            record, uploaded_now = upload_bundle(directory, connect.evidence_store(inv),
                                                 expect_lock=inv.evidence.object_lock_days is not None)
        except ClientError as exc:
            results.append({"bundle": str(directory), "uploaded": False, "error": redactor.text(str(exc))})
            continue
        results.append({"bundle": str(directory), "uploaded": uploaded_now,
                        "s3": f"s3://{record.bucket}/{record.prefix}/", "objects": len(record.objects)})
    return results


def fetch_manifest(target: Target, key: str, max_bytes: int = 16 * 1024 * 1024) -> bytes:
    """The bytes of one small object of the target's evidence bucket (a manifest, an export, a chain head)."""
    return connect.evidence_store(target).read_bytes(key, max_bytes)
