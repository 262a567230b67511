"""Detached background processes tracked by pid file, stopped by pid, never orphaned."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["is_running", "port_open", "process_start", "read_pid", "start_detached", "stop", "wait_until"]


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start in clock ticks since boot (/proc/<pid>/stat field 22); None if gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if not fields or fields[0] == "Z" else int(fields[19])


def process_start(pid: int) -> float | None:
    """When the process started (epoch seconds, to the clock tick), from /proc; None if it is gone or a zombie."""
    ticks = _start_ticks(pid)
    try:
        with open("/proc/stat") as stat:
            boot = next(int(line.split()[1]) for line in stat if line.startswith("btime"))
    except (OSError, StopIteration):
        return None
    return None if ticks is None else boot + ticks / os.sysconf("SC_CLK_TCK")


def _identity_file(pid_file: Path) -> Path:
    return pid_file.with_name(pid_file.name + ".start")


def is_running(pid_file: Path) -> bool:
    """The recorded process is alive — and is the one recorded: a pid the kernel has since given to a
    process started after the pid file was written (the recorded one exited long ago) is not ours, and
    must never be signalled.

    Which process is "the one recorded" is its start in clock ticks since boot, kept beside the pid
    file (`<pid file>.start`) and compared exactly: `start_detached` records it when it starts the
    process; a pid file a daemon writes itself (sshd's) is recorded when first seen running. Wall-clock
    times (a start against the pid file's mtime) decide only that first sighting: they break whenever
    the clock is stepped — this VM's was, 22 s forward, then minutes when the VM was forked, and live
    processes read as someone else's, so the stack started second copies beside them."""
    pid = read_pid(pid_file)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    ticks = _start_ticks(pid)
    if ticks is None:  # gone meanwhile, or a zombie (which still answers kill(0))
        return False
    recorded = _recorded(pid_file)
    if recorded is not None and recorded[0] == pid:
        return recorded[1] == ticks  # else the pid was given to another process since
    started = process_start(pid)
    with contextlib.suppress(FileNotFoundError):
        # First sighting (or the pid reused): /proc's boot time is whole seconds, a second of slack.
        if started is None or started > pid_file.stat().st_mtime + 1.0:
            return False
    _record(pid_file, pid, ticks)
    return True


def _recorded(pid_file: Path) -> tuple[int, int] | None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid, ticks = (int(v) for v in _identity_file(pid_file).read_text().split())
        return pid, ticks
    return None


def _record(pid_file: Path, pid: int, ticks: int) -> None:
    identity = _identity_file(pid_file)
    with contextlib.suppress(OSError):
        tmp = identity.with_name(identity.name + ".tmp")
        tmp.write_text(f"{pid} {ticks}\n")
        tmp.replace(identity)


def start_detached(
    argv: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start `argv` in its own session so it outlives the caller (and an SSH channel)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            list(argv),
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    # Its identity first, then the pid file: whoever reads the pid finds it recorded.
    ticks = _start_ticks(proc.pid)
    if ticks is not None:
        _record(pid_file, proc.pid, ticks)
    else:
        _identity_file(pid_file).unlink(missing_ok=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def stop(pid_file: Path, *, grace_s: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """Stop the process group recorded in `pid_file`; SIGKILL after `grace_s`. True if one ran."""
    pid = read_pid(pid_file)
    if pid is None or not is_running(pid_file):
        pid_file.unlink(missing_ok=True)
        _identity_file(pid_file).unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and is_running(pid_file):
        _reap(pid)
        time.sleep(0.1)
    if is_running(pid_file):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.2)
        _reap(pid)
    pid_file.unlink(missing_ok=True)
    _identity_file(pid_file).unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    # Our own children become zombies until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool], *, timeout_s: float, what: str, log_file: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(delay)
        # Capped low: a service up after 1.1 s was seen 0.4 s later with a 1 s cap (checks are cheap).
        delay = min(delay * 1.5, 0.2)
    tail = ""
    if log_file is not None and log_file.exists():
        tail = "\n--- last lines of " + str(log_file) + " ---\n" + "\n".join(
            log_file.read_text(errors="replace").splitlines()[-30:]
        )
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s{tail}")
