"""Build, store and verify an incident's audit export.

`build` reads the incident's history (history.py), re-verifies every evidence bundle its
capture runs uploaded against its anchor, and seals the records in a hash chain. `store` writes
`export.json`, `report.md` and `chain-head.json` (signed, naming export.json's hash) under
`evidence/<incident>/audit-<stamp>/`, uploads them beside the incident's evidence in S3 and
anchors their versions and the head in the target's database. `verify` recomputes the chain,
checks the head's signature and that it is the anchored one, names any version written over
the export since, and re-verifies the evidence against its anchors again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client

from remediation.audit.chain import chain, check_signature, head_of, sign_head, verify_chain
from remediation.audit.history import MAX_RUNS, flow_run_records, incident_runs, scrub_record
from remediation.audit.report import render
from remediation.clients.evidence_store import EvidenceStore, sha256_file
from remediation.errors import ClientError, NotFoundError
from remediation.evidence.anchored import anchor_for, newer_versions, verify_bundle
from remediation.evidence.bundle import evidence_root, s3_prefix
from remediation.evidence.scrub import for_target
from remediation.records.anchors import Anchor, AnchoredObject, EvidenceAnchors
from remediation.records.change_log import ChangeLog
from remediation.target import connect
from remediation.target.inventory import Target

__all__ = ["EXPORT", "HEAD", "REPORT", "build", "evidence_locations", "signing_key", "store", "verify",
           "verify_evidence"]

SCHEMA = "remediation-pipelines/audit-export/v1"
EXPORT, REPORT, HEAD = "export.json", "report.md", "chain-head.json"


def evidence_locations(records: list[dict[str, Any]], bucket: str) -> list[str]:
    """S3 prefixes of the evidence bundles the incident's capture runs uploaded."""
    found = []
    for rec in records:
        data = rec["data"]
        result = data.get("result") if rec["kind"] == "flow-run" else None
        where = result.get("s3") if isinstance(result, dict) and result.get("uploaded") else None
        if isinstance(where, str) and where.startswith(f"s3://{bucket}/"):
            found.append(where.removeprefix(f"s3://{bucket}/").strip("/"))
    return sorted(set(found))


def verify_evidence(target: Target, evidence: EvidenceStore, prefixes: list[str]) -> list[dict[str, Any]]:
    checks = []
    for prefix in prefixes:
        try:
            manifest, problems = verify_bundle(evidence, prefix, anchor_for(target, prefix))
            files = sum(1 for c in manifest.collectors if c.file)
        except (ClientError, ValueError) as exc:
            problems, files = [f"{prefix}: cannot be read back: {exc}"], 0
        checks.append({"bundle": f"s3://{evidence.bucket}/{prefix}/", "files": files, "ok": not problems,
                       "problems": problems})
    return checks


def change_log_records(target: Target, incident_id: str) -> list[dict[str, Any]]:
    """Every lever change of the incident from the write-ahead log in the target's database: the intent,
    and its outcome — or that there is none (the run died in between)."""
    return [{
        "intent_id": e.intent_id, "lever": e.change.lever, "resource": e.change.resource,
        "description": e.change.description, "before": e.change.before, "after": e.change.after,
        "undo": e.change.undo, "plan_hash": e.plan_hash, "flow_run_id": e.flow_run_id, "approvers": e.approvers,
        "intended_at": e.intended_at.isoformat(),
        "outcome": e.outcome.outcome if e.outcome else None, "path": e.outcome.path if e.outcome else None,
        "note": e.outcome.note if e.outcome else "no outcome recorded: the run died between intent and outcome",
        "outcome_at": e.outcome.at.isoformat() if e.outcome else None,
    } for e in ChangeLog(connect.database(target, "rp-audit")).entries(incident_id)]


def build(target: Target, incident_id: str, evidence: EvidenceStore) -> dict[str, Any]:
    redact = for_target(target).text
    with get_client(sync_client=True) as client:
        runs = incident_runs(client, incident_id)
        if not runs:
            raise NotFoundError(f"no flow runs are tagged incident:{incident_id}")
        items = flow_run_records(client, runs, redact)
    generated = datetime.now(UTC)
    found = evidence_locations([{"kind": k, "data": d} for k, d in items], evidence.bucket)
    # Notes and problems are free text (a lever's note, an S3 error): redacted like every other record.
    checks = scrub_record(verify_evidence(target, evidence, found), redact)
    changes = scrub_record(change_log_records(target, incident_id), redact)
    records = chain(items + [("change-log", c) for c in changes] + [("evidence-check", c) for c in checks])
    return {
        "schema": SCHEMA, "incident_id": incident_id, "target": target.name, "generated_at": generated.isoformat(),
        "runs": len(runs), "truncated": len(runs) >= MAX_RUNS, "records": records, "chain_head": head_of(records),
    }


def signing_key(target: Target) -> tuple[bytes, str] | None:
    """The target's head-signing key and how it is referenced (None: the target signs nothing)."""
    if target.audit is None:
        return None
    ref = target.audit.signing_key
    return ref.resolve().get_secret_value().encode(), ref.describe()


def store(export: dict[str, Any], target: Target, evidence: EvidenceStore,
          root: Path | None = None) -> dict[str, Any]:
    """Write the export locally, upload it beside the evidence and anchor it in the target's database;
    returns where it went and the (signed) head as stored."""
    generated = datetime.fromisoformat(export["generated_at"])
    name = f"audit-{generated:%Y%m%dT%H%M%SZ}"
    directory = (root or evidence_root()) / export["incident_id"] / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / EXPORT).write_text(json.dumps(export, indent=1, sort_keys=True, default=str) + "\n")
    (directory / REPORT).write_text(render(export))
    head = {**export["chain_head"], "incident_id": export["incident_id"], "generated_at": export["generated_at"],
            "export_sha256": sha256_file(directory / EXPORT)[0]}
    key = signing_key(target)
    if key is not None:
        head = sign_head(head, *key)
    (directory / HEAD).write_text(json.dumps(head, sort_keys=True) + "\n")
    prefix = s3_prefix(target.evidence.prefix, generated, export["incident_id"], name)
    stored = {f: evidence.put_file(f"{prefix}/{f}", directory / f) for f in (EXPORT, REPORT, HEAD)}
    anchor = Anchor(
        prefix=prefix, bucket=evidence.bucket, kind="audit-export", incident_id=export["incident_id"],
        sha256=head["export_sha256"], chain_head=head,
        objects={f: AnchoredObject(key=o.key, sha256=str(o.sha256_hex), bytes=o.size, version_id=o.version_id)
                 for f, o in stored.items()},
    )
    EvidenceAnchors(connect.database(target, "rp-audit")).record(anchor)
    return {"local": str(directory), "s3": f"s3://{evidence.bucket}/{prefix}/", "prefix": prefix, "head": head,
            "sha256": {f: o.sha256_hex for f, o in stored.items()},
            "versions": {f: o.version_id for f, o in stored.items()}}


def verify(target: Target, evidence: EvidenceStore, export: dict[str, Any], head: dict[str, Any], *,
           prefix: str | None = None, export_sha256: str | None = None) -> list[str]:
    """Everything wrong with an export: a broken chain, a head that is unsigned, badly signed or not the
    one anchored at export time, export objects overwritten since, evidence that no longer matches its anchor.

    `prefix`: where the export lives in S3 (its anchor is looked up by it); `export_sha256`: the hash of
    the export.json bytes being verified (checked against the head)."""
    problems = verify_chain(export.get("records", []), head)
    if head.get("head") != export.get("chain_head", {}).get("head"):
        problems.append("the export's own chain_head field differs from the stored head")
    if export_sha256 is not None and head.get("export_sha256") not in (None, export_sha256):
        problems.append(f"export.json hashes to {export_sha256}, the chain head names {head.get('export_sha256')}")
    key = signing_key(target)
    problems += check_signature(head, key[0] if key else None)
    if prefix is not None:
        problems += _against_anchor(target, evidence, prefix, head)
    prefixes = evidence_locations(export.get("records", []), evidence.bucket)
    for check in verify_evidence(target, evidence, prefixes):
        problems += [f"evidence {check['bundle']}: {p}" for p in check["problems"]]
    return problems


def _against_anchor(target: Target, evidence: EvidenceStore, prefix: str, head: dict[str, Any]) -> list[str]:
    anchor = anchor_for(target, prefix)
    if anchor is None:
        return [f"no anchor recorded for the export at s3://{evidence.bucket}/{prefix}/ in the target's database"]
    problems = []
    if anchor.chain_head != head:
        problems.append("the chain head differs from the one recorded in the target's database at export time "
                        f"(recorded head {str((anchor.chain_head or {}).get('head'))[:16]}…, "
                        f"{(anchor.chain_head or {}).get('count')} records)")
    return problems + [f"export {p}" for p in newer_versions(evidence, anchor)]
