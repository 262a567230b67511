"""Build, store and verify an incident's audit export.

`build` reads the incident's history (gather.py), re-verifies every evidence bundle its
capture runs uploaded, and seals the records in a hash chain. `store` writes `export.json`,
`report.md` and `chain-head.json` under `evidence/<incident>/audit-<stamp>/` and uploads them
beside the incident's evidence in S3 (re-verified like any evidence). `verify` recomputes the
chain against the stored head and re-hashes the evidence objects again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client

from remediation.audit.chain import chain, head_of, verify_chain
from remediation.audit.history import MAX_RUNS, flow_run_records, incident_runs
from remediation.audit.report import render
from remediation.clients.evidence_store import EvidenceStore
from remediation.errors import ClientError, NotFoundError
from remediation.evidence.bundle import MANIFEST, evidence_root, s3_prefix, verify_s3
from remediation.evidence.redact import for_target
from remediation.evidence.sync import fetch_manifest
from remediation.records.change_log import ChangeLog
from remediation.target import connect
from remediation.target.inventory import Target

__all__ = ["EXPORT", "HEAD", "REPORT", "build", "evidence_locations", "store", "verify", "verify_evidence"]

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
            manifest, problems = verify_s3(evidence, fetch_manifest(target, f"{prefix}/{MANIFEST}"), prefix)
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
    checks = verify_evidence(target, evidence, found)
    changes = change_log_records(target, incident_id)
    records = chain(items + [("change-log", c) for c in changes] + [("evidence-check", c) for c in checks])
    return {
        "schema": SCHEMA, "incident_id": incident_id, "target": target.name, "generated_at": generated.isoformat(),
        "runs": len(runs), "truncated": len(runs) >= MAX_RUNS, "records": records, "chain_head": head_of(records),
    }


def store(export: dict[str, Any], target: Target, evidence: EvidenceStore,
          root: Path | None = None) -> dict[str, Any]:
    """Write the export locally and upload it beside the evidence; returns where it went."""
    generated = datetime.fromisoformat(export["generated_at"])
    name = f"audit-{generated:%Y%m%dT%H%M%SZ}"
    directory = (root or evidence_root()) / export["incident_id"] / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / EXPORT).write_text(json.dumps(export, indent=1, sort_keys=True, default=str) + "\n")
    (directory / REPORT).write_text(render(export))
    (directory / HEAD).write_text(json.dumps({**export["chain_head"], "incident_id": export["incident_id"],
                                              "generated_at": export["generated_at"]}, sort_keys=True) + "\n")
    prefix = s3_prefix(target.evidence.prefix, generated, export["incident_id"], name)
    uploaded = {f: evidence.put_file(f"{prefix}/{f}", directory / f).sha256_hex for f in (EXPORT, REPORT, HEAD)}
    return {"local": str(directory), "s3": f"s3://{evidence.bucket}/{prefix}/", "sha256": uploaded}


def verify(target: Target, evidence: EvidenceStore, export: dict[str, Any], head: dict[str, Any]) -> list[str]:
    """Everything wrong with an export: broken chain, or evidence that no longer matches its manifest."""
    problems = verify_chain(export.get("records", []), head)
    if head.get("head") != export.get("chain_head", {}).get("head"):
        problems.append("the export's own chain_head field differs from the stored head")
    prefixes = evidence_locations(export.get("records", []), evidence.bucket)
    for check in verify_evidence(target, evidence, prefixes):
        problems += [f"evidence {check['bundle']}: {p}" for p in check["problems"]]
    return problems
