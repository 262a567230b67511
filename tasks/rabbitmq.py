"""Read-only evidence from RabbitMQ's management API (seed 003: queue depths and consumers)."""

from __future__ import annotations

import httpx
from prefect import task

from remediation.clients._http import make_http_client
from remediation.errors import PermanentError, RetryableError
from remediation.evidence.bundle import CollectorRecord, EvidenceFile, now
from remediation.evidence.collectors import CollectorSpec, collect
from remediation.target.evidence_profile import EvidenceProfile
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY

__all__ = ["capture_rabbitmq_queues"]


@task(name="capture-rabbitmq-queues", **READ_ONLY)
def capture_rabbitmq_queues(
    target: Target, profile: EvidenceProfile, spec: CollectorSpec, out_dir: str,
    transport: httpx.BaseTransport | None = None,
) -> CollectorRecord:
    """Seed 003: queue depths and consumers from the management API."""
    cfg = profile.rabbitmq
    assert cfg is not None

    def body(out: EvidenceFile) -> None:
        auth = httpx.BasicAuth(cfg.user, cfg.password.resolve().get_secret_value())
        with make_http_client(str(cfg.url), timeout=httpx.Timeout(cfg.timeout_s), transport=transport) as client:
            try:
                resp = client.get("/api/queues", auth=auth)
            except httpx.TransportError as exc:
                raise RetryableError(f"rabbitmq unreachable: {type(exc).__name__}") from None
        if resp.status_code >= 500:
            raise RetryableError(f"rabbitmq answered {resp.status_code}")
        if resp.status_code != 200:
            raise PermanentError(f"rabbitmq answered {resp.status_code}")
        keep = ("vhost", "name", "state", "messages", "messages_ready", "messages_unacknowledged", "consumers")
        queues = [{k: q.get(k) for k in keep} for q in resp.json()]
        queues.sort(key=lambda q: -(q.get("messages") or 0))
        out.write_json({"url": str(cfg.url), "at": now().isoformat(), "queues": queues})

    return collect(spec, out_dir, target, profile, body)
