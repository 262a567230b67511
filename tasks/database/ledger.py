"""Ledger vs bucket on the platform database: the set-based comparison reconcile plans from.

* `compare` is ONE statement: the ledger summed per player, joined to the buckets, reduced to
  the counters and the list of mismatches in the same pass. No per-player loop, one snapshot,
  so a wallet write in flight is either wholly in it or wholly out of it (no false mismatch).
* `tasks/database/ledger_apply.py` writes exactly the approved corrections in ONE guarded transaction.
* Which side is corrected is the target's policy (`reconcile_source_of_truth`): the comparison
  is the same, the plan (`remediation.domain.reconcile.plan_corrections`) and the write differ.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, LiteralString

from remediation.clients.database import Database, Transaction
from remediation.domain.reconcile import (
    Correction,
    Counters,
    ReconcilePlan,
    Scope,
    SourceOfTruth,
    Unresolved,
    plan_corrections,
)
from remediation.target import connect
from remediation.target.inventory import Target
from tasks.database.ledger_apply import APPLICATION
from tasks.policy import READ_ONLY, task

__all__ = ["check_ledger_vs_bucket", "compare", "plan_from", "reconcile_dry_run"]

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

#: Closes each `cmp`. OFFSET 0 keeps the planner from flattening `cmp` into the reduction, so a row's kind
#: is computed once, there, and the aggregates' FILTERs test a column. Flattened, the CASE is evaluated once
#: per FILTER that names it (PostgreSQL shares no sub-expression): six times a row, ~15% more server CPU than
#: the bare comparison at 1,000,000 players (bench/reconcile.py).
_ONCE: LiteralString = """
  OFFSET 0)"""

#: Everyone: one pass over the ledger grouped by player, FULL JOIN the buckets.
SQL_EVERYONE: LiteralString = """
WITH sums AS (SELECT player_id, sum(amount)::bigint AS ledger_sum FROM ledger GROUP BY player_id),
cmp AS (
  SELECT coalesce(b.player_id, s.player_id) AS player_id, b.balance, s.ledger_sum, false AS absent,""" + _KIND + """
  FROM bucket b FULL JOIN sums s ON s.player_id = b.player_id""" + _ONCE + _REDUCE

# Scoped: index probes per scoped player (LATERAL), never a scan of the whole bucket or ledger.
_SCOPED: LiteralString = """
cmp AS (
  SELECT sc.player_id, b.balance, s.ledger_sum,
         (b.player_id IS NULL AND s.player_id IS NULL) AS absent,""" + _KIND + """
  FROM scope sc
  LEFT JOIN LATERAL (SELECT player_id, balance FROM bucket WHERE player_id = sc.player_id) b ON true
  LEFT JOIN LATERAL (SELECT player_id, sum(amount)::bigint AS ledger_sum FROM ledger
                     WHERE player_id = sc.player_id GROUP BY player_id) s ON true""" + _ONCE

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
  FROM scope sc LEFT JOIN b ON b.player_id = sc.player_id
  LEFT JOIN s ON s.player_id = sc.player_id""" + _ONCE + _REDUCE

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


def _compare(
    db: Database, scope: Scope, source_of_truth: SourceOfTruth,
) -> tuple[Counters, list[Correction], list[Unresolved], float]:
    query, params = query_for(scope)
    with db.transaction() as tx:
        plan_settings(tx, scope)
        started = time.perf_counter()
        row = tx.fetch_one(query, params) or {}
        took = time.perf_counter() - started
    corrections, unresolved = plan_corrections(row.get("mismatches") or [], source_of_truth)
    counters = Counters.model_validate({k: int(v) for k, v in row.items() if k != "mismatches"})
    return counters.model_copy(update={"needs_human": len(unresolved)}), corrections, unresolved, took


def compare(db: Database, scope: Scope) -> tuple[Counters, list[Correction], float]:
    """Counters and the corrections that make every bucket in scope equal its ledger sum (ledger is truth)."""
    counters, corrections, _, took = _compare(db, scope, "ledger")
    return counters, corrections, took


def plan_from(
    db: Database, *, incident_id: str, target: str, scope: Scope, source_of_truth: SourceOfTruth = "ledger",
) -> ReconcilePlan:
    checked_at = datetime.now(UTC)
    counters, corrections, unresolved, took = _compare(db, scope, source_of_truth)
    return ReconcilePlan(incident_id=incident_id, target=target, scope=scope, source_of_truth=source_of_truth,
                         corrections=corrections, needs_human=unresolved, counters=counters,
                         checked_at=checked_at, query_s=round(took, 4))


@task(name="check-ledger-vs-bucket", **READ_ONLY)
def check_ledger_vs_bucket(target: Target, incident_id: str, scope: Scope) -> ReconcilePlan:
    """Dry-run: compare ledger sums with bucket balances for the scope and plan the corrections of the
    side the target's policy does not take as the source of truth."""
    return plan_from(connect.database(target, APPLICATION), incident_id=incident_id, target=target.name,
                     scope=scope, source_of_truth=target.policy.reconcile_source_of_truth)


@task(name="reconcile-dry-run", **READ_ONLY)
def reconcile_dry_run(target: Target, scope: Scope | None = None) -> dict[str, Any]:
    """The all-clear gate: `ok` when no bucket in scope (default: everyone) differs from its ledger sum."""
    scope = scope or Scope()
    truth = target.policy.reconcile_source_of_truth
    counters, corrections, unresolved, took = _compare(connect.database(target, APPLICATION), scope, truth)
    return {"ok": counters.clean, "scope": scope.describe(), "source_of_truth": truth, **counters.model_dump(),
            "query_s": round(took, 4), "mismatches": [c.model_dump() for c in corrections[:50]],
            "left_for_a_person": [u.model_dump() for u in unresolved[:50]]}
