"""The incident's change log: every lever a run moved, with before/after, kept in Prefect.

Each contain/recover run writes a table artifact under the key `changes-<incident>`;
Prefect keeps every version, so the log is the union of all versions and lives in
the same run history auditors read. Recover reads it to undo exactly what was done.
"""

from __future__ import annotations

import json
from typing import Any, cast

from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from remediation.domain.levers import AppliedChange

__all__ = ["change_log_key", "read_changes", "record_changes"]


def change_log_key(incident_id: str) -> str:
    return f"changes-{incident_id.lower()}"


def record_changes(incident_id: str, changes: list[AppliedChange]) -> None:
    if not changes:
        return
    rows: list[dict[str, Any]] = [
        {
            "at": c.at.isoformat(),
            "lever": c.change.lever,
            "resource": c.change.resource,
            "outcome": c.outcome,
            "path": c.path,
            "before": json.dumps(c.change.before, sort_keys=True),
            "after": json.dumps(c.change.after, sort_keys=True),
            "note": c.note,
            "flow_run_id": c.flow_run_id or "",
            "plan_hash": c.approval_plan_hash or "",
            "record": c.model_dump_json(),
        }
        for c in changes
    ]
    create_table_artifact(
        key=change_log_key(incident_id), table=rows,
        description=f"levers moved for {incident_id} (recover undoes the applied ones, newest first)",
    )


def read_changes(incident_id: str) -> list[AppliedChange]:
    """Every recorded change of the incident, oldest first."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[change_log_key(incident_id)])),
            limit=200,
        )
    out: list[AppliedChange] = []
    for artifact in artifacts:
        data = artifact.data
        rows = cast(list[dict[str, Any]], json.loads(data) if isinstance(data, str) else (data or []))
        out.extend(AppliedChange.model_validate_json(row["record"]) for row in rows)
    return sorted(out, key=lambda c: c.at)
