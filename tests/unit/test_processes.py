"""Background processes are stopped by pid with their whole group: nothing is left behind."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from sandbox.stack.processes import is_running, read_pid, start_detached, stop


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_stop_takes_the_child_processes_too(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time, pathlib;"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']);"
        f"pathlib.Path({str(child_pid_file)!r}).write_text(str(c.pid));"
        "time.sleep(300)"
    )
    pid_file = tmp_path / "parent.pid"
    start_detached([sys.executable, "-c", script], pid_file=pid_file, log_file=tmp_path / "log")
    deadline = time.monotonic() + 10
    while not child_pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    parent, child = read_pid(pid_file), int(child_pid_file.read_text())
    assert parent is not None and is_running(pid_file) and _alive(child)

    assert stop(pid_file, grace_s=5) is True
    time.sleep(0.2)
    assert not _alive(parent)
    assert not _alive(child), "the child outlived its parent: an orphan"
    assert not pid_file.exists()


def test_stop_is_idempotent_and_ignores_stale_pid_files(tmp_path: Path) -> None:
    pid_file = tmp_path / "gone.pid"
    assert stop(pid_file) is False
    pid_file.write_text("999999")  # no such process
    assert is_running(pid_file) is False
    assert stop(pid_file) is False
    assert not pid_file.exists()


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "stubborn.pid"
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    start_detached([sys.executable, "-c", script], pid_file=pid_file, log_file=tmp_path / "log")
    time.sleep(0.3)
    pid = read_pid(pid_file)
    assert pid is not None
    started = time.monotonic()
    assert stop(pid_file, grace_s=1) is True
    assert time.monotonic() - started < 5
    assert not _alive(pid)


def test_a_process_seen_once_stays_ours_when_the_clock_is_stepped(tmp_path: Path) -> None:
    """A VM's clock stepped 22 s forward made a live sshd read as started after its own pid file. The
    process is identified by its start in clock ticks since boot once first seen, not by wall-clock times."""
    pid_file = tmp_path / "daemon.pid"
    start_detached([sys.executable, "-c", "import time; time.sleep(300)"], pid_file=pid_file, log_file=tmp_path / "log")
    try:
        assert is_running(pid_file)
        # As if the clock had been stepped: the pid file now looks written an hour before the process began.
        hour_ago = time.time() - 3600
        os.utime(pid_file, (hour_ago, hour_ago))
        assert is_running(pid_file), "the process first seen is still recognised after a clock step"

        (tmp_path / "daemon.pid.start").unlink()
        assert not is_running(pid_file), "never seen before and started after its pid file: not ours"
    finally:
        pid = read_pid(pid_file)
        if pid is not None:
            os.utime(pid_file)  # ours again by the pid file's time, so stop signals it
            assert stop(pid_file, grace_s=2)
    assert not (tmp_path / "daemon.pid.start").exists()


def test_a_process_we_started_is_ours_even_if_the_clock_is_stepped_before_anyone_looks(tmp_path: Path) -> None:
    """The VM was forked mid-CI and its clock moved by minutes before `up` looked at moto and the admin
    service again: unseen until then, they read as strangers and got second copies beside them."""
    pid_file = tmp_path / "moto.pid"
    start_detached([sys.executable, "-c", "import time; time.sleep(300)"], pid_file=pid_file, log_file=tmp_path / "log")
    pid = read_pid(pid_file)
    identity = tmp_path / "moto.pid.start"
    recorded_pid, ticks = (int(v) for v in identity.read_text().split())
    assert pid is not None and recorded_pid == pid, "recorded by start_detached, before anyone looked"
    try:
        hour_ago = time.time() - 3600
        os.utime(pid_file, (hour_ago, hour_ago))  # the first look comes after the step
        assert is_running(pid_file), "recorded when started: no wall clock decides"
        identity.write_text(f"{pid} {ticks + 1}\n")  # the same pid, another start: the pid was reused
        assert not is_running(pid_file), "a pid given to another process is never ours"
    finally:
        identity.write_text(f"{pid} {ticks}\n")
        assert stop(pid_file, grace_s=2)
    assert not _alive(pid) and not (tmp_path / "moto.pid.start").exists()
