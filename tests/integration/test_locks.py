"""The per-target lock: strict, exclusive, and what happens when its holder is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from prefect import flow

from remediation.flowkit.locks import target_lock
from remediation.target.inventory import load_target
from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration

HOLDER = textwrap.dedent("""
    import sys, time
    from prefect import flow
    from prefect.runtime import flow_run
    from remediation.flowkit.locks import target_lock
    from remediation.target.inventory import load_target

    @flow
    def hold(resource: str) -> None:
        with target_lock(load_target("sandbox"), resource, wait_s=10):
            print("held", flow_run.get_id(), flush=True)
            time.sleep(600)

    hold(sys.argv[1])
""")


@flow
def try_lock(resource: str, wait_s: float) -> float:
    started = time.monotonic()
    with target_lock(load_target("sandbox"), resource, wait_s=wait_s):
        return time.monotonic() - started


def _holder(resource: str) -> tuple[subprocess.Popen[str], str]:
    """A process holding the lock from a flow run; (the process, its flow run id)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, resource], stdout=subprocess.PIPE, text=True,
                              env=os.environ.copy(), start_new_session=True)
    assert holder.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        word, _, run_id = holder.stdout.readline().strip().partition(" ")
        if word == "held":
            return holder, run_id
    raise TimeoutError("the holder never took the lock")


def test_a_holder_whose_run_ended_crashed_is_not_waited_for(stack: StackInfo) -> None:
    """The worker marks a killed run Crashed: its lease is released by the next run at once."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    resource = f"locktest-{uuid.uuid4().hex[:8]}"
    holder, run_id = _holder(resource)
    try:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(uuid.UUID(run_id), Crashed(message="killed"), force=True)
        waited = try_lock(resource, 30)
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
    assert waited < 10, f"waited {waited:.1f} s for a holder whose run had ended"


def test_a_missing_limit_is_created_and_strict(stack: StackInfo) -> None:
    from prefect.client.orchestration import get_client

    resource = f"fresh-{uuid.uuid4().hex[:8]}"
    assert try_lock(resource, 5) < 5
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(f"rp-sandbox-{resource}")
    assert limit.limit == 1 and limit.active_slots == 0
