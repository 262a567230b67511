"""Read one incident's history from the Prefect API: runs, state changes, task runs, artifacts, results.

Everything read goes through the target's redactor (its secret values and the built-in secret
patterns) before it becomes a record — every string of every record: each state's message (not
only the final one), names, tags, trigger fields, results, artifact data; parameters whose names
say "secret" are masked outright. The export is written to S3, possibly under Object Lock where a
leaked secret could never be deleted, so nothing is copied into a record unredacted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, State
from prefect.client.schemas.sorting import FlowRunSort

from remediation.audit.stored_results import StoredResults

__all__ = ["MASK", "flow_run_records", "mask_parameters", "scrub_record"]

MASK = "***"
_SECRET_NAME = re.compile(r"secret|token|passw|credential|dsn|private|api_?key", re.IGNORECASE)
#: An incident is not expected to have more runs than this; the export says so if it does.
MAX_RUNS = 2000
#: The server's page size limit.
_PAGE = 200
#: Runs read at once (each is a few API round trips and one stored result).
_READERS = 8


def mask_parameters(params: dict[str, Any], redact: Callable[[str], str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        out[k] = MASK if _SECRET_NAME.search(k) else _scrub(v, redact)
    return out


def scrub_record(value: Any, redact: Callable[[str], str]) -> Any:
    """Every string in a record redacted, values under secret-sounding keys masked."""
    return _scrub(value, redact)


def _scrub(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): (MASK if _SECRET_NAME.search(str(k)) else _scrub(v, redact)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, redact) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else would reach export.json as its str() (json.dumps(default=str)): a failed run's
    # result is an exception whose text is the state message.
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return redact(str(value))


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _state(s: State) -> dict[str, Any]:
    return {"at": _iso(s.timestamp), "type": s.type.value, "name": s.name, "message": s.message}


def trigger_of(run: FlowRun, deployment: str | None) -> dict[str, Any]:
    """Who or what started the run, from what the API records."""
    initiated = (run.parameters or {}).get("initiated_by")
    if run.parent_task_run_id is not None:
        kind = "subflow"
    elif run.auto_scheduled:
        kind = "schedule"
    elif run.idempotency_key and str(initiated or "").startswith("alert:"):
        kind = "alert"
    elif deployment:
        kind = "deployment-run"
    else:
        kind = "direct"
    created_by = run.created_by.model_dump(mode="json") if run.created_by else None
    return {"kind": kind, "initiated_by": initiated, "idempotency_key": run.idempotency_key,
            "created_by": created_by, "deployment": deployment, "parent_task_run_id": str(run.parent_task_run_id)
            if run.parent_task_run_id else None}


def incident_runs(client: SyncPrefectClient, incident_id: str) -> list[FlowRun]:
    runs: list[FlowRun] = []
    while len(runs) < MAX_RUNS:
        page = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"incident:{incident_id}"])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=_PAGE, offset=len(runs),
        )
        runs += page
        if len(page) < _PAGE:
            break
    return runs


def _result(run: FlowRun, results: StoredResults, redact: Callable[[str], str]) -> Any:
    if run.state is None or not run.state.is_final():
        return None
    try:
        return _scrub(results.read(run.state), redact)
    except Exception as exc:  # a result that cannot be read is recorded as such, not fatal
        return {"unreadable": f"{type(exc).__name__}: {redact(str(exc))[:300]}"}


def flow_run_records(client: SyncPrefectClient, runs: list[FlowRun],
                     redact: Callable[[str], str]) -> list[tuple[str, dict[str, Any]]]:
    """(kind, data) for each flow run, then its task runs and artifacts, in start order."""
    flow_ids = {run.flow_id for run in runs}
    deployment_ids = {run.deployment_id for run in runs if run.deployment_id is not None}
    # Each run needs four reads and its stored result; an incident has a dozen runs or more, and one
    # after another they made the postmortem and the audit export wait seconds on round trips.
    results = StoredResults()
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        flows = dict(zip(flow_ids, pool.map(lambda i: client.read_flow(i).name, flow_ids), strict=True))
        deployments = dict(zip(deployment_ids, pool.map(lambda i: client.read_deployment(i).name, deployment_ids),
                               strict=True))
        per_run = pool.map(lambda run: _run_records(client, run, flows, deployments, results, redact), runs)
        return [item for items in per_run for item in items]


def _run_records(client: SyncPrefectClient, run: FlowRun, flows: dict[UUID, str], deployments: dict[UUID, str],
                 results: StoredResults, redact: Callable[[str], str]) -> list[tuple[str, dict[str, Any]]]:
    deployment = deployments[run.deployment_id] if run.deployment_id is not None else None
    states = sorted(client.read_flow_run_states(run.id), key=lambda s: s.timestamp)
    items: list[tuple[str, dict[str, Any]]] = [("flow-run", _scrub({
        "id": str(run.id), "name": run.name, "flow": flows[run.flow_id], "tags": sorted(run.tags),
        "trigger": trigger_of(run, deployment),
        "parameters": mask_parameters(run.parameters or {}, redact),
        "states": [_state(s) for s in states],
        "final": {"type": run.state_type.value if run.state_type else None, "name": run.state_name,
                  "message": (run.state.message or "") if run.state else None},
        "result": _result(run, results, redact),
    }, redact))]
    task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    for tr in sorted(task_runs, key=lambda t: (t.start_time or t.expected_start_time or t.created or 0, t.name)):
        items.append(("task-run", _scrub({
            "id": str(tr.id), "flow_run_id": str(run.id), "name": tr.name, "run_count": tr.run_count,
            "start": _iso(tr.start_time), "end": _iso(tr.end_time),
            "state": tr.state_type.value if tr.state_type else None, "state_name": tr.state_name,
            "message": (tr.state.message or "") if tr.state else None,
        }, redact)))
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
    )
    for a in sorted(artifacts, key=lambda a: a.created or 0):
        kind = "approval" if (a.key or "").startswith("approval-") else "artifact"
        items.append((kind, _scrub({
            "flow_run_id": str(run.id), "key": a.key, "type": a.type, "created": _iso(a.created),
            "description": a.description, "data": str(a.data),
        }, redact)))
    return items
