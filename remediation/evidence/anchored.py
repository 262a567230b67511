"""Verification against the anchor recorded at upload, not against what the bucket says of itself.

A bundle is checked as it was anchored: the manifest *version* the upload verified must still hash
to the anchored SHA-256, every file version to its anchored hash, and any version written to one
of those keys since (or a delete marker) is named — a quiet overwrite of a file and its manifest
with matching metadata no longer reads OK. Without an anchor the bundle is checked against itself
and the missing anchor is reported as a problem of its own.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from remediation.clients.evidence_store import EvidenceStore, ObjectVersion
from remediation.errors import ClientError
from remediation.clients.database import Database
from remediation.evidence.bundle import (
    MANIFEST,
    UPLOADED,
    Manifest,
    UploadRecord,
    collector_files,
    load_manifest,
    read_upload,
    verify_s3,
)
from remediation.records.anchors import Anchor, AnchoredObject, EvidenceAnchors
from remediation.target import connect
from remediation.target.inventory import Target

__all__ = ["ANCHORED", "MAX_MANIFEST", "anchor_bundle", "anchor_for", "anchor_of_upload", "describe", "newer_versions",
           "unanchored_bundles", "verify_against_anchor", "verify_bundle"]

MAX_MANIFEST = 16 * 1024 * 1024
#: Written beside UPLOADED.json once the anchor is in the database.
ANCHORED = "ANCHORED.json"


def anchor_of_upload(record: UploadRecord, incident_id: str, flow_run_id: str | None) -> Anchor:
    return Anchor(
        prefix=record.prefix, bucket=record.bucket, kind="bundle", incident_id=incident_id,
        sha256=record.manifest_sha256, flow_run_id=flow_run_id,
        objects={name: AnchoredObject(key=o["key"], sha256=str(o["sha256"]), bytes=int(o["bytes"]),
                                      version_id=o.get("version_id"))
                 for name, o in record.objects.items()},
    )


def anchor_bundle(directory: Path, db: Database) -> Anchor:
    """Record an uploaded bundle's anchor (idempotent), then mark the bundle anchored."""
    record = read_upload(directory)
    if record is None:
        raise ValueError(f"bundle {directory} has not been uploaded yet")
    manifest = load_manifest(directory)
    anchor = EvidenceAnchors(db).record(anchor_of_upload(record, manifest.incident_id, manifest.flow_run_id))
    tmp = directory / f".{ANCHORED}.tmp"
    tmp.write_text(json.dumps({**describe(anchor), "at": str(anchor.at)}, indent=2) + "\n")
    tmp.replace(directory / ANCHORED)
    return anchor


def anchor_for(target: Target, prefix: str) -> Anchor | None:
    """The anchor recorded for `prefix` in the target's database, if any."""
    return EvidenceAnchors(connect.database(target, "rp-audit", read_only=True)).get(prefix)


def unanchored_bundles(root: Path) -> list[Path]:
    """Bundles uploaded whose anchor never reached the database (it was down), oldest first."""
    found = [u.parent for u in root.glob(f"*/*/{UPLOADED}") if not (u.parent / ANCHORED).exists()]
    return sorted(found, key=lambda d: (d / UPLOADED).stat().st_mtime)


def newer_versions(store: EvidenceStore, anchor: Anchor) -> list[str]:
    """Every anchored key whose latest version is not the anchored one, and objects nobody anchored."""
    by_key: dict[str, list[ObjectVersion]] = defaultdict(list)
    for version in store.versions(f"{anchor.prefix}/"):
        by_key[version.key].append(version)
    problems = []
    for name, obj in sorted(anchor.objects.items()):
        versions = by_key.pop(obj.key, [])
        latest = versions[0] if versions else None
        if latest is None:
            problems.append(f"{name}: s3://{anchor.bucket}/{obj.key} is gone (no version left)")
        elif latest.deleted:
            problems.append(f"{name}: deleted at {latest.last_modified:%Y-%m-%dT%H:%M:%SZ} (delete marker "
                            f"{latest.version_id}) after the anchored version {obj.version_id}")
        elif obj.version_id is not None and latest.version_id != obj.version_id:
            problems.append(f"{name}: a newer version {latest.version_id} ({latest.size} bytes) was written at "
                            f"{latest.last_modified:%Y-%m-%dT%H:%M:%SZ} over the anchored version {obj.version_id}")
    problems += [f"unexpected object s3://{anchor.bucket}/{key} (not in the anchor)" for key in sorted(by_key)]
    return problems


def verify_against_anchor(store: EvidenceStore, anchor: Anchor) -> tuple[Manifest, list[str]]:
    """Re-hash the anchored version of every object; name newer versions. The bundle's manifest is
    read at its anchored version, so a rewritten manifest cannot vouch for rewritten files."""
    anchored = anchor.objects.get(MANIFEST)
    if anchored is None:
        raise ValueError(f"the anchor of {anchor.prefix} has no {MANIFEST}")
    problems = []
    manifest_bytes = store.read_bytes(anchored.key, MAX_MANIFEST, version_id=anchored.version_id)
    if not store.verify(anchored.key, anchor.sha256, version_id=anchored.version_id):
        problems.append(f"{MANIFEST}: the anchored version {anchored.version_id} does not hash to the anchored "
                        f"sha256 {anchor.sha256}")
    manifest = Manifest.model_validate_json(manifest_bytes)
    for record in collector_files(manifest):
        name = str(record.file)
        obj = anchor.objects.get(name)
        if obj is None:
            problems.append(f"{name}: in the manifest but not in the anchor")
        elif obj.sha256 != record.sha256:
            problems.append(f"{name}: the manifest says sha256 {record.sha256}, the anchor {obj.sha256}")
        elif not _hashes(store, obj):
            problems.append(f"{name}: s3://{anchor.bucket}/{obj.key} version {obj.version_id} does not hash to "
                            f"the anchored {obj.sha256}")
    return manifest, problems + newer_versions(store, anchor)


def _hashes(store: EvidenceStore, obj: AnchoredObject) -> bool:
    try:
        return store.verify(obj.key, obj.sha256, version_id=obj.version_id)
    except ClientError:
        return False


def verify_bundle(store: EvidenceStore, prefix: str, anchor: Anchor | None) -> tuple[Manifest, list[str]]:
    """The anchored check when there is an anchor; else the bundle against itself, plus why that is weak."""
    if anchor is not None:
        return verify_against_anchor(store, anchor)
    manifest, problems = verify_s3(store, store.read_bytes(f"{prefix}/{MANIFEST}", MAX_MANIFEST), prefix)
    return manifest, [f"no anchor recorded for s3://{store.bucket}/{prefix}/ in the target's database: checked "
                      "only against its own manifest (run `evidence sync` to anchor a bundle uploaded late)",
                      *problems]


def describe(anchor: Anchor) -> dict[str, Any]:
    """The anchor as the capture run's result and artifact show it."""
    return {"manifest_sha256": anchor.sha256,
            "versions": {name: obj.version_id for name, obj in sorted(anchor.objects.items())}}
