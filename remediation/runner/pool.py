"""The warm children: pre-started interpreters, each ready for exactly one flow run.

`WarmChild` is the runner's handle on one child process (launch, wait for `ready`, hand it a
run, kill it). `WarmPool` keeps `size` of them idle, counting those still warming, and hands
one out; a replacement is warmed in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any
from uuid import UUID

from remediation.runner.child import code_stamp
from remediation.runner.zygote import ForkedProcess, ForkServer

__all__ = ["WarmChild", "WarmPool"]

log = logging.getLogger("remediation.runner")


class WarmChild:
    """One pre-started interpreter, ready for exactly one flow run."""

    def __init__(self, proc: asyncio.subprocess.Process | ForkedProcess,
                 entrypoints: frozenset[str] = frozenset()) -> None:
        self.proc = proc
        self.entrypoints = entrypoints  # preloaded; any other entrypoint is loaded when its run comes
        self.launched_at = time.time()
        #: The project's source files this child imported (it reports them when ready).
        self.sources: list[str] = []
        self.flow_run_id: UUID | None = None

    @classmethod
    async def launch(cls, entrypoints: Sequence[str], preload: Sequence[str],
                     warm_calls: Sequence[str] = (), forks: ForkServer | None = None) -> WarmChild:
        """Forked from the runner's zygote when it has one; spawned (a fresh interpreter) otherwise."""
        if forks is not None and forks.disabled is None:
            with contextlib.suppress(Exception):  # the fork server logged why; a spawned child does the same job
                forked, code_read_at = await forks.spawn(entrypoints, preload, warm_calls)
                child = cls(forked, frozenset(entrypoints))
                child.launched_at = code_read_at
                return child
        argv = [sys.executable, "-m", "remediation.runner", "child"]
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


class WarmPool:
    def __init__(self, size: int, launch: Callable[[], Awaitable[WarmChild]], stopping: asyncio.Event,
                 background: Callable[[Coroutine[Any, Any, None]], None], on_change: Callable[[], None]) -> None:
        self.size = size
        self._launch, self._stopping, self._background, self._on_change = launch, stopping, background, on_change
        self.idle: asyncio.Queue[WarmChild] = asyncio.Queue()
        self.warming = 0
        self._starting: set[WarmChild] = set()  # launched, not yet ready: closing kills them too

    def refill(self) -> None:
        """Top the idle pool up to `size`, counting children already warming."""
        while not self._stopping.is_set() and self.idle.qsize() + self.warming < self.size:
            self._spawn_later()

    def _spawn_later(self) -> None:
        self.warming += 1
        self._background(self._warm_one())

    async def _warm_one(self) -> None:
        child: WarmChild | None = None
        try:
            child = await self._launch()
            self._starting.add(child)
            await child.ready()
        except asyncio.CancelledError:
            if child is not None:
                await child.kill()
            raise
        except Exception as exc:
            if self._stopping.is_set():
                return
            log.error("could not warm a child interpreter: %s", exc)
            await asyncio.sleep(1.0)
            return
        finally:
            self.warming -= 1
            if child is not None:
                self._starting.discard(child)
        if self._stopping.is_set():
            await child.kill()
            return
        self.idle.put_nowait(child)
        self._on_change()

    async def take(self) -> WarmChild:
        """An idle child (waiting for one to warm if none is ready)."""
        while True:
            if self.idle.empty() and self.warming == 0:
                self._spawn_later()
            child = await self.idle.get()
            if child.alive:
                return child
            await child.kill()

    async def retire(self, keep: Callable[[WarmChild], bool]) -> None:
        """Replace every idle child that `keep` refuses (older code, a deployment it has not loaded)."""
        kept = []
        while not self.idle.empty():
            child = self.idle.get_nowait()
            if keep(child) and child.alive:
                kept.append(child)
            else:
                log.info("warm child %s retired (new deployment or changed code); warming another", child.proc.pid)
                await child.kill()
        for child in kept:
            self.idle.put_nowait(child)
        self.refill()

    async def close(self) -> None:
        while not self.idle.empty():
            await self.idle.get_nowait().kill()
        for starting in list(self._starting):
            await starting.kill()
