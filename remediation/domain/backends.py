"""Which PostgreSQL backends `kill-long-queries` may stop, and how a plan names them.

Seed 001, "Database Connection Issues → Kill long-running queries". A backend is chosen when its
current query has run longer than the threshold and it is not merely *waiting for a lock*: a
waiter goes on by itself once whoever blocks it is gone, so it is listed (with whom it waits for)
but left alone. Our own session is never chosen; autovacuum workers and replication senders only
when the run asks for them. A backend is named by (pid, backend start, query start), so a pid
reused by a new session, or a session that has moved on to another query, is never signalled on
an approval given for something else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from remediation.domain.text import md_inline

__all__ = ["QUERY_SHOWN", "SYSTEM_KINDS", "Backend", "BackendPlan", "SystemKind", "plan_backends", "summary_markdown"]

SystemKind = Literal["autovacuum", "replication"]
SYSTEM_KINDS: dict[str, SystemKind] = {"autovacuum worker": "autovacuum", "walsender": "replication"}
#: Query text shown in a plan (already redacted by the caller) is cut to this many characters.
QUERY_SHOWN = 200


class Backend(BaseModel):
    model_config = ConfigDict(frozen=True)

    pid: int
    backend_start: datetime
    query_start: datetime
    running_s: float
    usename: str | None
    application_name: str
    client_addr: str | None
    backend_type: str
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    blocked_by: list[int]
    #: Redacted and cut to QUERY_SHOWN characters by whoever read it.
    query: str

    @property
    def identity(self) -> dict[str, object]:
        return {"pid": self.pid, "backend_start": self.backend_start.isoformat(),
                "query_start": self.query_start.isoformat()}

    @property
    def waits_for_lock(self) -> bool:
        return self.wait_event_type == "Lock" and bool(self.blocked_by)


class BackendPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    threshold_s: float
    #: Backends to cancel (and terminate after the grace if they are still there).
    chosen: list[Backend]
    #: Over the threshold but left alone, each with why.
    left: list[tuple[Backend, str]]

    def view(self, incident_id: str, target: str) -> dict[str, object]:
        """What the approval binds: who, by identity — not their durations, which move every second."""
        return {"incident_id": incident_id, "target": target, "threshold_s": self.threshold_s,
                "backends": [b.identity for b in self.chosen]}


def plan_backends(over_threshold: list[Backend], threshold_s: float, include: set[SystemKind]) -> BackendPlan:
    """Split the backends running longer than `threshold_s` (our own session already left out by the query)."""
    chosen: list[Backend] = []
    left: list[tuple[Backend, str]] = []
    for backend in sorted(over_threshold, key=lambda b: -b.running_s):
        kind = SYSTEM_KINDS.get(backend.backend_type)
        if kind is not None and kind not in include:
            left.append((backend, f"{kind} (not asked for: include={kind} to stop it)"))
        elif backend.backend_type not in ("client backend", *SYSTEM_KINDS):
            left.append((backend, f"a {backend.backend_type} process, never stopped by this runbook"))
        elif backend.waits_for_lock:
            who = ", ".join(str(p) for p in backend.blocked_by)
            left.append((backend, f"waiting for a lock held by {who}: goes on once that is gone"))
        else:
            chosen.append(backend)
    return BackendPlan(threshold_s=threshold_s, chosen=chosen, left=left)


def _row(b: Backend, note: str = "") -> str:
    wait = f"{b.wait_event_type}/{b.wait_event}" if b.wait_event_type else "—"
    return (f"| {b.pid} | {b.running_s:.0f} s | {md_inline(b.usename or '')} | {md_inline(b.application_name)} | "
            f"{md_inline(wait)} | {md_inline(b.query, limit=QUERY_SHOWN)} |"
            + (f" {md_inline(note)} |" if note else ""))


def summary_markdown(incident_id: str, target: str, plan: BackendPlan, grace_s: float) -> str:
    lines = [
        f"### kill-long-queries on `{target}` for {incident_id}", "",
        f"Queries running longer than {plan.threshold_s:g} s. Each chosen backend gets `pg_cancel_backend`; "
        f"one still running that query, or still blocking others, {grace_s:g} s later gets "
        "`pg_terminate_backend`. Only these backends, by pid, session start and query start.", "",
        "| pid | running | user | application | wait | query |", "|---|---|---|---|---|---|",
        *(_row(b) for b in plan.chosen),
    ]
    if plan.left:
        lines += ["", "Over the threshold, left alone:", "",
                  "| pid | running | user | application | wait | query | why |", "|---|---|---|---|---|---|---|",
                  *(_row(b, why) for b, why in plan.left)]
    return "\n".join(lines) + "\n"
