"""What every fault case shares: a clock that prints its marks, the target lock's slots, waits on a run."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun

from sandbox.stack.processes import read_pid

#: The drills' subject: a deposit-halt contain (one approval), its target lock and its one admin API write.
CONTAIN = "contain/contain"
LOCK = "rp-sandbox-global-var-deposit-maintenance-status"
WRITE = "/api/v1/global-vars/DEPOSIT_MAINTENANCE_STATUS"


class Marks:
    """`mark(what)` prints how long after the fault each thing happened (pytest -s, and the CI log)."""

    def __init__(self, case: str) -> None:
        self.case, self.t0 = case, time.monotonic()
        self.seen: dict[str, float] = {}

    def fault(self, what: str) -> None:
        self.t0 = time.monotonic()
        print(f"\n[fault] {self.case}: {what}", flush=True)

    def mark(self, what: str) -> float:
        took = time.monotonic() - self.t0
        self.seen[what] = took
        print(f"[fault] {self.case}: {what} after {took:.1f} s", flush=True)
        return took


def kill_group(pid_file: Path) -> None:
    """kill -9 a process and its children (every stack process leads its own process group)."""
    pid = read_pid(pid_file)
    assert pid is not None, f"nothing recorded in {pid_file}"
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} outlived SIGKILL"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def active_slots(limit_name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(limit_name).active_slots


def run_state(run_id: UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def wait_for(check: Callable[[], bool], what: str, timeout_s: float, every_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(every_s)


def admin_writes(home: Path, path: str) -> int:
    """How many writes the sandbox admin API answered on `path` (its access log)."""
    log = home / "logs" / "admin.log"
    return sum(1 for line in log.read_text(errors="replace").splitlines() if f'"PUT {path} ' in line)


def cancel_unfinished(run_ids: list[UUID]) -> None:
    """After a failed case: a run left paused would hold its lock against every later test."""
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            state = client.read_flow_run(run_id).state
            if state is not None and not state.is_final():
                client.set_flow_run_state(run_id, Cancelled(message="fault drill cleanup"), force=True)
