"""kill-long-queries against the sandbox's PostgreSQL: a session holding the bucket lock (the wallet-wedged
fault) with a wallet write queued behind it; through the worker, approvals answered via the resume API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from prefect.deployments import run_deployment

from flows.kill_long_queries import kill_long_queries
from remediation.errors import BadInputError
from sandbox import faults
from sandbox.stack.info import StackInfo
from tests.integration.flow_runs import ONCALL, answer_until_done, finish, incident, result, start

pytestmark = pytest.mark.integration
KILL = "kill-long-queries/kill-long-queries"


def _holder(stack: StackInfo) -> list[int]:
    with psycopg.connect(stack.superuser_dsn.get_secret_value(), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                            (faults.HOLDER_APP,)).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def wedged(stack: StackInfo, reset_platform: StackInfo) -> Iterator[dict[str, Any]]:
    """The holder's `pg_sleep` under an EXCLUSIVE lock on `bucket`, and a wallet write queued behind it."""
    dsn = stack.platform_dsn.get_secret_value()
    faults.wedge_on(dsn, "hang", home=stack.home)
    waiter: dict[str, Any] = {}

    def write() -> None:
        with psycopg.connect(dsn, application_name="pytest-wallet-writer") as conn:
            conn.execute("SET lock_timeout = '90s'")
            conn.execute("UPDATE bucket SET updated_at = updated_at WHERE player_id = 'alpha-0003'")
            waiter["done_at"] = time.monotonic()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    time.sleep(1.5)  # the holder's query is now past a 1 s threshold, the writer waits on its lock
    try:
        yield {"holder": _holder(stack), "waiter": waiter, "thread": thread}
    finally:
        faults.wedge_off(dsn, home=stack.home)
        thread.join(timeout=30)


def test_bad_input_and_reject_stop_nothing_then_approved_stops_the_blocker_once(
    stack: StackInfo, deployments: list[str], wedged: dict[str, Any]
) -> None:
    [holder] = wedged["holder"]
    inc = incident()
    # The dry run from the run form: tests/ui/test_oncall_journey.py.
    for bad in ({"threshold_s": 0}, {"include": ["checkpointer"]}, {"evidence_profile": "No Such"}):
        with pytest.raises(Exception, match=r"threshold_s|include|evidence_profile"):
            run_deployment(KILL, parameters={"incident_id": inc, "initiated_by": ONCALL, **bad}, timeout=0)
    with pytest.raises(BadInputError, match="evidence_profile 'nope' is not one of"):
        kill_long_queries(incident_id=inc, initiated_by=ONCALL, evidence_profile="nope", dry_run=False)

    rejected = answer_until_done(start(KILL, incident_id=inc, initiated_by=ONCALL, threshold_s=1, dry_run=False),
                                 decision="reject")
    assert rejected.state is not None and rejected.state.is_completed()
    assert result(rejected)["outcome"] == "reject" and "nothing changed" in str(rejected.state.message)
    assert _holder(stack) == [holder] and wedged["thread"].is_alive(), "nothing stopped so far"

    run = answer_until_done(start(KILL, incident_id=inc, initiated_by=ONCALL, threshold_s=1, grace_s=2,
                                  dry_run=False))
    assert run.state is not None and run.state.is_completed(), run.state.message if run.state else None
    out = result(run)
    assert out["by_pid"] == {str(holder): "cancelled"} and out["verification"]["ok"]
    assert out["verification"]["waiting"] == 0
    assert out["evidence_before"].startswith("s3://") and out["evidence_after"].startswith("s3://")
    assert out["evidence_before"] != out["evidence_after"]
    wedged["thread"].join(timeout=30)
    assert "done_at" in wedged["waiter"], "the write queued behind the lock went through"
    assert _holder(stack) == []
    body = {"player_id": "alpha-0003", "amount": 1, "ref": f"kill-{time.time_ns()}"}
    assert httpx.post(f"{stack.gateway_url}/api/v1/wallet/deposit", json=body, timeout=10).status_code == 200

    again = finish(start(KILL, incident_id=inc, initiated_by=ONCALL, threshold_s=1, dry_run=False))
    assert again.state is not None and again.state.is_completed()
    assert "nothing to stop" in str(again.state.message) and result(again)["outcome"] == "nothing-to-do"
