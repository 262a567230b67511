"""The incident's change log as the flows use it: an intent before a lever moves, its outcome after.

The log itself lives in the target's database (remediation.records.change_log), where Prefect API
users cannot write it. Each outcome is also shown as the `changes-<incident>` table artifact for
people reading the run; nothing reads that artifact back.
"""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from remediation.domain.levers import AppliedChange, LeverChange, LeverState, current_value
from remediation.records.change_log import ChangeLog, LoggedChange
from remediation.target import connect
from remediation.target.inventory import Target

__all__ = ["change_log_key", "incident_changes", "log_intent", "log_outcome", "undoable"]


def change_log_key(incident_id: str) -> str:
    return f"changes-{incident_id.lower()}"


def _log(target: Target) -> ChangeLog:
    return ChangeLog(connect.database(target, "rp-change-log"))


def log_intent(target: Target, incident_id: str, change: LeverChange, plan_hash: str, approvers: list[str]) -> int:
    """Written before the side effect: a run that dies after it still leaves this behind."""
    run_id = str(flow_run.get_id()) if flow_run.get_id() else None
    return _log(target).intent(incident_id, change, plan_hash, run_id, approvers)


def log_outcome(target: Target, incident_id: str, intent_id: int, applied: AppliedChange) -> None:
    _log(target).outcome(intent_id, applied)
    rows: list[dict[str, Any]] = [{
        "at": applied.at.isoformat(), "lever": applied.change.lever, "resource": applied.change.resource,
        "outcome": applied.outcome, "path": applied.path, "before": str(applied.change.before),
        "after": str(applied.change.after), "note": applied.note, "flow_run_id": applied.flow_run_id or "",
        "plan_hash": applied.approval_plan_hash or "", "intent": intent_id,
    }]
    create_table_artifact(key=change_log_key(incident_id), table=rows,
                          description=f"a lever moved for {incident_id} (the log itself: rp_change_log)")


def incident_changes(target: Target, incident_id: str) -> list[LoggedChange]:
    return _log(target).entries(incident_id)


def undoable(entries: list[LoggedChange], state: LeverState) -> tuple[list[AppliedChange], list[str]]:
    """The changes recover may undo, and what it found about runs that died mid-change.

    An intent with no outcome is a run killed between writing it and recording what happened.
    If the lever holds the intent's `after` value, the change was made: it is undone like any
    applied one. If it holds `before`, the change never happened: nothing to undo.
    """
    applied: list[AppliedChange] = []
    notes: list[str] = []
    for entry in entries:
        if entry.outcome is not None:
            applied.append(entry.outcome)
            continue
        now = current_value(entry.change, state)
        if now == entry.change.after:
            notes.append(f"intent #{entry.intent_id} ({entry.change.description}) has no recorded outcome, and the "
                         "lever holds its value: the run died after changing it; undoing it like any other")
            applied.append(AppliedChange(
                change=entry.change, outcome="reverted" if entry.change.undo else "applied", path="unknown",
                note=f"intent #{entry.intent_id} without outcome; found in place", at=entry.intended_at,
                flow_run_id=entry.flow_run_id, approval_plan_hash=entry.plan_hash))
        else:
            notes.append(f"intent #{entry.intent_id} ({entry.change.description}) has no recorded outcome and the "
                         "lever does not hold its value: it never took effect")
    return applied, notes
