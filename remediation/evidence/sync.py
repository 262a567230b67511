"""Evidence bundles that S3 was down for, uploaded later; small objects read back for verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from remediation.errors import ClientError
from remediation.evidence.anchored import anchor_bundle, unanchored_bundles
from remediation.evidence.bundle import evidence_root, load_manifest, pending_bundles, upload_bundle
from remediation.evidence.scrub import for_target
from remediation.target import connect
from remediation.target.inventory import Target, load_target

__all__ = ["fetch_manifest", "sync_bundles"]


def sync_bundles(root: Path | None = None) -> list[dict[str, Any]]:
    """Upload every pending bundle under `root` (default: the evidence root), each exactly once, and
    anchor every uploaded bundle whose anchor did not reach the target's database."""
    root = root or evidence_root()
    results = _upload_pending(root)
    failed = {r["bundle"] for r in results if "error" in r}
    for directory in unanchored_bundles(root):
        if str(directory) in failed:
            continue
        entry = next((r for r in results if r["bundle"] == str(directory)), None)
        inv = None
        if entry is None:
            entry = {"bundle": str(directory), "uploaded": False}
            results.append(entry)
        try:
            inv = load_target(load_manifest(directory).target)
            anchor = anchor_bundle(directory, connect.database(inv, "rp-evidence"))
        except ClientError as exc:
            entry["error"] = f"anchor not recorded: {for_target(inv).text(str(exc)) if inv else exc}"
            continue
        entry["anchored"] = f"manifest sha256 {anchor.sha256[:16]}…, {len(anchor.objects)} object versions"
    return results


def _upload_pending(root: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for directory in pending_bundles(root):
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
