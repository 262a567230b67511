"""Read-only evidence from PostgreSQL: seed 001's investigation SQL (`remediation.evidence.pg_queries`).

Every query is a literal with bound parameters, run in a read-only transaction under the
collector's statement timeout, on its own short connection (application_name
`rp-capture-evidence`, so the capture can tell itself apart in pg_stat_activity).
"""

from __future__ import annotations

from remediation.evidence.bundle import CollectorRecord, EvidenceFile, now
from remediation.evidence.collectors import CollectorSpec, collect
from remediation.evidence.pg_queries import PG_QUERIES
from remediation.target import connect
from remediation.target.evidence_profile import EvidenceProfile
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY, task

__all__ = ["APPLICATION", "capture_pg_query"]

APPLICATION = "rp-capture-evidence"

@task(name="capture-pg-query", **READ_ONLY)
def capture_pg_query(target: Target, profile: EvidenceProfile, spec: CollectorSpec, out_dir: str) -> CollectorRecord:
    summary, sql = PG_QUERIES[spec.params["query"]]
    params = {"limit": int(spec.params["limit"]), "threshold_s": float(spec.params["threshold_s"])}

    def body(out: EvidenceFile) -> None:
        db = connect.database(target, APPLICATION, timeout_s=spec.timeout_s, read_only=True)
        rows = db.fetch_all(sql, params)
        out.write_json({"shows": summary, "sql": " ".join(sql.split()), "params": params,
                        "captured_at": now().isoformat(), "row_count": len(rows), "rows": rows})

    return collect(spec, out_dir, target, profile, body)
