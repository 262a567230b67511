"""A fork server for warm children: the imports are paid once per replica, not once per run.

A warm child spends 5-6 s of CPU importing Prefect's engine, the flows, boto3 and the rest before
it is ready; each run used one, so every run cost that again while it ran (on 2 cores, against the
runs themselves). The zygote does those imports once, single-threaded, then forks a child per
request: a forked child shares the imported modules and only makes what must be its own — the API
client, Prefect's settings, its log and event workers, the warm calls — about 0.4 s of CPU.

Protocol, over a Unix socket pair with the runner: the zygote says `ready <sources>`; the runner
sends `fork` with two file descriptors (the child's stdin and stdout pipes, SCM_RIGHTS); the zygote
answers `pid <n>`, and `exit <n> <code>` when it reaps that child. A forked child then speaks the
usual child protocol (`remediation.runner.child`) on those pipes. A fork needs a process with one
thread (a lock held by another thread at the fork would stay held in the child forever), so the
zygote refuses to serve if its imports started a thread, and the runner falls back to spawning
children.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from remediation.runner.child import code_stamp, project_sources, serve_one, warm_imports

__all__ = ["ForkServer", "ForkedProcess", "Zygote", "zygote_main"]

log = logging.getLogger("remediation.runner")


# --- inside the zygote ------------------------------------------------------------------------------
def zygote_main(control_fd: int, entrypoints: Sequence[str], preload: Sequence[str],
                warm_calls: Sequence[str]) -> int:
    """Import, say `ready`, fork a child per `fork` request until the runner closes the socket.
    Returns in the zygote when it is done, and in each forked child with that child's exit code."""
    control = socket.socket(fileno=control_fd)
    flows = warm_imports(entrypoints, preload, warm_calls)
    if threading.active_count() != 1:
        control.sendall(f"unsafe {[t.name for t in threading.enumerate()]}\n".encode())
        return 1
    control.sendall(f"ready {json.dumps(project_sources(os.getcwd()))}\n".encode())
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    while True:
        readable, _, _ = select.select([control.fileno(), wake_r], [], [])
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
            _report_exits(control)
        if control.fileno() not in readable:
            continue
        msg, fds, _, _ = socket.recv_fds(control, 64, 2)
        if not msg:  # the runner is gone: so is this zygote (its children finish their runs)
            return 0
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            control.sendall(b"pid 0\n")
            continue
        sys.stdout.flush()  # or the child would write what this process left buffered
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(wake_r)
            os.close(wake_w)
            control.close()
            os.dup2(fds[0], 0)
            os.dup2(fds[1], 1)
            for fd in fds:
                os.close(fd)
            return serve_one(flows, warm_calls)
        for fd in fds:
            os.close(fd)
        control.sendall(f"pid {pid}\n".encode())


def _report_exits(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.sendall(f"exit {pid} {os.waitstatus_to_exitcode(status)}\n".encode())


# --- in the runner --------------------------------------------------------------------------------
class ForkedProcess:
    """A forked child, with the part of `asyncio.subprocess.Process` that `WarmChild` uses. It is the
    zygote's child, not ours: its end is seen on a pidfd, its exit code comes from the zygote."""

    def __init__(self, pid: int, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader,
                 code: asyncio.Future[int]) -> None:
        self.pid, self.stdin, self.stdout, self._code = pid, stdin, stdout, code
        loop = asyncio.get_running_loop()
        self._gone: asyncio.Future[None] = loop.create_future()
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._gone.set_result(None)
            return

        def gone() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            if not self._gone.done():
                self._gone.set_result(None)
        loop.add_reader(fd, gone)

    @property
    def returncode(self) -> int | None:
        if self._code.done():
            return self._code.result()
        return -1 if self._gone.done() else None

    async def wait(self) -> int:
        await asyncio.shield(self._gone)
        try:  # the zygote reaps it at once; a zygote that is gone says nothing (-1)
            return await asyncio.wait_for(asyncio.shield(self._code), 2)
        except TimeoutError:
            return -1

    def send_signal(self, sig: int) -> None:
        if not self._gone.done():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The runner's handle on one zygote: launch it, fork children from it, know when they exit."""

    def __init__(self, proc: asyncio.subprocess.Process, sock: socket.socket, reader: asyncio.StreamReader,
                 key: tuple[Any, ...]) -> None:
        self.proc, self.sock, self.reader, self.key = proc, sock, reader, key
        self.launched_at = time.time()
        self.sources: list[str] = []
        self._pids: asyncio.Queue[int] = asyncio.Queue()
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    async def launch(cls, entrypoints: Sequence[str], preload: Sequence[str], warm_calls: Sequence[str]) -> Zygote:
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", "remediation.runner", "zygote", "--control-fd", str(theirs.fileno())]
        for flag, values in (("--entrypoint", entrypoints), ("--preload", preload), ("--warm-call", warm_calls)):
            for value in values:
                argv += [flag, value]
        launched_at = time.time()
        try:
            proc = await asyncio.create_subprocess_exec(*argv, pass_fds=[theirs.fileno()],
                                                        stdin=asyncio.subprocess.DEVNULL, stderr=None)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        zygote = cls(proc, ours, reader, (tuple(entrypoints), tuple(preload), tuple(warm_calls)))
        zygote._writer = writer  # unused (requests carry descriptors: sendmsg), but its transport owns the socket
        zygote.launched_at = launched_at
        word, _, report = (await reader.readline()).strip().partition(b" ")
        if word != b"ready":
            await zygote.close()
            raise RuntimeError(f"zygote {proc.pid} did not get ready: {word.decode()} {report.decode()}".strip())
        zygote.sources = list(json.loads(report or b"[]"))
        zygote._reader_task = asyncio.ensure_future(zygote._read())
        return zygote

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and self._reader_task is not None and not self._reader_task.done()

    def stale(self) -> bool:
        return code_stamp(self.sources) > self.launched_at

    async def _read(self) -> None:
        try:
            while line := await self.reader.readline():
                word, *rest = line.split()
                if word == b"pid":
                    self._pids.put_nowait(int(rest[0]))
                elif word == b"exit":
                    pid = int(rest[0])
                    exited = self._exits.pop(pid, None)
                    if exited is None:  # reported before its fork() asked: kept for it
                        exited = self._exit_future(pid)
                    if not exited.done():
                        exited.set_result(int(rest[1]))
        except (OSError, ValueError, IndexError) as exc:
            log.warning("zygote %s: its socket failed: %s", self.proc.pid, exc)

    def _exit_future(self, pid: int) -> asyncio.Future[int]:
        if pid not in self._exits:
            self._exits[pid] = asyncio.get_running_loop().create_future()
        return self._exits[pid]

    async def fork(self) -> ForkedProcess:
        loop = asyncio.get_running_loop()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            socket.send_fds(self.sock, [b"fork\n"], [in_r, out_w])
        finally:
            os.close(in_r)
            os.close(out_w)
        pid = await asyncio.wait_for(self._pids.get(), 30)
        if pid == 0:
            os.close(in_w)
            os.close(out_r)
            raise RuntimeError("the zygote refused the fork request")
        exited = self._exit_future(pid)
        stdout = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), os.fdopen(out_r, "rb", 0))
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                            os.fdopen(in_w, "wb", 0))
        stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        return ForkedProcess(pid, stdin, stdout, exited)

    async def close(self) -> None:
        """Stop the zygote (its forked children are the runner's to stop)."""
        if self._writer is not None:
            self._writer.close()
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()
        if self._reader_task is not None:
            self._reader_task.cancel()


class ForkServer:
    """The runner's zygote, relaunched when the deployments' entrypoints or the checkout's code change;
    forks are made one at a time (the zygote answers them in order)."""

    RETRY_S = 300.0

    def __init__(self) -> None:
        self._zygote: Zygote | None = None
        self._lock = asyncio.Lock()
        self._failed: tuple[str, float] | None = None  # the last launch failure and when to try again

    @property
    def disabled(self) -> str | None:
        """Why forking is off for now (children are spawned): a zygote that failed to launch is tried
        again after `RETRY_S`, so a passing failure does not cost forking until the runner restarts."""
        if self._failed is None or time.monotonic() >= self._failed[1]:
            return None
        return self._failed[0]

    async def spawn(self, entrypoints: Sequence[str], preload: Sequence[str],
                    warm_calls: Sequence[str]) -> tuple[ForkedProcess, float]:
        """A forked child and when the code it carries was read."""
        async with self._lock:
            key = (tuple(entrypoints), tuple(preload), tuple(warm_calls))
            zygote = self._zygote
            if zygote is None or not zygote.alive or zygote.key != key or zygote.stale():
                self._zygote = None
                if zygote is not None:
                    await zygote.close()
                try:
                    zygote = self._zygote = await Zygote.launch(entrypoints, preload, warm_calls)
                except Exception as exc:
                    self._failed = (str(exc), time.monotonic() + self.RETRY_S)
                    log.warning("warm children are spawned, not forked: %s", exc)
                    raise
                log.info("zygote %s ready: warm children are forked from it", zygote.proc.pid)
            return await zygote.fork(), zygote.launched_at

    async def close(self) -> None:
        async with self._lock:
            if self._zygote is not None:
                await self._zygote.close()
                self._zygote = None
