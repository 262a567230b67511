"""Fault matrix, Prefect side: a run waiting for approval outlives its API server, every server process
and Redis; its target lock stays held; the approval applies once."""

from __future__ import annotations

import time
from uuid import UUID

import httpx
import pytest

from remediation.flowkit.resume import pending_step, wait_for_pause
from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from tests.faults.timing import (
    CONTAIN,
    LOCK,
    WRITE,
    Marks,
    active_slots,
    admin_writes,
    kill_group,
    run_state,
    wait_for,
)
from tests.integration.flow_runs import LEAD, ONCALL, answer, confirm_initiator, finish, incident, result, start

pytestmark = pytest.mark.integration


def _paused_contain(started: list[UUID]) -> UUID:
    """A deposit-halt contain holding its lock, waiting for its approval."""
    run_id = start(CONTAIN, incident_id=incident(), lever="deposit-halt", initiated_by=ONCALL, dry_run=False)
    started.append(run_id)
    confirm_initiator(run_id)
    assert pending_step(wait_for_pause(run_id, timeout_s=60)) == "contain-deposit-halt"
    assert active_slots(LOCK) == 1
    return run_id


def _still_waiting(run_id: UUID) -> None:
    state = run_state(run_id).state
    assert state is not None and state.is_paused(), f"the run stopped waiting: {state}"
    assert active_slots(LOCK) == 1, "the run's lock was lost"


def _approve_applies_once(st: Stack, run_id: UUID, writes_before: int, marks: Marks) -> None:
    answer(run_id, approver=LEAD, reason="fault drill")
    run = finish(run_id, timeout_s=120)
    marks.mark("approved run finished")
    assert run.state is not None and run.state.is_completed(), run.state
    assert result(run)["outcome"] == "applied"
    assert admin_writes(st.home, WRITE) == writes_before + 1, "the lever was written more than once"
    wait_for(lambda: active_slots(LOCK) == 0, "lock released after the run", 10)


def test_a_run_waiting_for_approval_outlives_an_api_server_then_every_server_process_and_redis(
    st: Stack, started: list[UUID], deployments: list[str], reset_platform: StackInfo,
) -> None:
    """Three rows of the matrix on one waiting run (one contain, one lock, one approval at the end):
    an API server killed — the other serves; both API servers and the services killed and restarted;
    Redis killed and restarted. After each, the run still waits and holds its lock; the approval,
    given past the run's first lease renewal after the restarts, applies once."""
    writes = admin_writes(st.home, WRITE)
    run_id = _paused_contain(started)
    locked = time.monotonic()  # the lock was taken just before the pause: its first renewal is due 45 s on

    one = Marks("one API server killed during an approval wait")
    one.fault(f"kill -9 {st.prefect.apis[0].name}")
    kill_group(st.prefect.apis[0].pid_file)
    ui = httpx.get(st.prefect.api_url.removesuffix("/api") + "/", timeout=10)
    assert ui.status_code == 200 and "<html" in ui.text.lower(), "the UI is not served"
    assert httpx.get(f"{st.prefect.api_url}/health", timeout=10).status_code == 200
    one.mark("UI and API answered through the balancer")
    _still_waiting(run_id)

    every = Marks("every API server and the services restarted during an approval wait")
    every.fault("kill -9 the other API server and the services process")
    for part in [*st.prefect.apis, st.prefect.services]:
        assert part is not None
        if part.running():
            kill_group(part.pid_file)
    st.prefect.start()
    every.mark("API back through the balancer")
    _still_waiting(run_id)

    redis = Marks("Redis killed during an approval wait")
    assert st.prefect.redis is not None
    redis.fault("kill -9 Redis (the append-only file has all but the last second), start it again")
    kill_group(st.prefect.redis.pid_file)
    st.prefect.redis.start()
    redis.mark("Redis back")
    # The run renews its 60 s lease every 45 s: outlive its first renewal, due after the restarts (the
    # renewal a server with in-memory leases answers 410 Gone, crashing the run).
    while time.monotonic() - locked < 52:
        _still_waiting(run_id)
        time.sleep(2)
    redis.mark("still paused, lock held, past a lease renewal")
    _approve_applies_once(st, run_id, writes, redis)
