"""What every fault case shares: a clock that prints its marks, the target lock's slots, waits on a run."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun

from sandbox.stack.core import Stack
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


def wait_for(check: Callable[[], bool], what: str, timeout_s: float, every_s: float = 0.25,
             explain: Callable[[], str] | None = None) -> None:
    """Poll `check` until true; past the deadline fail, with `explain()`'s account when given (a drill
    that fails in CI leaves no stack behind to look at)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s" + (f"\n{explain()}" if explain else ""))
        time.sleep(every_s)


def explain_run(run_id: UUID, since: datetime, st: Stack) -> str:
    """What the stack recorded about a run since `since`: its states; the events about it, the
    automations' actions and the runners' own beats (occurred → received); each events consumer's
    backlog in Redis; the automations; the services' log lines on the run or an automation. Best
    effort: a part that cannot be read says why."""
    lines: list[str] = []
    try:
        with get_client(sync_client=True) as client:
            for state in client.read_flow_run_states(run_id):
                lines.append(f"state {state.timestamp:%H:%M:%S.%f} {state.name}: {state.message or ''}")
            for prefix in (f"prefect.flow-run.{run_id}", "prefect.automation.", "remediation.runner."):
                found = client._client.post("/events/filter", json={"limit": 50, "filter": {
                    "occurred": {"since": since.isoformat()}, "resource": {"id_prefix": [prefix]},
                    "order": "DESC"}}).raise_for_status().json()
                lines += [f"event {e['occurred'][11:23]} received {e['received'][11:23]} {e['event']} "
                          f"{e['resource']['prefect.resource.id']}" for e in reversed(found.get("events", [])[:20])]
            lines += [f"automation {a.id} {a.name!r} enabled={a.enabled}" for a in client.read_automations()]
    except Exception as exc:  # the account is a courtesy to whoever reads the failure
        lines.append(f"(server not readable: {type(exc).__name__}: {exc})")
    try:
        assert st.prefect.redis is not None
        broker = st.prefect.redis.client()
        for stream in ("events", "actions"):
            lines += [f"redis {stream}/{g['name']}: pending {g['pending']}, lag {g['lag']}"
                      for g in broker.xinfo_groups(stream)]
        # Prefect evaluates proactive triggers in a docket perpetual task (db 1): it reschedules itself
        # when it finishes, so one stuck evaluation stops them all.
        docket = st.prefect.redis.client(db=1)
        fields = ("state", "when", "generation")
        task = dict(zip(fields, docket.hmget("prefect:runs:evaluate_proactive_triggers_periodic", fields),
                        strict=True))
        lines.append(f"docket evaluate_proactive_triggers_periodic at {time.time():.1f}: {task}")
    except Exception as exc:
        lines.append(f"(redis not readable: {type(exc).__name__}: {exc})")
    log = st.home / "logs" / "prefect-services.log"
    try:
        text = log.read_text(errors="replace").splitlines()
        lines += ["prefect-services.log, on the run, automations or errors:",
                  *[x for x in text if any(k in x.lower() for k in (str(run_id), "automation", "error"))][-40:]]
    except OSError as exc:
        lines.append(f"({log}: {exc})")
    return "\n".join(lines)


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
