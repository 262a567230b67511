"""The runner: which runs are its pool's, claiming them once across replicas, supervising, polling.

A run is claimed by proposing `Pending`: the server's orchestration rules refuse it from
Pending/Running/Cancelling/Cancelled under a row lock, so of every replica and every duplicate
event exactly one proposal is accepted. A child that dies without a final state leaves its run
`Crashed`; a run the UI cancels has its child killed and ends `Cancelled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from remediation.runner import liveness
from remediation.runner.events import CANCELLING, CRASHED, SCHEDULED_EVENTS, follow
from remediation.runner.pool import WarmChild, WarmPool
from remediation.runner.zygote import ForkServer

__all__ = ["RunnerConfig", "WarmRunner"]

log = logging.getLogger("remediation.runner")


@dataclass
class RunnerConfig:
    pool: str
    warm: int = 2
    limit: int = 8
    poll_s: float = 10.0
    #: A run scheduled up to this far ahead is started now (clock skew between hosts).
    lead_s: float = 1.0
    preload: Sequence[str] = ()
    #: `module:function`s every child calls once its imports are done (e.g. to parse client models).
    warm_calls: Sequence[str] = ()
    #: Written on every change: {"idle", "warming", "running", "pid"} (stack status, tests, bench).
    status_file: str | None = None
    #: Fork warm children from a zygote (False: a fresh interpreter each, the fallback and the bench's baseline).
    fork: bool = True
    name: str = field(default_factory=lambda: f"warm-runner-{socket.gethostname()}-{os.getpid()}")


class WarmRunner:
    def __init__(self, config: RunnerConfig, client: Any) -> None:
        self.config = config
        self.client = client  # a prefect.client.orchestration.PrefectClient, opened by the caller
        self.pool_id: UUID | None = None
        self.entrypoints: dict[UUID, str] = {}
        self.running: dict[UUID, WarmChild] = {}
        self.claimed: set[UUID] = set()  # this process's claims: skip a duplicate event without an API call
        self.slots = asyncio.Semaphore(config.limit)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopping = asyncio.Event()
        self.forks = ForkServer()
        self.pool = WarmPool(config.warm, self._launch, self.stopping, self._background, self.write_status)

    def _launch(self) -> Awaitable[WarmChild]:
        return WarmChild.launch(sorted(set(self.entrypoints.values())), self.config.preload, self.config.warm_calls,
                                self.forks if self.config.fork else None)

    # --- the pool's deployments ---------------------------------------------------------------
    async def refresh_deployments(self) -> None:
        from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

        pool = await self.client.read_work_pool(self.config.pool)
        self.pool_id = pool.id
        deps = await self.client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self.config.pool])))
        self.entrypoints.update({d.id: d.entrypoint for d in deps if d.entrypoint})
        await self._retire_stale()

    async def _retire_stale(self) -> None:
        """Replace idle children that lack a deployment's entrypoint (warmed before it appeared) or
        hold older code than the checkout now has (a process worker reads the code at each run)."""
        current = frozenset(self.entrypoints.values())
        await self.pool.retire(lambda child: child.entrypoints >= current and not child.stale())

    async def entrypoint_of(self, deployment_id: UUID) -> str | None:
        if deployment_id not in self.entrypoints:
            dep = await self.client.read_deployment(deployment_id)
            if dep.entrypoint:
                self.entrypoints[deployment_id] = dep.entrypoint
        return self.entrypoints.get(deployment_id)

    # --- status ---------------------------------------------------------------------------------
    def write_status(self) -> None:
        if not self.config.status_file:
            return
        path = Path(self.config.status_file)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "idle": self.pool.idle.qsize(), "warming": self.pool.warming,
                                   "running": [str(i) for i in self.running],
                                   "pids": {str(i): c.proc.pid for i, c in self.running.items()}, "at": time.time()}))
        tmp.replace(path)

    # --- discovering and claiming runs ----------------------------------------------------------
    async def consider(self, flow_run_id: UUID) -> bool:
        """Claim and start a run if it is this pool's, due and still Scheduled. True if started here."""
        if flow_run_id in self.claimed or self.stopping.is_set():
            return False
        self.claimed.add(flow_run_id)
        started = False
        try:
            started = await self._consider(flow_run_id)
        finally:
            if not started:
                self.claimed.discard(flow_run_id)
        return started

    async def _consider(self, flow_run_id: UUID) -> bool:
        from prefect.client.schemas.objects import StateType
        from prefect.types._datetime import now

        run = await self._read_new_run(flow_run_id)
        if run is None or run.state is None or run.state.type != StateType.SCHEDULED or run.deployment_id is None:
            return False
        if run.work_pool_name != self.config.pool:
            return False
        due = run.next_scheduled_start_time or run.expected_start_time
        if due is not None and (due - now("UTC")).total_seconds() > self.config.lead_s:
            return False  # not yet: the poll picks it up when it is due
        entrypoint = await self.entrypoint_of(run.deployment_id)
        if entrypoint is None:
            log.error("run %s: deployment %s has no entrypoint; left Scheduled", flow_run_id, run.deployment_id)
            return False
        if self.slots.locked():
            return False  # at the limit: stays Scheduled for the next poll (or another replica)
        await self.slots.acquire()
        try:
            claimed_at = await self.claim(flow_run_id)
            if claimed_at is None:
                self.slots.release()
                return False
        except BaseException:
            self.slots.release()
            raise
        child = await self.pool.take()
        if self.pool.idle.empty():
            self.pool.refill()
        # else: the replacement is warmed when this run ends — a forked child costs ~0.4 s of CPU (a
        # spawned one seconds) that the run would otherwise compete with.
        self.running[flow_run_id] = child
        # Its first heartbeat now, not at the next beat: the crash automation's window opens on a
        # heartbeat, so a host lost in the first seconds of a run (up to a whole beat) was never noticed.
        self._background(self._first_beat(flow_run_id))
        await child.start(flow_run_id, entrypoint)
        log.info("run %s (%s): claimed, started in warm child %s", flow_run_id, run.name, child.proc.pid)
        self.write_status()
        self._background(self._supervise(flow_run_id, child, claimed_at))
        return True

    async def _read_new_run(self, flow_run_id: UUID, patience_s: float = 3.0) -> Any:
        """The run, or None. The server can emit a run's Scheduled event before the transaction that
        creates it commits (measured: the event often arrives before `create_flow_run` has answered),
        so a run not found yet is asked for again for a moment."""
        from prefect.exceptions import ObjectNotFound

        deadline = time.monotonic() + patience_s
        delay = 0.02
        while True:
            try:
                return await self.client.read_flow_run(flow_run_id)
            except ObjectNotFound:
                if time.monotonic() > deadline:
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)

    async def claim(self, flow_run_id: UUID) -> datetime | None:
        """Propose Pending; only an accepted proposal owns the run (the server arbitrates replicas).
        Returns when the server accepted it, None when it did not."""
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.states import Pending
        from prefect.types._datetime import now

        result = await self.client.set_flow_run_state(flow_run_id, Pending(), force=False)
        if result.status != SetStateStatus.ACCEPT:
            log.debug("run %s: Pending refused (%s), not ours", flow_run_id, result.status)
            return None
        return result.state.timestamp if result.state is not None else now("UTC")

    async def _rescheduled_since(self, flow_run_id: UUID, claimed_at: datetime) -> bool:
        from prefect.client.schemas.objects import StateType

        states = await self.client.read_flow_run_states(flow_run_id)
        return any(s.type == StateType.SCHEDULED and s.timestamp > claimed_at for s in states)

    async def _supervise(self, flow_run_id: UUID, child: WarmChild, claimed_at: datetime) -> None:
        from prefect.states import Crashed

        try:
            code = await child.wait()
            run = await self.client.read_flow_run(flow_run_id)
            # The child's attempt ended and someone retried the run (Retry in the UI: AwaitingRetry, a Scheduled
            # state) before this child was gone: that attempt — waiting, or running on another replica — is
            # not this child's to crash.
            if run.state is not None and not run.state.is_final() and await self._rescheduled_since(
                    flow_run_id, claimed_at):
                log.info("run %s: child exited %s; a later attempt owns the run (%s)", flow_run_id, code,
                         run.state.name)
            # Paused too: runbooks pause in-process (reschedule=False), so a child gone while its run is
            # paused is a crash — left Paused, it would wait for an answer nobody can ever load.
            elif run.state is not None and not run.state.is_final():
                if run.state.is_cancelling():
                    await self._cancelled(flow_run_id)
                else:
                    await self.client.set_flow_run_state(
                        flow_run_id, Crashed(message=f"warm runner child exited {code} before a final state"),
                        force=True)
                    log.error("run %s: child exited %s without a final state; marked Crashed", flow_run_id, code)
                    await liveness.close_task_runs(self.client, flow_run_id)
            else:
                log.info("run %s: child exited %s, run %s", flow_run_id, code, run.state.name if run.state else "?")
        except Exception as exc:
            log.error("run %s: supervising failed: %s", flow_run_id, exc)
        finally:
            # A Retry of this run later is a new attempt this replica may claim like any other.
            self.claimed.discard(flow_run_id)
            self.running.pop(flow_run_id, None)
            self.slots.release()
            self.pool.refill()
            self.write_status()

    async def _cancelled(self, flow_run_id: UUID) -> None:
        from prefect.states import Cancelled

        await self.client.set_flow_run_state(flow_run_id, Cancelled(message="cancelled; warm runner stopped the run"),
                                             force=True)

    async def on_event(self, event: Any) -> None:
        try:
            await self._on_event(event)
        except Exception as exc:  # the poll picks the run up; the stream must keep flowing
            log.error("event %s for %s: %s: %s", event.event, event.resource.id, type(exc).__name__, exc)

    async def _on_event(self, event: Any) -> None:
        resource_id = str(event.resource.id)
        if not resource_id.startswith("prefect.flow-run."):
            return
        flow_run_id = UUID(resource_id.removeprefix("prefect.flow-run."))
        if event.event in SCHEDULED_EVENTS:
            await self.consider(flow_run_id)
        elif event.event == CANCELLING and flow_run_id in self.running:
            # SIGKILL, not SIGTERM: on SIGTERM Prefect's engine marks the run Crashed itself, and the
            # UI's Cancel must end Cancelled. The flow is read-only; its partial bundle stays local
            # without a manifest and is never uploaded.
            log.info("run %s: cancelling; killing its child", flow_run_id)
            self.running[flow_run_id].kill_now()
        elif event.event == CRASHED:
            await liveness.close_task_runs(self.client, flow_run_id)

    async def listen(self) -> None:
        assert self.pool_id is not None
        await follow(self.pool_id, self.config.pool, self.stopping,
                     lambda event: self._background(self.on_event(event)))

    async def poll_once(self) -> int:
        from datetime import timedelta

        from prefect.types._datetime import now

        await self.client.send_worker_heartbeat(self.config.pool, self.config.name,
                                                heartbeat_interval_seconds=self.config.poll_s)
        await self.refresh_deployments()
        due = await self.client.get_scheduled_flow_runs_for_work_pool(
            self.config.pool, scheduled_before=now("UTC") + timedelta(seconds=self.config.lead_s))
        started = 0
        for item in due:
            started += await self.consider(item.flow_run.id)
        return started

    async def poll(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.poll_once()
            except Exception as exc:
                log.warning("poll of pool %s failed: %s", self.config.pool, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.config.poll_s)

    async def _first_beat(self, flow_run_id: UUID) -> None:
        try:
            await liveness.heartbeat(self.client, [flow_run_id], self.pool_id, self.config.name)
        except Exception as exc:  # the next regular beat covers it
            log.warning("run %s: first heartbeat failed: %s", flow_run_id, exc)

    async def heartbeats(self) -> None:
        """Heartbeat this replica and its runs (`liveness`): a run whose host dies is Crashed by the server."""
        while not self.stopping.is_set():
            try:
                runs = await liveness.unfinished_with_subflows(self.client, list(self.running))
                await liveness.heartbeat(self.client, runs, self.pool_id, self.config.name)
            except Exception as exc:  # the server restarting: the automation's window covers a gap
                log.warning("heartbeat of %d run(s) failed: %s", len(self.running), exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), liveness.HEARTBEAT_S)

    # --- lifecycle -------------------------------------------------------------------------------
    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve(self) -> None:
        await self.refresh_deployments()
        await liveness.ensure_automation(self.client)
        self.pool.refill()
        log.info("warm runner %s: pool %s, %d warm, limit %d, poll %.0f s, deployments: %s", self.config.name,
                 self.config.pool, self.config.warm, self.config.limit, self.config.poll_s,
                 ", ".join(sorted(set(self.entrypoints.values()))) or "(none yet)")
        listener = asyncio.ensure_future(self.listen())
        poller = asyncio.ensure_future(self.poll())
        beater = asyncio.ensure_future(self.heartbeats())
        try:
            await self.stopping.wait()
        finally:
            listener.cancel()
            poller.cancel()
            beater.cancel()
            await self.shutdown()

    async def shutdown(self, grace_s: float = 10.0) -> None:
        self.stopping.set()
        await self.pool.close()
        for child in list(self.running.values()):
            child.terminate()
        deadline = time.monotonic() + grace_s
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for child in list(self.running.values()):
            await child.kill()
        await self.forks.close()
        for task in list(self._tasks):
            task.cancel()
