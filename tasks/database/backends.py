"""PostgreSQL backends for `kill-long-queries`: find the long ones, stop exactly those, check the queue drained.

Every statement names a backend by pid *and* session start (and, to cancel, query start), so a
retried task never signals a pid that a new session reused or a query the approver did not see.
Signalling another role's backend needs that role or `pg_signal_backend` (PostgreSQL's rule): a
refusal is recorded per backend, never retried as if it were transient.
"""

from __future__ import annotations

import time
from typing import Any, LiteralString

from remediation.domain.backends import QUERY_SHOWN, Backend
from remediation.errors import ClientError, PermanentError
from remediation.evidence.scrub import for_target
from remediation.target import connect
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY, SIDE_EFFECT, task

__all__ = ["APPLICATION", "check_backends_stopped", "read_long_backends", "stop_backends"]

APPLICATION = "rp-kill-long-queries"

# Seed 001: "SELECT pid, now() - pg_stat_activity.query_start AS duration, query FROM pg_stat_activity
# WHERE (now() - pg_stat_activity.query_start) > interval '5 minutes'" — with who, what it waits for,
# who blocks it; this database's sessions (and replication senders, which belong to none).
_LONG: LiteralString = """
    SELECT a.pid, a.backend_start, a.query_start, extract(epoch FROM now() - a.query_start) AS running_s,
           a.usename, a.application_name, a.client_addr::text AS client_addr, a.backend_type, a.state,
           a.wait_event_type, a.wait_event, pg_blocking_pids(a.pid) AS blocked_by, left(a.query, 4000) AS query
    FROM pg_stat_activity a
    WHERE a.pid <> pg_backend_pid() AND a.state IS DISTINCT FROM 'idle' AND a.query_start IS NOT NULL
      AND (a.datname = current_database() OR a.backend_type = 'walsender')
      AND now() - a.query_start > make_interval(secs => %(threshold_s)s)
    ORDER BY a.query_start LIMIT 200
"""
_CANCEL: LiteralString = """
    SELECT pg_cancel_backend(pid) AS signalled FROM pg_stat_activity
    WHERE pid = %(pid)s AND backend_start = %(backend_start)s AND query_start = %(query_start)s
"""
_TERMINATE: LiteralString = """
    SELECT pg_terminate_backend(pid, 5000) AS signalled FROM pg_stat_activity
    WHERE pid = %(pid)s AND backend_start = %(backend_start)s
"""
# A chosen session still there: still on the approved query, or still holding a lock someone waits for.
_LINGERING: LiteralString = """
    SELECT a.pid, a.backend_start, a.query_start, a.state,
           a.pid IN (SELECT unnest(pg_blocking_pids(w.pid)) FROM pg_stat_activity w
                     WHERE w.wait_event_type = 'Lock') AS blocking
    FROM pg_stat_activity a WHERE a.pid = ANY(%(pids)s)
"""
_WAITING: LiteralString = """
    SELECT count(*) AS waiting FROM pg_stat_activity w
    WHERE w.wait_event_type = 'Lock' AND pg_blocking_pids(w.pid) && %(pids)s::int[]
"""


@task(name="read-long-backends", **READ_ONLY)
def read_long_backends(target: Target, threshold_s: float) -> list[Backend]:
    """Backends whose current query has run longer than `threshold_s`; query text redacted and cut."""
    redact = for_target(target).text
    rows = connect.database(target, APPLICATION, read_only=True).fetch_all(_LONG, {"threshold_s": threshold_s})
    return [Backend.model_validate({**r, "blocked_by": list(r["blocked_by"] or []),
                                    "query": redact(" ".join(str(r["query"] or "").split()))[:QUERY_SHOWN],
                                    "application_name": r["application_name"] or ""}) for r in rows]


def _lingering(db: Any, chosen: list[Backend]) -> dict[int, dict[str, Any]]:
    """Chosen sessions still on their approved query or still blocking someone, by pid."""
    rows = db.fetch_all(_LINGERING, {"pids": [b.pid for b in chosen]})
    found = {}
    by_pid = {b.pid: b for b in chosen}
    for row in rows:
        b = by_pid[row["pid"]]
        same_session = row["backend_start"] == b.backend_start
        if same_session and (row["query_start"] == b.query_start or row["blocking"]):
            found[b.pid] = row
    return found


def _signalled(row: dict[str, Any] | None, done: str, what: str) -> str:
    """No row: the backend had moved on or gone. False: PostgreSQL did not deliver the signal."""
    if row is None:
        return f"gone before the {what}"
    return done if row["signalled"] else f"refused: PostgreSQL did not {what} it"


@task(name="stop-backends", **SIDE_EFFECT)
def stop_backends(target: Target, chosen: list[Backend], grace_s: float) -> dict[str, Any]:
    """Cancel each chosen backend's query; after `grace_s`, terminate the sessions still on it or still
    blocking others. Returns per pid what was done: cancelled, terminated, gone, or refused (and why)."""
    db = connect.database(target, APPLICATION)
    done: dict[int, str] = {}
    for b in chosen:
        try:
            row = db.fetch_one(_CANCEL, b.identity)
        except PermanentError as exc:
            done[b.pid] = f"refused: {exc}"
            continue
        done[b.pid] = _signalled(row, "cancel sent", "cancel")
    deadline = time.monotonic() + grace_s
    while (left := _lingering(db, [b for b in chosen if done[b.pid] == "cancel sent"])) and time.monotonic() < deadline:
        time.sleep(0.25)
    for b in chosen:
        if done[b.pid] != "cancel sent":
            continue
        if b.pid not in left:
            done[b.pid] = "cancelled"
            continue
        try:
            row = db.fetch_one(_TERMINATE, {"pid": b.pid, "backend_start": b.backend_start})
        except PermanentError as exc:
            done[b.pid] = f"refused: {exc}"
            continue
        done[b.pid] = _signalled(row, "terminated", "terminate")
    return {"by_pid": {str(pid): what for pid, what in done.items()}}


@task(name="check-backends-stopped", **READ_ONLY)
def check_backends_stopped(target: Target, chosen: list[Backend], wait_s: float = 10.0) -> dict[str, Any]:
    """The chosen sessions are off their queries and block nobody; nobody waits behind them."""
    db = connect.database(target, APPLICATION, read_only=True)
    pids = [b.pid for b in chosen]
    deadline = time.monotonic() + wait_s
    while True:
        try:
            left = _lingering(db, chosen)
            waiting = int((db.fetch_one(_WAITING, {"pids": pids}) or {"waiting": 0})["waiting"])
        except ClientError as exc:
            return {"ok": False, "remaining": [], "waiting": None, "error": str(exc)}
        if (not left and not waiting) or time.monotonic() >= deadline:
            return {"ok": not left and not waiting, "remaining": sorted(left), "waiting": waiting}
        time.sleep(0.25)
