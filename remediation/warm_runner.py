"""A warm runner: executes a work pool's deployment runs in pre-started interpreters, within a second.

A process worker polls its pool and starts a fresh interpreter per run: `import prefect`
plus the flow's imports cost seconds before the flow function runs. For `capture-evidence`
(the first minutes of an incident) this process instead:

* keeps `warm` child interpreters ready: each has imported Prefect's engine, the pool's
  deployment entrypoints (so the flows and their tasks and clients) and the `--preload`
  modules, then waits for one flow-run id on its stdin;
* learns of new runs from Prefect's event stream (`prefect.flow-run.Scheduled` events
  related to its pool, over the server's `/api/events/out` websocket), with a slow poll of
  the pool's scheduled runs as fallback (missed events, runs scheduled for later, restarts);
* claims a run by proposing `Pending` to the server. The server's orchestration rules
  refuse `Pending` from Pending/Running/Cancelling/Cancelled under a row lock, so of every
  runner replica and every duplicate event exactly one proposal is accepted: a run is
  executed once, by whoever got the `Pending`;
* hands the run to a warm child, which runs it through Prefect's own engine
  (`prefect.flow_engine.run_flow`, as `python -m prefect.engine <id>` does for a worker):
  the run proposes Running, logs, results, artifacts and final state are a normal
  deployment run's. The child exits after one run and a new one is warmed in its place;
* marks a run `Crashed` if its child dies without a final state, and cancels a run the UI
  cancels (a `prefect.flow-run.Cancelling` event: the child is killed, the run `Cancelled`);
* heartbeats as a worker of the pool, so the UI shows the pool ready.

    python -m remediation.warm_runner serve --pool remediation-fast [--warm 2] [--limit 8]
        [--poll-s 10] [--preload boto3 paramiko ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

__all__ = ["RunnerConfig", "WarmChild", "WarmRunner", "main"]

log = logging.getLogger("remediation.warm_runner")

#: Events that concern the runner; both carry the run's pool as a related resource.
SCHEDULED, CANCELLING = "prefect.flow-run.Scheduled", "prefect.flow-run.Cancelling"


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
    name: str = field(default_factory=lambda: f"warm-runner-{socket.gethostname()}-{os.getpid()}")


class WarmChild:
    """One pre-started interpreter, ready for exactly one flow run."""

    def __init__(self, proc: asyncio.subprocess.Process, entrypoints: frozenset[str] = frozenset()) -> None:
        self.proc = proc
        self.entrypoints = entrypoints  # preloaded; any other entrypoint is loaded when its run comes
        self.launched_at = time.time()
        #: The project's source files this child imported (it reports them when ready).
        self.sources: list[str] = []
        self.flow_run_id: UUID | None = None

    @classmethod
    async def launch(cls, entrypoints: Sequence[str], preload: Sequence[str],
                     warm_calls: Sequence[str] = ()) -> WarmChild:
        argv = [sys.executable, "-m", "remediation.warm_runner", "child"]
        for ep in entrypoints:
            argv += ["--entrypoint", ep]
        for mod in preload:
            argv += ["--preload", mod]
        for call in warm_calls:
            argv += ["--warm-call", call]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
        )
        return cls(proc, frozenset(entrypoints))

    async def ready(self) -> None:
        """Wait for the child's `ready` line (its imports done)."""
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        word, _, report = line.strip().partition(b" ")
        if word != b"ready":
            await self.kill()
            raise RuntimeError(f"warm child {self.proc.pid} did not get ready (exit {self.proc.returncode})")
        self.sources = list(json.loads(report or b"[]"))

    def stale(self) -> bool:
        """A source file it imported changed after it was launched (a process worker would run the new code)."""
        return code_stamp(self.sources) > self.launched_at

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def start(self, flow_run_id: UUID, entrypoint: str) -> None:
        assert self.proc.stdin is not None
        self.flow_run_id = flow_run_id
        self.proc.stdin.write(f"{flow_run_id} {entrypoint}\n".encode())
        await self.proc.stdin.drain()
        self.proc.stdin.close()

    async def wait(self) -> int:
        return await self.proc.wait()

    def kill_now(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


class WarmRunner:
    def __init__(self, config: RunnerConfig, client: Any) -> None:
        self.config = config
        self.client = client  # a prefect.client.orchestration.PrefectClient, opened by the caller
        self.pool_id: UUID | None = None
        self.entrypoints: dict[UUID, str] = {}
        self.idle: asyncio.Queue[WarmChild] = asyncio.Queue()
        self.running: dict[UUID, WarmChild] = {}
        self.claimed: set[UUID] = set()  # this process's claims: skip a duplicate event without an API call
        self.slots = asyncio.Semaphore(config.limit)
        self._warming = 0
        self._starting: set[WarmChild] = set()  # launched, not yet ready: shutdown kills them too
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopping = asyncio.Event()

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
        keep = []
        while not self.idle.empty():
            child = self.idle.get_nowait()
            if child.entrypoints >= current and not child.stale() and child.alive:
                keep.append(child)
            else:
                log.info("warm child %s retired (new deployment or changed code); warming another", child.proc.pid)
                await child.kill()
        for child in keep:
            self.idle.put_nowait(child)
        self.refill()

    async def entrypoint_of(self, deployment_id: UUID) -> str | None:
        if deployment_id not in self.entrypoints:
            dep = await self.client.read_deployment(deployment_id)
            if dep.entrypoint:
                self.entrypoints[deployment_id] = dep.entrypoint
        return self.entrypoints.get(deployment_id)

    # --- warm pool ------------------------------------------------------------------------------
    def _spawn_later(self) -> None:
        self._warming += 1
        self._background(self._warm_one())

    async def _warm_one(self) -> None:
        child: WarmChild | None = None
        try:
            child = await WarmChild.launch(sorted(set(self.entrypoints.values())), self.config.preload,
                                           self.config.warm_calls)
            self._starting.add(child)
            await child.ready()
        except asyncio.CancelledError:
            if child is not None:
                await child.kill()
            raise
        except Exception as exc:
            if self.stopping.is_set():
                return
            log.error("could not warm a child interpreter: %s", exc)
            await asyncio.sleep(1.0)
            return
        finally:
            self._warming -= 1
            if child is not None:
                self._starting.discard(child)
        if self.stopping.is_set():
            await child.kill()
            return
        self.idle.put_nowait(child)
        self.write_status()

    def write_status(self) -> None:
        if not self.config.status_file:
            return
        import json
        from pathlib import Path

        path = Path(self.config.status_file)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "idle": self.idle.qsize(), "warming": self._warming,
                                   "running": [str(i) for i in self.running], "at": time.time()}))
        tmp.replace(path)

    def refill(self) -> None:
        """Top the idle pool up to `warm`, counting children already warming."""
        while not self.stopping.is_set() and self.idle.qsize() + self._warming < self.config.warm:
            self._spawn_later()

    async def _take_child(self) -> WarmChild:
        while True:
            if self.idle.empty() and self._warming == 0:
                self._spawn_later()
            child = await self.idle.get()
            if child.alive:
                return child
            await child.kill()

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
            if not await self.claim(flow_run_id):
                self.slots.release()
                return False
        except BaseException:
            self.slots.release()
            raise
        child = await self._take_child()
        if self.idle.empty():
            self.refill()
        # else: the replacement is warmed when this run ends — importing a fresh interpreter costs
        # seconds of CPU that the run would otherwise compete with (measured ~0.5 s slower runs).
        self.running[flow_run_id] = child
        await child.start(flow_run_id, entrypoint)
        log.info("run %s (%s): claimed, started in warm child %s", flow_run_id, run.name, child.proc.pid)
        self.write_status()
        self._background(self._supervise(flow_run_id, child))
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

    async def claim(self, flow_run_id: UUID) -> bool:
        """Propose Pending; only an accepted proposal owns the run (the server arbitrates replicas)."""
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.states import Pending

        result = await self.client.set_flow_run_state(flow_run_id, Pending(), force=False)
        if result.status != SetStateStatus.ACCEPT:
            log.debug("run %s: Pending refused (%s), not ours", flow_run_id, result.status)
            return False
        return True

    async def _supervise(self, flow_run_id: UUID, child: WarmChild) -> None:
        from prefect.states import Crashed

        try:
            code = await child.wait()
            run = await self.client.read_flow_run(flow_run_id)
            if run.state is not None and not run.state.is_final() and not run.state.is_paused():
                if run.state.is_cancelling():
                    await self._cancelled(flow_run_id)
                else:
                    await self.client.set_flow_run_state(
                        flow_run_id, Crashed(message=f"warm runner child exited {code} before a final state"),
                        force=True)
                    log.error("run %s: child exited %s without a final state; marked Crashed", flow_run_id, code)
            else:
                log.info("run %s: child exited %s, run %s", flow_run_id, code, run.state.name if run.state else "?")
        except Exception as exc:
            log.error("run %s: supervising failed: %s", flow_run_id, exc)
        finally:
            self.running.pop(flow_run_id, None)
            self.slots.release()
            self.refill()
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
        if event.event == SCHEDULED:
            await self.consider(flow_run_id)
        elif event.event == CANCELLING and flow_run_id in self.running:
            # SIGKILL, not SIGTERM: on SIGTERM Prefect's engine marks the run Crashed itself, and the
            # UI's Cancel must end Cancelled. The flow is read-only; its partial bundle stays local
            # without a manifest and is never uploaded.
            log.info("run %s: cancelling; killing its child", flow_run_id)
            self.running[flow_run_id].kill_now()

    async def listen(self) -> None:
        """Follow the server's event stream; reconnect with backoff forever (the poll covers gaps)."""
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
        from prefect.events.schemas.events import ResourceSpecification

        assert self.pool_id is not None
        flt = EventFilter(
            event=EventNameFilter(name=[SCHEDULED, CANCELLING]),
            related=EventRelatedFilter(labels=ResourceSpecification(
                {"prefect.resource.id": f"prefect.work-pool.{self.pool_id}"})),
        )
        delay = 1.0
        while not self.stopping.is_set():
            try:
                async with get_events_subscriber(filter=flt, reconnection_attempts=3) as events:
                    log.info("listening to the event stream for pool %s", self.config.pool)
                    delay = 1.0
                    async for event in events:
                        self._background(self.on_event(event))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event stream lost (%s: %s); polling meanwhile, reconnecting in %.0f s",
                            type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

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

    # --- lifecycle -------------------------------------------------------------------------------
    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve(self) -> None:
        await self.refresh_deployments()
        self.refill()
        log.info("warm runner %s: pool %s, %d warm, limit %d, poll %.0f s, deployments: %s", self.config.name,
                 self.config.pool, self.config.warm, self.config.limit, self.config.poll_s,
                 ", ".join(sorted(set(self.entrypoints.values()))) or "(none yet)")
        listener = asyncio.ensure_future(self.listen())
        poller = asyncio.ensure_future(self.poll())
        try:
            await self.stopping.wait()
        finally:
            listener.cancel()
            poller.cancel()
            await self.shutdown()

    async def shutdown(self, grace_s: float = 10.0) -> None:
        self.stopping.set()
        while not self.idle.empty():
            await self.idle.get_nowait().kill()
        for starting in list(self._starting):
            await starting.kill()
        for child in list(self.running.values()):
            child.terminate()
        deadline = time.monotonic() + grace_s
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for child in list(self.running.values()):
            await child.kill()
        for task in list(self._tasks):
            task.cancel()


def code_stamp(paths: Sequence[str]) -> float:
    """The newest mtime among `paths` (a deleted file counts as changed now)."""
    newest = 0.0
    for path in paths:
        try:
            newest = max(newest, os.stat(path).st_mtime)
        except OSError:
            newest = time.time()
    return newest


def project_sources(root: str) -> list[str]:
    """Source files of modules imported so far that live under `root` (the checkout), not the venv."""
    root = os.path.realpath(root) + os.sep
    found = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py"):
            real = os.path.realpath(path)
            if real.startswith(root) and f"{os.sep}.venv{os.sep}" not in real[len(root) - 1:]:
                found.append(real)
    return sorted(set(found))


# --- the child interpreter ------------------------------------------------------------------------
def child_main(entrypoints: Sequence[str], preload: Sequence[str], warm_calls: Sequence[str] = ()) -> int:
    """Import everything a run needs, say `ready`, run the one flow run named on stdin, exit."""
    import importlib

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the flow's own prints go to the runner's log, never into the protocol
    from prefect.engine import handle_engine_signals
    from prefect.flow_engine import flow_run_logger, load_flow_run, run_flow
    from prefect.flows import load_flow_from_entrypoint

    for mod in preload:
        importlib.import_module(mod)
    for call in warm_calls:
        module, _, func = call.partition(":")
        try:
            getattr(importlib.import_module(module), func)()
        except Exception as exc:  # warming is an optimisation; the run itself reports real trouble
            print(f"warm child: {call} failed: {exc}", file=sys.stderr)
    flows: dict[str, Any] = {}
    for ep in entrypoints:
        try:
            flows[ep] = load_flow_from_entrypoint(ep, use_placeholder_flow=False)
        except Exception as exc:  # a broken entrypoint must not stop the others; the run reports it
            print(f"warm child: could not preload {ep}: {exc}", file=sys.stderr)
    try:
        proto.write(f"ready {json.dumps(project_sources(os.getcwd()))}\n")
        proto.flush()
    except BrokenPipeError:  # the runner went away while this child warmed
        return 0
    line = sys.stdin.readline().split()
    if not line:
        return 0
    flow_run_id, entrypoint = UUID(line[0]), line[1]
    os.environ["PREFECT__FLOW_RUN_ID"] = str(flow_run_id)
    with handle_engine_signals(flow_run_id):
        flow_run = load_flow_run(flow_run_id)
        run_logger = flow_run_logger(flow_run=flow_run)
        try:
            flow: Any = flows.get(entrypoint) or load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
        except Exception:
            run_logger.error("could not load the flow from %s", entrypoint, exc_info=True)
            raise
        run_flow(flow, flow_run=flow_run, error_logger=run_logger)  # type: ignore[arg-type]
    return 0


# --- command line ----------------------------------------------------------------------------------
async def _serve(config: RunnerConfig) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        runner = WarmRunner(config, client)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stopping.set)
        await runner.serve()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remediation.warm_runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve a work pool from warm interpreters")
    serve.add_argument("--pool", required=True)
    serve.add_argument("--warm", type=int, default=2, help="idle interpreters kept ready")
    serve.add_argument("--limit", type=int, default=8, help="runs executing at once")
    serve.add_argument("--poll-s", type=float, default=10.0, help="fallback poll of the pool")
    serve.add_argument("--preload", nargs="*", default=[], help="modules every child imports before a run")
    serve.add_argument("--warm-call", nargs="*", default=[], help="module:function every child calls before a run")
    serve.add_argument("--name", default=None)
    serve.add_argument("--status-file", default=None, help="JSON with idle/warming/running, kept current")
    child = sub.add_parser("child", help="(internal) one warm interpreter")
    child.add_argument("--entrypoint", action="append", default=[])
    child.add_argument("--preload", action="append", default=[])
    child.add_argument("--warm-call", action="append", default=[])
    args = parser.parse_args(argv)
    if args.cmd == "child":
        return child_main(args.entrypoint, args.preload, args.warm_call)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = RunnerConfig(pool=args.pool, warm=args.warm, limit=args.limit, poll_s=args.poll_s,
                          preload=tuple(args.preload), warm_calls=tuple(args.warm_call),
                          status_file=args.status_file)
    if args.name:
        config.name = args.name
    asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
