"""reconcile with the BUCKET as source of truth, against the sandbox's PostgreSQL: the ledger gets exactly
one `adjustment` row per drifted player, buckets are never written, a second apply is a no-op, a player
that moved is skipped, and a player with no bucket is left for a person."""

from __future__ import annotations

import csv
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from remediation.clients.database import PsycopgDatabase
from remediation.domain.reconcile import ReconcilePlan, Scope, adjustment_ref
from remediation.flowkit.resume import wait_for_incident_pause
from remediation.target.inventory import load_target
from sandbox.faults import drift_on
from sandbox.stack.info import StackInfo
from sandbox.traffic import seeded_players
from tasks.database.ledger import plan_from
from tasks.database.ledger_apply import APPLICATION, apply_plan
from tests.integration.flow_runs import LEAD, ONCALL, answer, incident

pytestmark = pytest.mark.integration

#: The audit table as targets created it before bucket truth existed (its CHECK knows two actions).
OLD_AUDIT = """
CREATE TABLE rp_reconcile_audit (
    plan_hash text NOT NULL, player_id text NOT NULL,
    action text NOT NULL CHECK (action IN ('set-balance', 'create-bucket')),
    before bigint, after bigint NOT NULL, incident_id text NOT NULL, flow_run_id text, approver text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (plan_hash, player_id))"""


def _db(stack: StackInfo) -> PsycopgDatabase:
    return PsycopgDatabase(stack.platform_dsn, application_name=APPLICATION)


def _plan(stack: StackInfo, inc: str, scope: Scope | None = None) -> ReconcilePlan:
    return plan_from(_db(stack), incident_id=inc, target="sandbox", scope=scope or Scope(), source_of_truth="bucket")


def _q(dsn: str, sql: Any, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _buckets(dsn: str) -> dict[str, tuple[int, Any]]:
    return {r[0]: (r[1], r[2]) for r in _q(dsn, "SELECT player_id, balance, updated_at FROM bucket")}


def _ledger_sums(dsn: str) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in _q(dsn, "SELECT player_id, sum(amount) FROM ledger GROUP BY player_id")}


def _adjustments(dsn: str) -> list[tuple[Any, ...]]:
    return _q(dsn, "SELECT player_id, brand_id, amount, ref FROM ledger WHERE kind = 'adjustment' ORDER BY player_id")


def test_the_policy_is_the_targets() -> None:
    sandbox = load_target("sandbox")
    assert sandbox.policy.reconcile_source_of_truth == "ledger"  # the shipped default
    bucket = sandbox.model_copy(update={"policy": sandbox.policy.model_copy(
        update={"reconcile_source_of_truth": "bucket"})})
    assert bucket.policy.reconcile_source_of_truth == "bucket"


def test_bucket_truth_appends_one_adjustment_per_drifted_player_and_never_writes_a_bucket(
        stack: StackInfo, reset_platform: StackInfo) -> None:
    dsn = stack.platform_dsn.get_secret_value()
    # A target whose audit table predates bucket truth: the apply widens its CHECK, once.
    _q(dsn, "DROP TABLE IF EXISTS rp_reconcile_audit")
    _q(dsn, OLD_AUDIT)
    drifted = {d["player_id"]: d["drift"] for d in drift_on(dsn, 4, 1500, seed=31)}
    drifted |= {d["player_id"]: d["drift"] for d in drift_on(dsn, 2, -250, seed=32)}
    lost = next(p for p in seeded_players() if p not in drifted)  # ledger rows, bucket row gone
    _q(dsn, "DELETE FROM bucket WHERE player_id = %s", (lost,))
    _q(dsn, "INSERT INTO player (player_id, brand_id) VALUES ('orphan-0001', 'beta')")
    _q(dsn, "INSERT INTO bucket (player_id, balance) VALUES ('orphan-0001', 700)")
    sums, inc = _ledger_sums(dsn), incident()
    lost_sum = sums[lost]

    plan = _plan(stack, inc)
    expected = {**drifted, "orphan-0001": 700}
    assert {c.player_id: c.drift for c in plan.corrections} == expected
    assert all(c.corrects == "ledger" and c.action == "ledger-adjustment" for c in plan.corrections)
    assert {c.player_id: (c.before, c.after) for c in plan.corrections} == {
        p: (sums.get(p, 0), sums.get(p, 0) + d) for p, d in expected.items()}
    assert [(u.player_id, u.kind, u.bucket_balance) for u in plan.needs_human] == [(lost, "missing-bucket", None)]
    c = plan.counters
    assert (c.mismatched, c.orphan_buckets, c.missing_buckets, c.needs_human) == (6, 1, 1, 1)

    buckets = _buckets(dsn)
    done = apply_plan(_db(stack), plan, approver="bob", flow_run_id="run-1")
    assert sorted(a.player_id for a in done.applied) == sorted(expected) and not done.skipped
    assert _buckets(dsn) == buckets, "bucket truth wrote a bucket"
    brand = {p: b for p, b in _q(dsn, "SELECT player_id, brand_id FROM player")}
    assert _adjustments(dsn) == sorted(
        (p, brand[p], d, adjustment_ref(plan.hash, p)) for p, d in expected.items())
    assert _q(dsn, "SELECT player_id, action, before, after, approver, flow_run_id FROM rp_reconcile_audit"
                   " WHERE plan_hash = %s ORDER BY player_id", (plan.hash,)) == sorted(
        (p, "ledger-adjustment", sums.get(p, 0), sums.get(p, 0) + d, "bob", "run-1") for p, d in expected.items())
    # The player with no bucket is untouched: still no bucket, the same ledger sum.
    assert lost not in _buckets(dsn) and _ledger_sums(dsn)[lost] == lost_sum

    # The same plan again changes nothing, at the audit table and at UNIQUE (kind, ref).
    ledger_rows = _q(dsn, "SELECT count(*) FROM ledger")
    again = apply_plan(_db(stack), plan, approver="bob", flow_run_id="run-2")
    assert again.applied == [] and again.skipped == [] and sorted(again.already_applied) == sorted(expected)
    assert _q(dsn, "SELECT count(*) FROM ledger") == ledger_rows and _buckets(dsn) == buckets
    _q(dsn, "DELETE FROM rp_reconcile_audit WHERE plan_hash = %s", (plan.hash,))
    lost_audit = apply_plan(_db(stack), plan, approver="bob", flow_run_id="run-3")
    assert lost_audit.applied == [] and sorted(lost_audit.already_applied) == sorted(expected)
    assert _q(dsn, "SELECT count(*) FROM ledger") == ledger_rows

    # Dry-run again: no mismatch left but the player a person must look at.
    after = _plan(stack, inc)
    assert after.corrections == [] and [u.player_id for u in after.needs_human] == [lost]
    assert (after.counters.mismatched, after.counters.orphan_buckets, after.counters.missing_buckets) == (0, 0, 1)
    # The widened CHECK still refuses what no apply writes.
    with pytest.raises(psycopg.errors.CheckViolation):
        _q(dsn, "INSERT INTO rp_reconcile_audit (plan_hash, player_id, action, after, incident_id, approver)"
                " VALUES ('x', 'y', 'delete-ledger', 0, 'INC-1', 'bob')")


def test_a_player_that_moved_since_the_plan_is_skipped_and_reported(
        stack: StackInfo, reset_platform: StackInfo) -> None:
    dsn = stack.platform_dsn.get_secret_value()
    drifted = {d["player_id"]: d["drift"] for d in drift_on(dsn, 4, 900, seed=41)}
    scope = Scope(mode="players", players=sorted(drifted))
    plan = _plan(stack, incident(), scope)
    assert len(plan.corrections) == 4
    moved_bucket, moved_ledger, *rest = sorted(drifted)
    _q(dsn, "UPDATE bucket SET balance = balance + 10 WHERE player_id = %s", (moved_bucket,))
    # A writer that appends without touching the bucket (a manual credit) moves the ledger sum only.
    _q(dsn, "INSERT INTO ledger (player_id, brand_id, kind, amount, ref)"
            " SELECT player_id, brand_id, 'adjustment', 300, 'test:manual-credit' FROM player WHERE player_id = %s",
       (moved_ledger,))
    sums, buckets = _ledger_sums(dsn), _buckets(dsn)

    done = apply_plan(_db(stack), plan, approver="bob", flow_run_id=None)
    assert sorted(a.player_id for a in done.applied) == sorted(rest)
    reasons = {s.player_id: s.reason for s in done.skipped}
    assert set(reasons) == {moved_bucket, moved_ledger}
    b0 = buckets[moved_bucket][0]
    assert reasons[moved_bucket] == f"bucket moved {b0 - 10} → {b0}"
    assert reasons[moved_ledger] == f"ledger sum moved {sums[moved_ledger] - 300} → {sums[moved_ledger]}"
    assert all(s.corrects == "ledger" for s in done.skipped)
    now = _ledger_sums(dsn)
    assert {p: now[p] - sums[p] for p in drifted} == {moved_bucket: 0, moved_ledger: 0,
                                                       **{p: drifted[p] for p in rest}}
    assert _buckets(dsn) == buckets
    # A fresh plan picks up exactly the two that moved.
    fresh = _plan(stack, plan.incident_id, scope)
    assert {c.player_id: c.drift for c in fresh.corrections} == {moved_bucket: 910, moved_ledger: 600}


def test_the_flow_says_who_is_left_for_a_person_and_does_not_call_that_clean(
        stack: StackInfo, reset_platform: StackInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.reconcile as flow_module

    dsn = stack.platform_dsn.get_secret_value()
    sandbox = load_target("sandbox")
    bucket_truth = sandbox.model_copy(update={"policy": sandbox.policy.model_copy(
        update={"reconcile_source_of_truth": "bucket"})})
    monkeypatch.setattr(flow_module, "load_target", lambda _name: bucket_truth)
    lost = seeded_players()[5]
    _q(dsn, "DELETE FROM bucket WHERE player_id = %s", (lost,))
    drifted = {d["player_id"]: d["drift"] for d in drift_on(dsn, 2, 450, seed=51)}
    inc = incident()

    dry = flow_module.reconcile(incident_id=inc, initiated_by=ONCALL, dry_run=True, return_state=True)
    out = dry.result()
    assert dry.is_completed() and out["outcome"] == "dry-run"
    assert {c["player_id"]: c["after"] - c["before"] for c in out["corrections"]} == drifted
    assert [u["player_id"] for u in out["needs_human"]] == [lost]
    assert f"left for a person, not corrected ({lost})" in (dry.message or "")

    # Approved and applied through the flow: the drift is booked to the ledger, the lost bucket is not.
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(state=flow_module.reconcile(
        incident_id=inc, initiated_by=ONCALL, dry_run=False, approval_timeout_s=120, return_state=True)))
    worker.start()
    try:
        paused = wait_for_incident_pause(inc, timeout_s=120)
        answer(paused.id, decision="approve", approver=LEAD, reason="bucket-truth drill")
    finally:
        worker.join(timeout=120)
    applied = outcome["state"]
    out = applied.result(raise_on_failure=False)
    assert applied.is_failed() and out["outcome"] == "applied-needs-human", applied.message
    assert "2 applied" in (applied.message or "") and f"({lost})" in (applied.message or "")
    assert sorted(c["player_id"] for c in out["applied"]) == sorted(drifted) and not out["skipped"]
    assert [u["player_id"] for u in out["needs_human"]] == [lost]
    assert sorted(p for p, *_ in _adjustments(dsn)) == sorted(drifted)
    with (Path(out["applied_evidence"]["bundle"]) / "reconcile-applied.csv").open() as fh:
        rows = {r["player_id"]: r for r in csv.DictReader(fh)}
    assert rows[lost]["outcome"] == "left-for-a-person"
    assert all(rows[p]["outcome"] == "applied" and rows[p]["corrects"] == "ledger" for p in drifted)

    # Only the lost bucket left: nothing this tool may write, and the run fails saying so (no approval asked).
    ledger_rows = _q(dsn, "SELECT count(*) FROM ledger")
    run = flow_module.reconcile(incident_id=inc, initiated_by=ONCALL, dry_run=False, return_state=True)
    assert run.is_failed() and f"nothing applied: 1 player(s) left for a person, not corrected ({lost})" in (
        run.message or "")
    assert run.result(raise_on_failure=False)["outcome"] == "needs-human"
    assert _q(dsn, "SELECT count(*) FROM ledger") == ledger_rows and lost not in _buckets(dsn)
