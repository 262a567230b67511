"""Tag the current flow run with its incident, runbook and target, whoever started it.

Runs started from the UI or by an alert carry the deployment's tags only; adding
`incident:<id>` here is what lets the auditor's export and the postmortem find
every run of one incident.
"""

from __future__ import annotations

from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

__all__ = ["incident_tags", "tag_current_run"]


def incident_tags(incident_id: str, runbook: str, target: str) -> list[str]:
    return [f"incident:{incident_id}", f"runbook:{runbook}", f"target:{target}"]


def tag_current_run(incident_id: str, runbook: str, target: str) -> list[str]:
    raw_id = flow_run.get_id()
    wanted = incident_tags(incident_id, runbook, target)
    if raw_id is None:
        return wanted
    run_id = UUID(str(raw_id))
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None and ctx.flow_run.id == run_id:
        # The engine's own copy of the run and its client: no read, no new connection (a new client
        # builds its TLS context first, 70 ms of CPU, even for a plain-http API).
        current, client = set(ctx.flow_run.tags), ctx.client
        tags = sorted(current | set(wanted))
        if set(tags) != current:
            if isinstance(client, SyncPrefectClient):
                client.update_flow_run(run_id, tags=tags)
            else:  # an async flow's context holds an async client
                _update(run_id, wanted)
            ctx.flow_run.tags = tags
    else:
        tags = _update(run_id, wanted)
    get_run_logger().info("run tagged %s", ", ".join(wanted))
    return tags


def _update(run_id: UUID, wanted: list[str]) -> list[str]:
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(run_id)
        tags = sorted(set(current.tags) | set(wanted))
        if set(tags) != set(current.tags):
            client.update_flow_run(run_id, tags=tags)
    return tags
