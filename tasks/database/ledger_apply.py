"""Reconcile's apply: exactly the approved corrections, guarded, in ONE transaction, recorded.

Per chunk it first locks the planned bucket rows (`FOR UPDATE`, in player order), then — in a
new statement, whose READ COMMITTED snapshot is taken after every lock was granted — writes a
player's correction only if the bucket still holds the balance the plan saw AND the player's
ledger sum is still the one the plan saw. The wallet takes the same row lock before it writes a
ledger row, so under the lock no wallet write for that player is half-done; the ledger check also
catches a writer that appended a row without touching the bucket (a manual adjustment), which
would otherwise turn the correction into new drift. Anything that moved is skipped and reported,
never overwritten. Every correction made is a row in `rp_reconcile_audit` keyed by (plan_hash,
player_id): a second apply of the same plan finds them and changes nothing. The table is created
on the first apply, never by a dry-run.

What is written depends on the plan's source of truth: with the ledger as truth each bucket is set
to its ledger sum (here); with the bucket as truth the ledger gets an `adjustment` row
(`tasks/database/ledger_sql.py`). The frame above is the same for both.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import LiteralString, NamedTuple

from prefect.cache_policies import NO_CACHE

from remediation.clients.database import Database, Transaction
from remediation.domain.reconcile import (
    ApplyResult,
    Correction,
    ReconcilePlan,
    Skipped,
    SourceOfTruth,
    adjustment_ref,
)
from remediation.errors import BadInputError
from remediation.target import connect
from remediation.target.inventory import Target
from tasks.database import ledger_sql as reconcile_ledger
from tasks.policy import SIDE_EFFECT, task

__all__ = [
    "APPLICATION",
    "AUDIT_DDL",
    "AUDIT_TABLE",
    "append_ledger_adjustments",
    "apply_corrections",
    "apply_plan",
]

APPLICATION = "rp-reconcile"
AUDIT_TABLE = "rp_reconcile_audit"

AUDIT_DDL: LiteralString = """
CREATE TABLE IF NOT EXISTS rp_reconcile_audit (
    plan_hash   text        NOT NULL,
    player_id   text        NOT NULL,
    action      text        NOT NULL CONSTRAINT rp_reconcile_audit_action_check
                            CHECK (action IN ('set-balance', 'create-bucket', 'ledger-adjustment')),
    before      bigint,
    after       bigint      NOT NULL,
    incident_id text        NOT NULL,
    flow_run_id text,
    approver    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_hash, player_id)
)"""

_LOCK: LiteralString = (
    "SELECT player_id FROM bucket WHERE player_id = ANY(%(ids)s::text[]) ORDER BY player_id FOR UPDATE"
)
_ALREADY: LiteralString = (
    "SELECT player_id FROM rp_reconcile_audit WHERE plan_hash = %(hash)s AND player_id = ANY(%(ids)s::text[])"
)
# A new statement after _LOCK: its snapshot sees every ledger row committed before our locks were granted.
_APPLY: LiteralString = """
WITH plan AS (
  SELECT * FROM unnest(%(ids)s::text[], %(before)s::bigint[], %(after)s::bigint[]) AS p(player_id, before, after)),
sums AS (
  SELECT l.player_id, sum(l.amount)::bigint AS total FROM ledger l
  WHERE l.player_id = ANY(%(ids)s::text[]) GROUP BY l.player_id),
guarded AS (
  SELECT p.* FROM plan p LEFT JOIN sums s ON s.player_id = p.player_id WHERE coalesce(s.total, 0) = p.after),
fixed AS (
  UPDATE bucket b SET balance = g.after, updated_at = now()
  FROM guarded g
  WHERE g.before IS NOT NULL AND b.player_id = g.player_id AND b.balance = g.before
  RETURNING b.player_id, g.before, g.after),
created AS (
  INSERT INTO bucket (player_id, balance)
  SELECT g.player_id, g.after FROM guarded g WHERE g.before IS NULL
  ON CONFLICT (player_id) DO NOTHING
  RETURNING player_id, NULL::bigint AS before, balance AS after),
done AS (SELECT * FROM fixed UNION ALL SELECT * FROM created)
INSERT INTO rp_reconcile_audit (plan_hash, player_id, action, before, after, incident_id, flow_run_id, approver)
SELECT %(hash)s, d.player_id, CASE WHEN d.before IS NULL THEN 'create-bucket' ELSE 'set-balance' END,
       d.before, d.after, %(incident)s, %(run)s, %(approver)s
FROM done d
RETURNING player_id
"""
_NOW: LiteralString = """
SELECT p.player_id, b.balance, coalesce((SELECT sum(amount) FROM ledger l WHERE l.player_id = p.player_id), 0)::bigint
       AS ledger_sum
FROM unnest(%(ids)s::text[]) AS p(player_id) LEFT JOIN bucket b ON b.player_id = p.player_id
"""


def _chunks(items: list[Correction], size: int) -> Iterator[list[Correction]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _why(c: Correction, balance: int | None, ledger_sum: int) -> str:
    """What moved since the plan, in the books' terms whichever side the correction writes."""
    if c.bucket_balance is None:
        return "a bucket appeared since the plan" if balance is not None else "ledger sum moved since the plan"
    if balance is None:
        return "bucket disappeared since the plan"
    parts = []
    if balance != c.bucket_balance:
        parts.append(f"bucket moved {c.bucket_balance} → {balance}")
    if ledger_sum != c.ledger_sum:
        parts.append(f"ledger sum moved {c.ledger_sum} → {ledger_sum}")
    return "; ".join(parts) or "changed since the plan"


class _Writer(NamedTuple):
    """What differs by the corrected side; the locks, chunks, transaction and skip report are shared."""

    ddl: tuple[LiteralString, ...]
    already: LiteralString
    write: LiteralString


_WRITERS: dict[SourceOfTruth, _Writer] = {
    "ledger": _Writer((AUDIT_DDL,), _ALREADY, _APPLY),
    "bucket": _Writer((AUDIT_DDL, reconcile_ledger.WIDEN_AUDIT), reconcile_ledger.ALREADY, reconcile_ledger.APPEND),
}


def apply_plan(
    db: Database, plan: ReconcilePlan, *, approver: str, flow_run_id: str | None,
    chunk_size: int = 5_000, lock_timeout_ms: int = 20_000,
) -> ApplyResult:
    """Make exactly the plan's corrections, guarded, in one transaction; idempotent per plan hash.

    The plan's source of truth picks the write: buckets set to ledger sums, or ledger adjustments appended.
    Its `needs_human` mismatches are never written.
    """
    if chunk_size < 1:
        raise BadInputError("chunk_size must be at least 1")
    writer = _WRITERS[plan.source_of_truth]
    digest = plan.hash
    started = time.perf_counter()
    applied: list[Correction] = []
    already: list[str] = []
    skipped: list[Skipped] = []
    with db.transaction() as tx:
        tx.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout_ms)}ms",))
        for ddl in writer.ddl:
            tx.execute(ddl)
        for chunk in _chunks(sorted(plan.corrections, key=lambda c: c.player_id), chunk_size):
            a, al, sk = _apply_chunk(tx, writer, chunk, digest, plan.incident_id, approver, flow_run_id)
            applied += a
            already += al
            skipped += sk
    return ApplyResult(plan_hash=digest, applied=applied, already_applied=already, skipped=skipped,
                       duration_s=round(time.perf_counter() - started, 4))


def _apply_chunk(
    tx: Transaction, writer: _Writer, chunk: list[Correction], digest: str, incident_id: str, approver: str,
    run_id: str | None,
) -> tuple[list[Correction], list[str], list[Skipped]]:
    ids = [c.player_id for c in chunk]
    tx.fetch_all(_LOCK, {"ids": ids})
    refs = [adjustment_ref(digest, p) for p in ids]
    done_before = {r["player_id"] for r in tx.fetch_all(writer.already, {"hash": digest, "ids": ids, "refs": refs})}
    todo = [c for c in chunk if c.player_id not in done_before]
    made: set[str] = set()
    if todo:
        rows = tx.fetch_all(writer.write, {
            "ids": [c.player_id for c in todo], "before": [c.before for c in todo], "after": [c.after for c in todo],
            "refs": [adjustment_ref(digest, c.player_id) for c in todo],
            "hash": digest, "incident": incident_id, "run": run_id, "approver": approver,
        })
        made = {r["player_id"] for r in rows}
    left = [c for c in todo if c.player_id not in made]
    skipped: list[Skipped] = []
    if left:
        current = {r["player_id"]: r for r in tx.fetch_all(_NOW, {"ids": [c.player_id for c in left]})}
        for c in left:
            now_row = current[c.player_id]
            balance, ledger_sum = now_row["balance"], int(now_row["ledger_sum"])
            skipped.append(Skipped(player_id=c.player_id, corrects=c.corrects, planned_before=c.before,
                                   planned_after=c.after, balance_now=balance, ledger_sum_now=ledger_sum,
                                   reason=_why(c, balance, ledger_sum)))
    return [c for c in todo if c.player_id in made], sorted(done_before), skipped


_NOT_CACHED = {**SIDE_EFFECT, "cache_policy": NO_CACHE, "persist_result": False}


@task(name="apply-bucket-corrections", **_NOT_CACHED)
def apply_corrections(target: Target, plan: ReconcilePlan, approver: str, flow_run_id: str | None) -> ApplyResult:
    """Set the approved buckets to their ledger sums; skip (and report) any that moved; record each write.

    Not cached: a retry re-runs it and the audit table (checked under the row locks) makes the
    repeat a no-op, which a cache could not prove after a crash between commit and result write.
    """
    if plan.source_of_truth != "ledger":
        raise BadInputError("a bucket-truth plan corrects the ledger: apply it with append_ledger_adjustments")
    return apply_plan(connect.database(target, APPLICATION), plan, approver=approver, flow_run_id=flow_run_id)


@task(name="append-ledger-adjustments", **_NOT_CACHED)
def append_ledger_adjustments(
    target: Target, plan: ReconcilePlan, approver: str, flow_run_id: str | None,
) -> ApplyResult:
    """Bucket truth: append an `adjustment` row per approved player so the ledger sum meets the bucket; skip
    (and report) any that moved; record each row. Not cached, for the reason `apply_corrections` gives."""
    if plan.source_of_truth != "bucket":
        raise BadInputError("a ledger-truth plan corrects the buckets: apply it with apply_corrections")
    return apply_plan(connect.database(target, APPLICATION), plan, approver=approver, flow_run_id=flow_run_id)
