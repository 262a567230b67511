"""reconcile against the sandbox: drift found exactly, approval bound to the plan, guarded apply under
live deposits, idempotent re-apply, and a PostgreSQL restart in the middle of an apply."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from remediation.clients.database import PsycopgDatabase
from remediation.domain.reconcile import Correction, Counters, ReconcilePlan, Scope
from remediation.flowkit.resume import wait_for_pause
from sandbox.faults import drift_on
from sandbox.stack.info import StackInfo
from sandbox.traffic import Traffic, seeded_players
from tasks.database.ledger import plan_from, plan_settings, query_for
from tasks.database.ledger_apply import APPLICATION, AUDIT_TABLE, apply_plan
from tests.integration.flow_runs import LEAD, ONCALL, answer, finish, incident, result, start

pytestmark = pytest.mark.integration
RECONCILE = "reconcile/reconcile"


def _books(dsn: str) -> dict[str, tuple[int | None, int]]:
    """player -> (bucket balance, ledger sum) for every player with either."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT coalesce(b.player_id, s.player_id), b.balance, coalesce(s.total, 0)::bigint"
            " FROM bucket b FULL JOIN (SELECT player_id, sum(amount) AS total FROM ledger GROUP BY player_id) s"
            " USING (player_id)"
        ).fetchall()
    return {r[0]: (r[1], int(r[2])) for r in rows}


def _off(books: dict[str, tuple[int | None, int]]) -> dict[str, int]:
    return {p: (b or 0) - s for p, (b, s) in books.items() if b != s}


def _audit_exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (AUDIT_TABLE,)).fetchone()
    return bool(row and row[0])


def _audit_rows(dsn: str, plan_hash: str) -> list[tuple[Any, ...]]:
    if not _audit_exists(dsn):
        return []
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT player_id, before, after, approver, flow_run_id FROM rp_reconcile_audit WHERE plan_hash = %s"
            " ORDER BY player_id", (plan_hash,)).fetchall()


def _wait_until(ok: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.05)


def _db(stack: StackInfo) -> PsycopgDatabase:
    return PsycopgDatabase(stack.platform_dsn, application_name=APPLICATION)


def _scans(node: dict[str, Any]) -> list[tuple[str, str]]:
    own = [(node["Node Type"], node.get("Relation Name", ""))] if "Scan" in node["Node Type"] else []
    return own + [s for child in node.get("Plans", []) for s in _scans(child)]


def test_listed_players_are_read_by_index_never_by_a_table_scan(stack: StackInfo) -> None:
    """The planner's default costs pick a parallel scan of every bucket for a long list (0.25 s at 1M)."""
    scope = Scope(mode="players", players=[*seeded_players()[:40], "nobody-1"])
    query, params = query_for(scope)
    with _db(stack).transaction() as tx:
        plan_settings(tx, scope)
        row = tx.fetch_one("EXPLAIN (FORMAT JSON) " + query, params)
    assert row is not None
    scans = _scans(row["QUERY PLAN"][0]["Plan"])
    on_books = [(kind, rel) for kind, rel in scans if rel in ("bucket", "ledger")]
    assert {rel for _, rel in on_books} == {"bucket", "ledger"}, scans
    # Index, index-only and bitmap-heap scans are all driven by the index; a Seq Scan reads every row.
    assert not [kind for kind, _ in on_books if kind in ("Seq Scan", "Parallel Seq Scan")], scans


def test_every_kind_of_mismatch_is_counted_alike_in_every_scope(stack: StackInfo) -> None:
    """Books with each kind of mismatch, a zero orphan, clean players and an unknown one, in temporary tables
    that shadow the platform's for one rolled-back transaction."""
    since = datetime(2026, 5, 6, 2, 0, tzinfo=UTC)
    old, new = since - timedelta(days=1), since + timedelta(minutes=5)
    ledger = [("clean", 500, old), ("clean", -200, new), ("up", 1000, old), ("down", 700, new), ("lost", 300, old),
              ("lost", 50, new), ("neg", -40, old), ("zero-sum", 10, old), ("zero-sum", -10, new)]
    buckets = [("clean", 300, old), ("up", 2500, new), ("down", 450, old), ("orphan", 900, new),
               ("orphan-0", 0, new), ("neg", 0, old), ("zero-sum", 0, old)]
    kinds = {"up": ("mismatch", 2500, 1000), "down": ("mismatch", 450, 700), "lost": ("missing-bucket", None, 350),
             "orphan": ("orphan-bucket", 900, None), "neg": ("mismatch", 0, -40)}
    listed = ["clean", "up", "lost", "orphan", "orphan-0", "nobody"]
    cases = [  # scope, the counters (checked, not found, mismatched, missing, orphan, total, largest), mismatched
        (Scope(), (8, 0, 3, 1, 1, 1500 + 250 + 40 + 350 + 900, 1500), set(kinds)),
        (Scope(mode="players", players=listed), (5, 1, 1, 1, 1, 1500 + 350 + 900, 1500), {"up", "lost", "orphan"}),
        # a row or a bucket change at or after `since`: neither "neg" nor "up"'s ledger, but "up"'s bucket
        (Scope(mode="window", since=since), (7, 0, 2, 1, 1, 1500 + 250 + 350 + 900, 1500),
         {"up", "down", "lost", "orphan"}),
    ]
    with psycopg.connect(stack.platform_dsn.get_secret_value()) as conn:
        conn.execute("CREATE TEMP TABLE ledger (player_id text NOT NULL, amount bigint NOT NULL,"
                     " created_at timestamptz NOT NULL) ON COMMIT DROP")
        conn.execute("CREATE TEMP TABLE bucket (player_id text PRIMARY KEY, balance bigint NOT NULL,"
                     " updated_at timestamptz NOT NULL) ON COMMIT DROP")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO ledger VALUES (%s, %s, %s)", ledger)
            cur.executemany("INSERT INTO bucket VALUES (%s, %s, %s)", buckets)
        for scope, counters, mismatched in cases:
            row = conn.execute(*query_for(scope)).fetchone()
            assert row is not None
            assert row[:-1] == counters, scope.describe()
            assert {m[0]: tuple(m[1:]) for m in row[-1]} == {p: kinds[p] for p in mismatched}, scope.describe()
        conn.rollback()


def test_a_rows_kind_is_computed_once_not_once_per_counter(stack: StackInfo) -> None:
    """Flattened into the reduction, `cmp`'s CASE is evaluated by each FILTER naming it: six times a row,
    ~15% more server CPU than the bare comparison at 1M players. The node under the reduction must compute
    the kind (its CASE) once a row, and the reduction read it as a column. (EXPLAIN shows that column as the
    expression it holds.)"""
    for scope in (Scope(), Scope(mode="players", players=["alpha-0001"]),
                  Scope(mode="window", since=datetime.now(UTC))):
        query, params = query_for(scope)
        with _db(stack).transaction() as tx:
            plan_settings(tx, scope)
            row = tx.fetch_one("EXPLAIN (FORMAT JSON, VERBOSE) " + query, params)
        assert row is not None
        top = row["QUERY PLAN"][0]["Plan"]
        assert top["Node Type"] == "Aggregate", top["Node Type"]
        [below] = top["Plans"]
        assert any(out.startswith("CASE") for out in below["Output"]), (scope.describe(), below["Output"])


def test_drift_found_exactly_then_approved_plan_applied_once_and_books_clean(
        stack: StackInfo, deployments: list[str], reset_platform: StackInfo) -> None:
    dsn = stack.platform_dsn.get_secret_value()
    with psycopg.connect(dsn, autocommit=True) as conn:  # prove the dry-run never creates the audit table
        conn.execute("DROP TABLE IF EXISTS rp_reconcile_audit")
    drifted = {d["player_id"]: d["drift"] for d in drift_on(dsn, 4, 1500, seed=7)}
    drifted |= {d["player_id"]: d["drift"] for d in drift_on(dsn, 2, -250, seed=8)}
    inc = incident()

    dry = finish(start(RECONCILE, incident_id=inc, initiated_by=ONCALL, dry_run=True))
    out = result(dry)
    assert dry.state is not None and dry.state.is_completed(), dry.state
    assert {c["player_id"]: (c["before"] or 0) - c["after"] for c in out["corrections"]} == drifted
    assert out["counters"]["mismatched"] == 6 and out["counters"]["total_drift"] == 4 * 1500 + 2 * 250
    assert out["counters"]["largest_drift"] == 1500 and out["counters"]["players_checked"] == 153
    assert not _audit_exists(dsn), "a dry-run created the audit table"
    with (Path(out["evidence"]["bundle"]) / "reconcile-mismatches.csv").open() as fh:
        assert {r["player_id"]: int(r["drift"]) for r in csv.DictReader(fh)} == drifted
    assert out["evidence"]["uploaded"], out["evidence"]

    run_id = start(RECONCILE, incident_id=inc, initiated_by=ONCALL, dry_run=False)
    first = wait_for_pause(run_id)
    # New drift after the plan was shown: the approval must not count for the new plan.
    drifted |= {d["player_id"]: d["drift"] for d in drift_on(dsn, 1, 777, seed=9)}
    shown = answer(run_id, decision="approve", approver=LEAD, reason="drift from INC drill")
    second = answer(run_id, decision="approve", approver=LEAD, reason="new drift included, approved again")
    assert shown["plan_hash"] != second["plan_hash"], "the changed plan was not shown again"
    assert first.id == run_id
    run = finish(run_id)
    out = result(run)
    assert run.state is not None and run.state.is_completed(), (run.state.message, out)
    assert out["plan_hash"] == second["plan_hash"]
    assert {c["player_id"] for c in out["applied"]} == set(drifted) and not out["skipped"]
    assert out["after"]["mismatched"] == 0 and "zero mismatches" in (run.state.message or "")
    assert _off(_books(dsn)) == {}
    audit = _audit_rows(dsn, out["plan_hash"])
    assert [(r[0], r[1] - r[2], r[3], r[4]) for r in audit] == sorted(
        (p, d, LEAD, str(run_id)) for p, d in drifted.items())

    # The same plan applied again changes nothing.
    plan = ReconcilePlan(incident_id=inc, target="sandbox", scope=Scope(),
                         corrections=[Correction(**c) for c in out["applied"]],
                         counters=Counters(**out["counters"]), checked_at=datetime.now(UTC))
    assert plan.hash == out["plan_hash"]
    before = _books(dsn)
    again = apply_plan(_db(stack), plan, approver="bob", flow_run_id=None)
    assert again.applied == [] and again.skipped == [] and sorted(again.already_applied) == sorted(drifted)
    assert _books(dsn) == before and len(_audit_rows(dsn, plan.hash)) == len(drifted)

    # A clean book: the flow says so and asks nobody.
    clean = finish(start(RECONCILE, incident_id=inc, initiated_by=ONCALL, dry_run=False))
    assert clean.state is not None and clean.state.is_completed() and result(clean)["outcome"] == "clean"


def test_deposits_during_apply_never_produce_a_wrong_balance(stack: StackInfo, reset_platform: StackInfo) -> None:
    dsn = stack.platform_dsn.get_secret_value()
    db = _db(stack)
    drifted = {d["player_id"]: d["drift"] for d in drift_on(dsn, 60, 900, seed=11)}
    players = seeded_players()
    plan = plan_from(db, incident_id=incident(), target="sandbox", scope=Scope())
    assert {c.player_id: c.drift for c in plan.corrections} == drifted
    with Traffic(stack.gateway_url, players, workers=6, seed=3) as traffic:
        # Deposits land between the plan and the apply (so some drifted players moved) and during it;
        # waited for, not slept for: on a loaded box the first deposit can take more than a second.
        _wait_until(lambda: traffic.stats.ok >= 10, "10 deposits before the apply")
        started = time.monotonic()
        done = apply_plan(db, plan, approver="bob", flow_run_id=None, chunk_size=1)
        ended = time.monotonic()
        _wait_until(lambda: (traffic.stats.last_ok_at or 0) > ended, "a deposit after the apply")
    stats = traffic.stats
    assert stats.ok > 20 and stats.unavailable == 0, stats.as_dict()
    assert stats.first_ok_at is not None and stats.first_ok_at < started and (stats.last_ok_at or 0) > ended
    books = _books(dsn)
    skipped = {s.player_id for s in done.skipped}
    assert {c.player_id for c in done.applied} | skipped == set(drifted)
    # Applied players balance exactly; skipped ones keep exactly their drift (nothing overwritten);
    # every other player is as balanced as the wallet left it.
    assert _off(books) == {p: drifted[p] for p in skipped}, (done.summary(), stats.as_dict())
    moved = {p for p in drifted if p in stats.by_player}
    assert skipped <= moved
    # The rest: a fresh plan, applied after the traffic stopped, leaves the books clean.
    rest = plan_from(db, incident_id=plan.incident_id, target="sandbox", scope=Scope(mode="players",
                                                                                      players=sorted(drifted)))
    assert {c.player_id for c in rest.corrections} == skipped
    if rest.corrections:
        assert len(apply_plan(db, rest, approver="bob", flow_run_id=None).applied) == len(skipped)
    assert _off(_books(dsn)) == {}
