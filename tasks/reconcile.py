"""Ledger vs bucket reconciliation on the platform database: compare (set-based), apply (guarded), record.

* `compare` is ONE statement: the ledger summed per player, joined to the buckets, reduced to
  the counters and the list of mismatches in the same pass. No per-player loop, one snapshot,
  so a wallet write in flight is either wholly in it or wholly out of it (no false mismatch).
* `apply_plan` writes exactly the approved corrections in ONE transaction. Per chunk it first
  locks the planned bucket rows (`FOR UPDATE`, in player order), then — in a new statement,
  whose READ COMMITTED snapshot is taken after every lock was granted — sets each bucket to
  its planned value only if the bucket still holds the planned `before` AND the player's
  ledger sum still equals the planned `after`. The wallet takes the same row lock before it
  writes a ledger row, so under the lock no wallet write for that player is half-done; the
  ledger check also catches a writer that appended a row without touching the bucket (a
  manual adjustment), which would otherwise turn the correction into new drift. Anything
  that moved is skipped and reported, never overwritten. Every correction made is a row in
  `rp_reconcile_audit` keyed by (plan_hash, player_id): a second apply of the same plan finds
  them and changes nothing. The table is created on the first apply, never by a dry-run.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, LiteralString

from prefect import task
from prefect.cache_policies import NO_CACHE

from remediation import connect
from remediation.bundle import (
    CollectorRecord,
    EvidenceFile,
    Manifest,
    bundle_dir,
    evidence_root,
    now,
    s3_prefix,
    write_manifest,
)
from remediation.clients.database import Database, Transaction
from remediation.errors import BadInputError
from remediation.inventory import Target
from remediation.policy import READ_ONLY, SIDE_EFFECT
from remediation.reconcile import ApplyResult, Correction, Counters, ReconcilePlan, Scope, Skipped
from remediation.redact import for_target

__all__ = [
    "APPLICATION",
    "AUDIT_TABLE",
    "apply_corrections",
    "apply_plan",
    "check_ledger_vs_bucket",
    "compare",
    "plan_from",
    "reconcile_dry_run",
    "write_reconcile_evidence",
]

APPLICATION = "rp-reconcile"
AUDIT_TABLE = "rp_reconcile_audit"

# --- the comparison ---------------------------------------------------------------------------
_KIND: LiteralString = """
         CASE WHEN b.player_id IS NULL AND s.player_id IS NOT NULL THEN 'missing-bucket'
              WHEN b.player_id IS NOT NULL AND s.player_id IS NULL AND b.balance <> 0 THEN 'orphan-bucket'
              WHEN b.balance <> s.ledger_sum THEN 'mismatch' END AS kind"""

_REDUCE: LiteralString = """
SELECT count(*) FILTER (WHERE NOT absent)                                         AS players_checked,
       count(*) FILTER (WHERE absent)                                             AS not_found,
       count(*) FILTER (WHERE kind = 'mismatch')                                  AS mismatched,
       count(*) FILTER (WHERE kind = 'missing-bucket')                            AS missing_buckets,
       count(*) FILTER (WHERE kind = 'orphan-bucket')                             AS orphan_buckets,
       coalesce(sum(abs(coalesce(balance, 0) - coalesce(ledger_sum, 0))) FILTER (WHERE kind IS NOT NULL), 0)::bigint
                                                                                  AS total_drift,
       coalesce(max(abs(coalesce(balance, 0) - coalesce(ledger_sum, 0))) FILTER (WHERE kind IS NOT NULL), 0)::bigint
                                                                                  AS largest_drift,
       coalesce(json_agg(json_build_array(player_id, kind, balance, ledger_sum)) FILTER (WHERE kind IS NOT NULL),
                '[]'::json)                                                       AS mismatches
FROM cmp
"""

#: Everyone: one pass over the ledger grouped by player, FULL JOIN the buckets.
SQL_EVERYONE: LiteralString = """
WITH sums AS (SELECT player_id, sum(amount)::bigint AS ledger_sum FROM ledger GROUP BY player_id),
cmp AS (
  SELECT coalesce(b.player_id, s.player_id) AS player_id, b.balance, s.ledger_sum, false AS absent,""" + _KIND + """
  FROM bucket b FULL JOIN sums s ON s.player_id = b.player_id)""" + _REDUCE

# Scoped: index probes per scoped player (LATERAL), never a scan of the whole bucket or ledger.
_SCOPED: LiteralString = """
cmp AS (
  SELECT sc.player_id, b.balance, s.ledger_sum,
         (b.player_id IS NULL AND s.player_id IS NULL) AS absent,""" + _KIND + """
  FROM scope sc
  LEFT JOIN LATERAL (SELECT player_id, balance FROM bucket WHERE player_id = sc.player_id) b ON true
  LEFT JOIN LATERAL (SELECT player_id, sum(amount)::bigint AS ledger_sum FROM ledger
                     WHERE player_id = sc.player_id GROUP BY player_id) s ON true)"""

#: The listed players only: one `= ANY` index scan each on bucket (primary key) and ledger (covering
#: index, no heap), joined by hash — the planner turns a join against the unnested list into a bucket scan.
SQL_PLAYERS: LiteralString = """
WITH scope AS (SELECT DISTINCT unnest(%(players)s::text[]) AS player_id),
b AS (SELECT player_id, balance FROM bucket WHERE player_id = ANY(%(players)s::text[])),
s AS (SELECT player_id, sum(amount)::bigint AS ledger_sum FROM ledger WHERE player_id = ANY(%(players)s::text[])
      GROUP BY player_id),
cmp AS (
  SELECT sc.player_id, b.balance, s.ledger_sum,
         (b.player_id IS NULL AND s.player_id IS NULL) AS absent,""" + _KIND + """
  FROM scope sc LEFT JOIN b ON b.player_id = sc.player_id LEFT JOIN s ON s.player_id = sc.player_id)""" + _REDUCE

#: Players with a ledger row, or a bucket change (drift leaves no ledger row), inside the window.
SQL_WINDOW: LiteralString = (
    "WITH scope AS (SELECT player_id FROM ledger WHERE created_at >= %(since)s"
    " AND created_at < coalesce(%(until)s::timestamptz, 'infinity')"
    " UNION SELECT player_id FROM bucket WHERE updated_at >= %(since)s"
    " AND updated_at < coalesce(%(until)s::timestamptz, 'infinity'))," + _SCOPED + _REDUCE
)


def query_for(scope: Scope) -> tuple[LiteralString, dict[str, Any]]:
    if scope.mode == "players":
        return SQL_PLAYERS, {"players": scope.players}
    if scope.mode == "window":
        return SQL_WINDOW, {"since": scope.since, "until": scope.until}
    return SQL_EVERYONE, {}


def plan_settings(tx: Transaction, scope: Scope) -> None:
    """Planner settings for this transaction's comparison, by scope."""
    if scope.mode != "everyone":  # index probes: JIT compilation would cost more than the query
        tx.execute("SELECT set_config('jit', 'off', true)")
    if scope.mode == "players":
        # With its default costs the planner reads 10,000 listed players from bucket by a parallel
        # scan of every bucket (2x slower at 1M players); a listed scope only ever wants the index.
        tx.execute("SELECT set_config('enable_seqscan', 'off', true),"
                   " set_config('max_parallel_workers_per_gather', '0', true)")


def compare(db: Database, scope: Scope) -> tuple[Counters, list[Correction], float]:
    """Counters and the corrections that make every bucket in scope equal its ledger sum (ledger is truth)."""
    query, params = query_for(scope)
    with db.transaction() as tx:
        plan_settings(tx, scope)
        started = time.perf_counter()
        row = tx.fetch_one(query, params) or {}
        took = time.perf_counter() - started
    counters = Counters.model_validate({k: int(v) for k, v in row.items() if k != "mismatches"})
    corrections = sorted(
        (Correction(player_id=pid, kind=kind, before=balance, after=ledger_sum or 0)
         for pid, kind, balance, ledger_sum in row.get("mismatches") or []),
        key=lambda c: c.player_id,
    )
    return counters, corrections, took


def plan_from(db: Database, *, incident_id: str, target: str, scope: Scope) -> ReconcilePlan:
    checked_at = datetime.now(UTC)
    counters, corrections, took = compare(db, scope)
    return ReconcilePlan(incident_id=incident_id, target=target, scope=scope, corrections=corrections,
                         counters=counters, checked_at=checked_at, query_s=round(took, 4))


@task(name="check-ledger-vs-bucket", **READ_ONLY)
def check_ledger_vs_bucket(target: Target, incident_id: str, scope: Scope) -> ReconcilePlan:
    """Dry-run: compare ledger sums with bucket balances for the scope and plan the corrections."""
    if target.policy.reconcile_source_of_truth != "ledger":  # the inventory allows only "ledger" today
        raise BadInputError(f"unsupported source of truth {target.policy.reconcile_source_of_truth!r}")
    return plan_from(connect.database(target, APPLICATION), incident_id=incident_id, target=target.name,
                     scope=scope)


@task(name="reconcile-dry-run", **READ_ONLY)
def reconcile_dry_run(target: Target, scope: Scope | None = None) -> dict[str, Any]:
    """The all-clear gate: `ok` when no bucket in scope (default: everyone) differs from its ledger sum."""
    scope = scope or Scope()
    counters, corrections, took = compare(connect.database(target, APPLICATION), scope)
    return {"ok": counters.clean, "scope": scope.describe(), **counters.model_dump(), "query_s": round(took, 4),
            "mismatches": [c.model_dump() for c in corrections[:50]]}


# --- apply --------------------------------------------------------------------------------------
AUDIT_DDL: LiteralString = """
CREATE TABLE IF NOT EXISTS rp_reconcile_audit (
    plan_hash   text        NOT NULL,
    player_id   text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('set-balance', 'create-bucket')),
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
    if c.before is None:
        return "a bucket appeared since the plan" if balance is not None else "ledger sum moved since the plan"
    if balance is None:
        return "bucket disappeared since the plan"
    parts = []
    if balance != c.before:
        parts.append(f"bucket moved {c.before} → {balance}")
    if ledger_sum != c.after:
        parts.append(f"ledger sum moved {c.after} → {ledger_sum}")
    return "; ".join(parts) or "changed since the plan"


def apply_plan(
    db: Database, plan: ReconcilePlan, *, approver: str, flow_run_id: str | None,
    chunk_size: int = 5_000, lock_timeout_ms: int = 20_000,
) -> ApplyResult:
    """Make exactly the plan's corrections, guarded, in one transaction; idempotent per plan hash."""
    if chunk_size < 1:
        raise BadInputError("chunk_size must be at least 1")
    digest = plan.hash
    started = time.perf_counter()
    applied: list[Correction] = []
    already: list[str] = []
    skipped: list[Skipped] = []
    with db.transaction() as tx:
        tx.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout_ms)}ms",))
        tx.execute(AUDIT_DDL)
        for chunk in _chunks(sorted(plan.corrections, key=lambda c: c.player_id), chunk_size):
            a, al, sk = _apply_chunk(tx, chunk, digest, plan.incident_id, approver, flow_run_id)
            applied += a
            already += al
            skipped += sk
    return ApplyResult(plan_hash=digest, applied=applied, already_applied=already, skipped=skipped,
                       duration_s=round(time.perf_counter() - started, 4))


def _apply_chunk(
    tx: Transaction, chunk: list[Correction], digest: str, incident_id: str, approver: str, run_id: str | None,
) -> tuple[list[Correction], list[str], list[Skipped]]:
    ids = [c.player_id for c in chunk]
    tx.fetch_all(_LOCK, {"ids": ids})
    done_before = {r["player_id"] for r in tx.fetch_all(_ALREADY, {"hash": digest, "ids": ids})}
    todo = [c for c in chunk if c.player_id not in done_before]
    made: set[str] = set()
    if todo:
        rows = tx.fetch_all(_APPLY, {
            "ids": [c.player_id for c in todo], "before": [c.before for c in todo], "after": [c.after for c in todo],
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
            skipped.append(Skipped(player_id=c.player_id, planned_before=c.before, planned_after=c.after,
                                   balance_now=balance, ledger_sum_now=ledger_sum, reason=_why(c, balance, ledger_sum)))
    return [c for c in todo if c.player_id in made], sorted(done_before), skipped


@task(name="apply-bucket-corrections", **{**SIDE_EFFECT, "cache_policy": NO_CACHE, "persist_result": False})
def apply_corrections(target: Target, plan: ReconcilePlan, approver: str, flow_run_id: str | None) -> ApplyResult:
    """Set the approved buckets to their ledger sums; skip (and report) any that moved; record each write.

    Not cached: a retry re-runs it and the audit table (checked under the row locks) makes the
    repeat a no-op, which a cache could not prove after a crash between commit and result write.
    """
    return apply_plan(connect.database(target, APPLICATION), plan, approver=approver, flow_run_id=flow_run_id)


# --- evidence -----------------------------------------------------------------------------------
CSV_HEADER = ("player_id", "kind", "bucket_balance", "ledger_sum", "drift", "correction")


def mismatch_rows(corrections: Iterable[Correction]) -> Iterator[tuple[Any, ...]]:
    for c in corrections:
        yield (c.player_id, c.kind, "" if c.before is None else c.before, c.after, c.drift,
               f"{c.action} {'' if c.before is None else c.before}→{c.after}")


def write_csv(out: EvidenceFile, header: tuple[str, ...], rows: Iterable[tuple[Any, ...]], batch: int = 5_000) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for i, row in enumerate(rows, 1):
        writer.writerow(row)
        if i % batch == 0:
            out.write(buf.getvalue())
            buf.seek(0)
            buf.truncate()
    out.write(buf.getvalue())


FileBody = Callable[[EvidenceFile], None]


def write_reconcile_evidence(
    target: Target, incident_id: str, key: str, initiated_by: str, flow_run_id: str | None,
    files: dict[str, tuple[str, FileBody]], root: Path | None = None,
) -> str:
    """An evidence bundle `evidence/<incident>/<key>/` of the given files, redacted, hashed, with a manifest.

    Upload it with `tasks.evidence.upload_evidence_bundle` (the same chain of custody as capture-evidence).
    """
    redactor = for_target(target)
    created = now()
    directory = bundle_dir(root or evidence_root(), incident_id, key)
    directory.mkdir(parents=True, exist_ok=True)
    records = []
    for name, (what, body) in files.items():
        started = now()
        out = EvidenceFile(directory / name, redactor)
        try:
            body(out)
        finally:
            size, sha, by_rule = out.close()
        records.append(CollectorRecord(
            collector=name.rsplit(".", 1)[0], kind="reconcile", file=name, what=what, status="ok",
            started_at=started, ended_at=now(), bytes=size, sha256=sha, redactions=sum(by_rule.values()),
            redactions_by_rule=by_rule))
    write_manifest(directory, Manifest(
        incident_id=incident_id, target=target.name, environment=target.environment, profile="reconcile",
        run_id=key, flow_run_id=flow_run_id, initiated_by=initiated_by, created_at=created,
        s3_bucket=target.evidence.bucket, s3_prefix=s3_prefix(target.evidence.prefix, created, incident_id, key),
        collectors=records))
    return str(directory)
