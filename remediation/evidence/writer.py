"""The one way a bundle is written: `evidence/<incident>/<run-key>/`, its files, then its manifest.

capture-evidence's collectors write their own files into `directory` (concurrently, as tasks);
other runbooks (reconcile's mismatch lists) add theirs with `add`. Either way `seal` writes the
manifest last, and the bundle goes to S3 through the same upload and re-verification.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from remediation.evidence.bundle import (
    CollectorRecord,
    EvidenceFile,
    Manifest,
    bundle_dir,
    evidence_root,
    now,
    s3_prefix,
    write_manifest,
)
from remediation.evidence.redact import Redactor
from remediation.evidence.scrub import for_target
from remediation.target.inventory import Target

__all__ = ["BundleWriter", "FileBody"]

FileBody = Callable[[EvidenceFile], None]


class BundleWriter:
    def __init__(
        self, target: Target, incident_id: str, run_key: str, *, profile: str, initiated_by: str,
        flow_run_id: str | None, flow_run_name: str | None = None, redactor: Redactor | None = None,
        root: Path | None = None,
    ) -> None:
        self.target, self.incident_id, self.run_key = target, incident_id, run_key
        self.profile, self.initiated_by = profile, initiated_by
        self.flow_run_id, self.flow_run_name = flow_run_id, flow_run_name
        self.redactor = redactor or for_target(target)
        self.created = now()
        self.directory = bundle_dir(root or evidence_root(), incident_id, run_key)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.s3_prefix = s3_prefix(target.evidence.prefix, self.created, incident_id, run_key)

    def add(self, name: str, what: str, body: FileBody, *, kind: str) -> CollectorRecord:
        """Write one file through redaction, hashed as it lands; its manifest record."""
        started = now()
        out = EvidenceFile(self.directory / name, self.redactor)
        try:
            body(out)
        finally:
            size, sha, by_rule = out.close()
        return CollectorRecord(
            collector=name.rsplit(".", 1)[0], kind=kind, file=name, what=self.redactor.text(what), status="ok",
            started_at=started, ended_at=now(), bytes=size, sha256=sha, redactions=sum(by_rule.values()),
            redactions_by_rule=by_rule)

    def seal(self, records: list[CollectorRecord], *, alert_fingerprint: str | None = None,
             alert: dict[str, Any] | None = None) -> tuple[Manifest, str]:
        """Write manifest.json (atomically, last); the manifest and its SHA-256."""
        t = self.target
        manifest = Manifest(
            incident_id=self.incident_id, target=t.name, environment=t.environment, profile=self.profile,
            run_id=self.run_key, flow_run_id=self.flow_run_id, flow_run_name=self.flow_run_name,
            initiated_by=self.initiated_by, alert_fingerprint=alert_fingerprint, alert=alert,
            created_at=self.created, s3_bucket=t.evidence.bucket, s3_prefix=self.s3_prefix, collectors=records,
        )
        return manifest, write_manifest(self.directory, manifest)
