"""Fault matrix, the target's side: S3 down during a capture, the admin API down during a contain, the
target's PostgreSQL restarted in the middle of a reconcile apply."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from remediation.domain.reconcile import Scope
from remediation.errors import RetryableError
from remediation.evidence.bundle import UPLOADED, load_manifest, pending_bundles
from sandbox.faults import drift_on
from sandbox.stack.core import PROJECT_DIR, Stack
from sandbox.stack.info import StackInfo
from tasks.database.ledger import plan_from
from tasks.database.ledger_apply import APPLICATION, apply_plan
from tests.faults.timing import Marks
from tests.integration.flow_runs import finish, incident, result, start
from tests.integration.test_contain_recover import _contain, _deposit, read_changes
from tests.integration.test_reconcile import _audit_rows, _books, _db, _off

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "remediation.cli", *args], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=120)


def test_s3_down_during_a_capture_keeps_the_bundle_and_sync_uploads_it_when_s3_returns(
    stack: StackInfo, deployments: list[str], reset_platform: StackInfo,
) -> None:
    st = Stack()
    marks = Marks("S3 down during capture-evidence")
    marks.fault("S3 stopped")
    st.s3.stop()
    try:
        run = finish(start("capture-evidence/capture-evidence", incident_id=incident(), initiated_by="pytest"),
                     timeout_s=180)
        marks.mark("capture ended")
    finally:
        st.s3.start()
        marks.mark("S3 back (journal replayed)")
    assert run.state is not None and run.state.is_failed(), run.state
    assert "S3 upload pending" in str(run.state.message), run.state.message
    report = result(run)
    bundle = Path(report["bundle"])
    assert report["counts"]["failed"] == 0 and not (bundle / UPLOADED).exists()
    root = bundle.parent
    while not pending_bundles(root) and root != root.parent:
        root = root.parent
    assert bundle in pending_bundles(root)

    synced = _cli("evidence", "sync", "--root", str(root))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    marks.mark("evidence sync uploaded it")
    assert (bundle / UPLOADED).exists() and bundle not in pending_bundles(root)
    prefix = load_manifest(bundle).s3_prefix
    verified = _cli("evidence", "verify", f"s3://{stack.s3_bucket}/{prefix}")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_admin_down_uses_the_sql_fallback(stack: StackInfo, deployments: list[str],
                                          reset_platform: StackInfo) -> None:
    inc = incident()
    st = Stack()
    st.admin_down(True)
    try:
        out = _contain(inc, lever="deposit-halt")
    finally:
        st.admin_down(False)
    assert out["state"].is_completed(), out["state"].message
    assert out["path"] == "sql-fallback" and "admin API failed" in out["note"]
    assert _deposit(stack, "synthetic-alpha", f"{inc}-after") == {"status": 1, "msg": "Finance maintenance"}
    assert [c.path for c in read_changes(inc)] == ["sql-fallback"]


def test_postgres_restart_mid_apply_leaves_nothing_half_applied(stack: StackInfo, reset_platform: StackInfo) -> None:
    dsn = stack.platform_dsn.get_secret_value()
    db = _db(stack)
    drifted = {d["player_id"]: d["drift"] for d in drift_on(dsn, 6, 4321, seed=21)}
    plan = plan_from(db, incident_id=incident(), target="sandbox", scope=Scope(mode="players",
                                                                                players=sorted(drifted)))
    assert len(plan.corrections) == 6
    blocker = sorted(drifted)[3]  # apply corrects three players, then waits on this row's lock
    holder = psycopg.connect(dsn, application_name="rp-test-row-lock")
    holder.execute("SELECT 1 FROM bucket WHERE player_id = %s FOR UPDATE", (blocker,))
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = apply_plan(db, plan, approver="bob", flow_run_id=None, chunk_size=1)
        except Exception as exc:  # the restart kills the connection mid-transaction
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        with psycopg.connect(dsn, autocommit=True) as watch:
            deadline = time.monotonic() + 20
            while True:
                row = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                    (APPLICATION,)).fetchone()
                if row and row[0]:
                    break
                assert time.monotonic() < deadline, "apply never blocked on the held row"
                time.sleep(0.05)
            # Mid-transaction: the first three rows locked and written (uncommitted), blocked on the fourth.
            done_so_far = watch.execute(
                "SELECT count(*) FROM bucket WHERE player_id = ANY(%s) AND xmax <> 0", (sorted(drifted)[:3],)
            ).fetchone()
            assert done_so_far and done_so_far[0] == 3
        Stack().pg.restart()
    finally:
        worker.join(timeout=60)
        holder.close()
    assert isinstance(outcome.get("error"), RetryableError), outcome
    assert _off(_books(dsn)) == drifted, "half an apply survived the restart"
    assert _audit_rows(dsn, plan.hash) == []
    # Re-running the same approved plan completes it.
    again = apply_plan(db, plan, approver="bob", flow_run_id=None)
    assert len(again.applied) == 6 and not again.skipped and not again.already_applied
    assert _off(_books(dsn)) == {}
    assert len(_audit_rows(dsn, plan.hash)) == 6
