"""Read-only tasks against the gateway: its health (a finding, a collector, a wait after a rebuild)."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger

from remediation.errors import RetryableError
from remediation.evidence.bundle import CollectorRecord, EvidenceFile, now
from remediation.evidence.collectors import CollectorSpec, collect
from remediation.target import connect
from remediation.target.evidence_profile import EvidenceProfile
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY, task

__all__ = ["capture_health", "check_health", "read_provider_ingress", "set_provider_ingress", "wait_for_health"]


@task(name="check-health", **READ_ONLY)
def check_health(target: Target) -> dict[str, Any]:
    """`curl <gw>/health` and `/health/deep`. A failing health is a finding, not a task failure."""
    with connect.gateway(target) as gw:
        shallow = gw.health()
        deep = gw.health_deep()
    return {
        "health": {"http_status": shallow.http_status, "body": shallow.body},
        "health_deep": {"http_status": deep.http_status, "body": deep.body},
        "healthy": shallow.http_status == 200 and deep.http_status == 200,
    }


@task(name="capture-health", **READ_ONLY)
def capture_health(target: Target, profile: EvidenceProfile, spec: CollectorSpec, out_dir: str) -> CollectorRecord:
    """`GET /health`, `/health/deep`: a 5xx is a finding with its body; unreachable is a failure."""
    def body(out: EvidenceFile) -> None:
        with connect.gateway(target, spec.timeout_s) as gw:
            results = []
            for path in spec.params["paths"]:
                result = gw.health_at(path)
                results.append({"path": path, "http_status": result.http_status, "body": result.body,
                                "at": now().isoformat()})
        out.write_json({"gateway": str(target.gateway.url), "checks": results})

    return collect(spec, out_dir, target, profile, body)


@task(name="wait-for-health", **{**READ_ONLY, "retries": 0})
def wait_for_health(target: Target, deadline_s: float, first_delay_s: float = 0.5,
                    max_delay_s: float = 5.0) -> dict[str, Any]:
    """Poll the gateway's `/health` with exponential backoff until 200 or the deadline; never raises
    for "not healthy" — the caller decides, with the last answer as evidence."""
    log = get_run_logger()
    started = time.monotonic()
    delay, attempts = first_delay_s, 0
    last: dict[str, Any] = {"http_status": None, "body": None, "error": None}
    with connect.gateway(target) as gw:
        while True:
            attempts += 1
            try:
                result = gw.health()
                last = {"http_status": result.http_status, "body": result.body, "error": None}
                if result.ok:
                    waited = round(time.monotonic() - started, 2)
                    log.info("/health answered 200 after %.1f s (%d attempt(s))", waited, attempts)
                    return {"ok": True, "attempts": attempts, "waited_s": waited, **last}
            except RetryableError as exc:  # down while it restarts
                last = {"http_status": None, "body": None, "error": str(exc)}
            remaining = deadline_s - (time.monotonic() - started)
            if remaining <= 0:
                break
            log.info("/health not yet ok (%s); next check in %.1f s", last["http_status"] or last["error"], delay)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, max_delay_s)
    waited = round(time.monotonic() - started, 2)
    log.error("/health still not ok after %.0f s: %s", waited, last)
    return {"ok": False, "attempts": attempts, "waited_s": waited, **last}


def read_provider_ingress(target: Target) -> dict[str, Any]:
    """Seed 000 step 3d's lever: whether the gateway refuses provider callbacks, and why."""
    with connect.gateway(target) as gw:
        return gw.get_provider_ingress().model_dump(mode="json", include={"blocked", "reason"})


def set_provider_ingress(target: Target, blocked: bool, reason: str) -> None:
    with connect.gateway(target) as gw:
        gw.set_provider_ingress(blocked, reason)
