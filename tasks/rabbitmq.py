"""Read-only evidence from RabbitMQ's management API (seed 003: queue depths and consumers)."""

from __future__ import annotations

import httpx

from remediation.evidence.bundle import CollectorRecord, EvidenceFile, now
from remediation.evidence.collectors import CollectorSpec, collect
from remediation.target import connect
from remediation.target.evidence_profile import EvidenceProfile
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY, task

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
        with connect.rabbitmq(cfg, transport) as rabbit:
            queues = rabbit.queues()
        out.write_json({"url": str(cfg.url), "at": now().isoformat(), "queues": queues})

    return collect(spec, out_dir, target, profile, body)
