"""Read-only Prometheus queries (seed 000 step 2's error rate), for a snapshot and as evidence."""

from __future__ import annotations

from typing import Any

from remediation.evidence.bundle import CollectorRecord, EvidenceFile, now
from remediation.evidence.collectors import CollectorSpec, collect
from remediation.target import connect
from remediation.target.evidence_profile import EvidenceProfile
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY, task

__all__ = ["capture_error_rate", "get_error_rate"]


@task(name="get-error-rate", **READ_ONLY)
def get_error_rate(target: Target) -> dict[str, Any]:
    if target.prometheus is None:
        return {"configured": False, "note": f"target {target.name} names no Prometheus"}
    with connect.prometheus(target) as prom:
        result = prom.query(target.prometheus.error_rate_query)
    return {"configured": True, "query": target.prometheus.error_rate_query, "result": result}


@task(name="capture-error-rate", **READ_ONLY)
def capture_error_rate(
    target: Target, profile: EvidenceProfile, spec: CollectorSpec, out_dir: str
) -> CollectorRecord:
    assert target.prometheus is not None

    def body(out: EvidenceFile) -> None:
        with connect.prometheus(target, spec.timeout_s) as prom:
            result = prom.query(spec.params["query"])
        out.write_json({"query": spec.params["query"], "at": now().isoformat(), "result": result})

    return collect(spec, out_dir, target, profile, body)
