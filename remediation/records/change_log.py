"""The incident change log: write-ahead, in the target's database.

Before a lever moves, its intent is written (incident, lever, before → after, plan hash, run,
approvers); after, its outcome (applied / already in place / reverted / conflict, and the path
taken). A run killed between the two leaves an intent without an outcome: `recover` reads the
lever's live value to tell whether it moved, and undoes it if it did (runbooks/recover.md).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from remediation.clients.database import Database
from remediation.domain.levers import AppliedChange, LeverChange
from remediation.records.schema import CHANGE_LOG, table_exists, with_schema

__all__ = ["ChangeLog", "LoggedChange"]


class LoggedChange(BaseModel):
    """One intent and, once it is known, its outcome."""

    intent_id: int
    incident_id: str
    change: LeverChange
    plan_hash: str
    flow_run_id: str | None
    approvers: list[str]
    intended_at: datetime
    outcome: AppliedChange | None = None

    @property
    def unfinished(self) -> bool:
        """Written before the side effect, with no outcome after it: the run died in between."""
        return self.outcome is None


class ChangeLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def intent(self, incident_id: str, change: LeverChange, plan_hash: str, flow_run_id: str | None,
               approvers: list[str]) -> int:
        with with_schema(self.db) as tx:
            row = tx.fetch_one(
                "INSERT INTO rp_change_log (incident_id, kind, lever, resource, change, plan_hash, flow_run_id,"
                " approvers) VALUES (%s, 'intent', %s, %s, %s::jsonb, %s, %s, %s) RETURNING id",
                (incident_id, change.lever, change.resource, change.model_dump_json(), plan_hash, flow_run_id,
                 approvers),
            )
        assert row is not None
        return int(row["id"])

    def outcome(self, intent_id: int, applied: AppliedChange) -> None:
        """Record what happened; a second outcome for the same intent (a retried task) is ignored."""
        self.db.execute(
            "INSERT INTO rp_change_log (incident_id, kind, intent_id, lever, resource, change, outcome, path, note,"
            " plan_hash, flow_run_id)"
            " SELECT incident_id, 'outcome', id, lever, resource, change, %s, %s, %s, plan_hash, %s"
            " FROM rp_change_log WHERE id = %s AND kind = 'intent'"
            " ON CONFLICT (intent_id) WHERE kind = 'outcome' DO NOTHING",
            (applied.outcome, applied.path, applied.note, applied.flow_run_id, intent_id),
        )

    def entries(self, incident_id: str) -> list[LoggedChange]:
        """Every intent of the incident with its outcome, oldest first."""
        with self.db.transaction() as tx:
            if not table_exists(tx, CHANGE_LOG):
                return []
            rows = tx.fetch_all(
                "SELECT i.id, i.incident_id, i.change, i.plan_hash, i.flow_run_id, i.approvers, i.at,"
                "       o.outcome, o.path, o.note, o.flow_run_id AS outcome_run, o.at AS outcome_at"
                " FROM rp_change_log i LEFT JOIN rp_change_log o ON o.intent_id = i.id AND o.kind = 'outcome'"
                " WHERE i.incident_id = %s AND i.kind = 'intent' ORDER BY i.id",
                (incident_id,),
            )
        return [_logged(r) for r in rows]


def _logged(row: dict[str, Any]) -> LoggedChange:
    raw = row["change"]
    change = LeverChange.model_validate(json.loads(raw) if isinstance(raw, str) else raw)
    outcome = None
    if row["outcome"] is not None:
        outcome = AppliedChange(change=change, outcome=row["outcome"], path=row["path"] or "", note=row["note"] or "",
                                at=row["outcome_at"], flow_run_id=row["outcome_run"],
                                approval_plan_hash=row["plan_hash"])
    return LoggedChange(intent_id=row["id"], incident_id=row["incident_id"], change=change,
                        plan_hash=row["plan_hash"], flow_run_id=row["flow_run_id"], approvers=list(row["approvers"]),
                        intended_at=row["at"], outcome=outcome)
