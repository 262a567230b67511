"""Read-only Prometheus queries over its HTTP API."""

from __future__ import annotations

from typing import Any

import httpx
from prefect import task

from remediation.errors import PermanentError, RetryableError
from remediation.evidence.bundle import CollectorRecord, EvidenceFile, now
from remediation.evidence.collectors import CollectorSpec, collect
from remediation.target.evidence_profile import EvidenceProfile
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY

__all__ = ["capture_error_rate", "get_error_rate", "query_instant"]


def query_instant(client: httpx.Client, query: str) -> list[dict[str, Any]]:
    """`GET /api/v1/query`; returns the result vector."""
    try:
        resp = client.get("/api/v1/query", params={"query": query})
    except httpx.TransportError as exc:
        raise RetryableError(f"prometheus unreachable: {type(exc).__name__}") from None
    if resp.status_code >= 500:
        raise RetryableError(f"prometheus answered {resp.status_code}")
    body = resp.json()
    if resp.status_code != 200 or body.get("status") != "success":
        raise PermanentError(f"prometheus rejected the query ({resp.status_code}): {body.get('error', '')[:200]}")
    result = body["data"]["result"]
    return list(result) if isinstance(result, list) else [result]


@task(name="get-error-rate", **READ_ONLY)
def get_error_rate(target: Target) -> dict[str, Any]:
    if target.prometheus is None:
        return {"configured": False, "note": f"target {target.name} names no Prometheus"}
    with httpx.Client(base_url=str(target.prometheus.url), timeout=10) as client:
        result = query_instant(client, target.prometheus.error_rate_query)
    return {"configured": True, "query": target.prometheus.error_rate_query, "result": result}


@task(name="capture-error-rate", **READ_ONLY)
def capture_error_rate(
    target: Target, profile: EvidenceProfile, spec: CollectorSpec, out_dir: str
) -> CollectorRecord:
    assert target.prometheus is not None

    def body(out: EvidenceFile) -> None:
        with httpx.Client(base_url=str(target.prometheus.url), timeout=spec.timeout_s) as client:  # type: ignore[union-attr]
            result = query_instant(client, spec.params["query"])
        out.write_json({"query": spec.params["query"], "at": now().isoformat(), "result": result})

    return collect(spec, out_dir, target, profile, body)
