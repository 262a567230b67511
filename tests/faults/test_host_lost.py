"""Fault matrix, runners: the replica executing a run dies with its host mid-step. Prefect's own
automation marks the run Crashed when its heartbeats stop, no task run is left Running, the lock
frees, and a Retry on the surviving replica finishes without writing the lever twice — while late
events keep arriving, as they do from busy clients."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import AwaitingRetry

from remediation.flowkit.locks import LEASE_S
from remediation.runner.liveness import HEARTBEAT_S, SILENCE_S
from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from sandbox.stack.runners import WarmRunnerProcess
from tests.faults.timing import (
    CONTAIN,
    LOCK,
    WRITE,
    Marks,
    active_slots,
    admin_writes,
    explain_run,
    kill_group,
    run_state,
    wait_for,
)
from tests.integration.flow_runs import LEAD, ONCALL, answer, answer_until_done, incident, result, start
from tests.integration.test_trusted_approvals import _deposit_halt

pytestmark = pytest.mark.integration


def _executing(st: Stack, run_id: object) -> WarmRunnerProcess:
    holders: list[WarmRunnerProcess] = []
    wait_for(lambda: bool(holders.extend(r for r in st.runners if r.pid_of(run_id)) or holders),
             "a replica reports running the run", 10)
    return holders[0]


@contextmanager
def late_events(occurred: datetime, every_s: float = 8.0) -> Iterator[list[BaseException | None]]:
    """Send an event that happened at `occurred` every few seconds, as a client that was slow to flush
    would (a warm child's block-loaded event, sent once its events worker connected). Prefect's events
    clock does not move forward for it but counts it as the last thing received: with nothing else
    arriving, each one set the clock back by the time since the newest event, and the silence
    automation waited on it. Yields one entry per event sent (None) or the error that stopped it."""
    from prefect.events import Event

    stop, sent = threading.Event(), []

    def send() -> None:
        try:
            with get_client(sync_client=True) as client:
                while not stop.wait(every_s):
                    event = Event(event="remediation.test.late-event", occurred=occurred,
                                  resource={"prefect.resource.id": "remediation.test.slow-client"})
                    client._client.post("/events", json=[event.model_dump(mode="json")]).raise_for_status()
                    sent.append(None)
        except BaseException as exc:  # reported by the test, not lost with the thread
            sent.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield sent
    finally:
        stop.set()
        sender.join(timeout=10)


def test_the_replica_running_a_step_killed_crashes_the_run_and_a_retry_elsewhere_writes_once(
    st: Stack, started: list[UUID], deployments: list[str], reset_platform: StackInfo,
) -> None:
    marks = Marks("the replica executing contain killed mid-step")
    writes = admin_writes(st.home, WRITE)
    st.admin_slow_write(True)  # the admin API commits the lever, then holds its answer 30 s
    run_id = start(CONTAIN, incident_id=incident(), lever="deposit-halt", initiated_by=ONCALL, dry_run=False)
    started.append(run_id)
    answer(run_id, approver=LEAD, reason="fault drill")
    wait_for(lambda: _deposit_halt(reset_platform) == "1", "the lever moved", 60, every_s=0.05)
    victim = _executing(st, run_id)
    survivor = next(r for r in st.runners if r is not victim)
    marks.fault(f"kill -9 {victim.name} and its children, mid-step")
    killed_at = datetime.now(UTC)
    kill_group(victim.pid_file)
    st.admin_slow_write(False)

    # Prefect evaluates a proactive trigger lazily (at the end of the window it last looked at), so a
    # silence is acted on between one and two windows after it began; plus the heartbeat interval (the
    # last beat came up to one interval before the kill), the services' 5 s granularity and slack.
    bound = 2 * SILENCE_S + HEARTBEAT_S + 20
    with late_events(datetime.now(UTC) - timedelta(seconds=2)) as late:
        wait_for(lambda: (run_state(run_id).state or AwaitingRetry()).name == "Crashed", "run marked Crashed", bound,
                 explain=lambda: explain_run(run_id, killed_at - timedelta(seconds=30), st))
    # The late events really went out while the crash was awaited: three or more, none refused.
    assert len(late) >= 3 and not any(late), late
    marks.mark("run marked Crashed (heartbeat silence automation)")
    with get_client(sync_client=True) as client:
        def open_task_runs() -> list[str]:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            return [f"{t.name}: {t.state.name}" for t in runs if t.state and t.state.type.value in
                    ("RUNNING", "PENDING")]
        wait_for(lambda: not open_task_runs(), "task runs closed", 15)
    marks.mark("no task run left Running")
    # Nothing released it: the lease (60 s, last renewed up to 45 s before the kill) lapsed and the
    # server revoked it.
    wait_for(lambda: active_slots(LOCK) == 0, "lock freed by the lapsed lease", 120, every_s=1)
    assert marks.mark("lock freed") <= LEASE_S + 30

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, AwaitingRetry(message="Retry from the UI"))
    wait_for(lambda: survivor.pid_of(run_id) is not None, "the surviving replica picked the retry up", 30, 0.1)
    marks.mark("retry running on the surviving replica")
    run = answer_until_done(run_id, approvers=(LEAD,))
    marks.mark("retry finished")
    assert run.state is not None and run.state.is_completed(), run.state
    assert result(run)["outcome"] in ("already-in-place", "already-applied"), result(run)
    assert _deposit_halt(reset_platform) == "1"
    # The killed run's own write may never reach the access log (its client vanished mid-answer).
    assert admin_writes(st.home, WRITE) - writes <= 1, "the lever was written twice"
