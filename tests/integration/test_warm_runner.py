"""The warm runner: an alert's capture run is Running within seconds; every run executes exactly once.

Exactly-once is tested with two in-process runners (two replicas) on a private pool, each
handed the same run twice, concurrently: the server accepts one `Pending`, one child runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from remediation.flowkit.resume import alert_capture_run
from remediation.runner import RunnerConfig, WarmRunner
from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
POOL = "rp-warm-runner-tests"
#: Measured on the shared 2-core stack: 0.3-1.0 s from the 202 to Running; generous for CI.
RUNNING_WITHIN_S = 3.0


def _stack():  # type: ignore[no-untyped-def]
    from sandbox.stack.core import Stack

    return Stack()


def test_alert_capture_run_is_running_within_seconds(deployments: list[str]) -> None:
    """POST an alert to the stack's receiver; its capture run (a normal deployment run) runs at once."""
    st = _stack()
    st.warm_runner.wait_warm()
    now = datetime.now().astimezone().isoformat()
    body = {"group_key": f"warm-{uuid.uuid4().hex}", "starts_at": now, "status": "firing",
            "labels": {"alertname": "WalletDepositErrors", "env": "sandbox"}, "summary": "warm runner test"}
    t0 = time.time()
    resp = httpx.post(f"http://127.0.0.1:{st.settings.alert_receiver_port}/alerts/generic", json=body,
                      headers={"Authorization": f"Bearer {st.secrets['generic_alert_token']}"}, timeout=30)
    assert resp.status_code == 202, resp.text
    run_id = alert_capture_run(resp.json())
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 60
        while True:
            run = client.read_flow_run(run_id)
            if run.start_time is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert run.start_time is not None, f"run never started: {run.state}"
        started_after = run.start_time.timestamp() - t0
        print(f"alert POST -> Running: {started_after:.2f} s")
        assert started_after <= RUNNING_WITHIN_S
        assert run.work_pool_name == "remediation-fast" and "runbook:capture-evidence" in run.tags
        deadline = time.monotonic() + 120
        while not (run.state and run.state.is_final()) and time.monotonic() < deadline:
            time.sleep(0.25)
            run = client.read_flow_run(run_id)
        assert run.state is not None and run.state.is_completed(), run.state
    # Its replica asks the server which of its runs to heartbeat: a finished one is not (the filter
    # the beat uses, against the real API).
    assert asyncio.run(_to_heartbeat([run_id])) == []


async def _to_heartbeat(run_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    from remediation.runner import liveness

    async with get_client() as client:
        return await liveness.unfinished_with_subflows(client, run_ids)


@contextlib.asynccontextmanager
async def _runners(n: int) -> AsyncIterator[list[WarmRunner]]:
    async with contextlib.AsyncExitStack() as stack:
        runners = []
        for i in range(n):
            client: PrefectClient = await stack.enter_async_context(get_client())
            runner = WarmRunner(RunnerConfig(pool=POOL, warm=1, limit=4, name=f"test-replica-{i}"), client)
            await runner.refresh_deployments()
            runners.append(runner)
        try:
            yield runners
        finally:
            for runner in runners:
                await runner.shutdown(grace_s=20)


async def _probe_deployment() -> uuid.UUID:
    from tests.fixtures.warm_probe_flow import warm_probe

    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(name=POOL, type="process",
                                                         description="warm runner tests; served in-process by tests"))
        flow_id = await client.create_flow_from_name(warm_probe.name)
        return await client.create_deployment(
            flow_id=flow_id, name="warm-runner-probe", work_pool_name=POOL,
            entrypoint="tests/fixtures/warm_probe_flow.py:warm_probe",
            parameter_openapi_schema=warm_probe.parameters.model_dump_for_openapi(),
        )


def test_a_run_is_executed_once_when_two_replicas_get_the_same_event_twice(stack: StackInfo, tmp_path: Path) -> None:
    async def scenario() -> None:
        deployment_id = await _probe_deployment()
        marker = tmp_path / "executions.txt"
        async with _runners(2) as (a, b):
            for r in (a, b):  # both warm: the race is between claims, not between cold starts
                while r.pool.idle.qsize() < 1:
                    await asyncio.sleep(0.1)
            async with get_client() as client:
                run = await client.create_flow_run_from_deployment(
                    deployment_id, parameters={"marker": str(marker), "hold_s": 0.5})
            started = await asyncio.gather(a.consider(run.id), a.consider(run.id), b.consider(run.id),
                                           b.consider(run.id))
            assert sum(started) == 1, started
            async with get_client() as client:
                deadline = time.monotonic() + 90
                while True:
                    state = (await client.read_flow_run(run.id)).state
                    if (state and state.is_final()) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
            assert state is not None and state.is_completed(), state
            # A late duplicate (an event replayed after a reconnect) finds it final and does nothing.
            assert not await a.consider(run.id) and not await b.consider(run.id)
        assert len(marker.read_text().splitlines()) == 1

    asyncio.run(scenario())


def test_stopping_the_runner_process_leaves_none_of_its_interpreters(stack: StackInfo, tmp_path: Path) -> None:
    """What `stack down` relies on: the runner and every warm child share one process group, all gone."""
    import os

    from sandbox.stack.processes import read_pid
    from sandbox.stack.runners import WarmRunnerProcess, _group_alive

    asyncio.run(_probe_deployment())
    runner = WarmRunnerProcess(tmp_path, stack.prefect_api_url, ROOT, warm=1, pool=POOL, name="test-runner")
    runner.start(stack.env())
    try:
        runner.wait_warm(timeout_s=120)
        pgid = read_pid(runner.pid_file)
        assert pgid is not None
        members = [p for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == pgid]
        assert len(members) >= 3, members  # the runner, its zygote and the warm child forked from it
        assert any(b"remediation.runner\x00zygote" in Path(f"/proc/{p}/cmdline").read_bytes() for p in members)
    finally:
        assert runner.stop()
    assert not runner.running() and not _group_alive(pgid)


def _pgid(pid: int) -> int | None:
    import os

    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_cancelling_a_run_from_the_ui_stops_its_child_and_ends_cancelled(stack: StackInfo, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from prefect.states import Cancelling

    from remediation.runner.events import CANCELLING

    async def scenario() -> None:
        deployment_id = await _probe_deployment()
        async with _runners(1) as (runner,), get_client() as client:
            run = await client.create_flow_run_from_deployment(
                deployment_id, parameters={"marker": str(tmp_path / "m.txt"), "hold_s": 60})
            assert await runner.consider(run.id)
            deadline = time.monotonic() + 60
            while (await client.read_flow_run(run.id)).start_time is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await client.set_flow_run_state(run.id, Cancelling(), force=True)
            # The UI's cancel arrives as this event on the stream (fed directly here).
            event = SimpleNamespace(event=CANCELLING, resource=SimpleNamespace(id=f"prefect.flow-run.{run.id}"))
            await runner.on_event(event)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = (await client.read_flow_run(run.id)).state
                if state is not None and state.is_final():
                    break
                await asyncio.sleep(0.2)
            assert state is not None and state.is_cancelled(), state
            assert run.id not in runner.running

    asyncio.run(scenario())
