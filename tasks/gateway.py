"""Read-only tasks against the gateway."""

from __future__ import annotations

from typing import Any

from prefect import task

from remediation.target import connect
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY

__all__ = ["check_health"]


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
