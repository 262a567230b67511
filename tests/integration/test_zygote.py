"""The warm runner's fork server: a forked child speaks the child protocol, its end and exit code reach
the runner, and a zygote whose imports started a thread refuses to fork. Integration: a forked child
builds its API client against the stack's Prefect server before it says `ready`."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from remediation.runner.zygote import ForkServer, Zygote
from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_checkout(stack: StackInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # a child reports the checkout's sources it imported, read from its cwd


async def _ready(proc: object) -> bytes:
    line: bytes = await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[attr-defined]
    return line


def test_forked_children_are_ready_at_once_and_report_their_end() -> None:
    async def scenario() -> None:
        zygote = await Zygote.launch([], ["json"], [])
        try:
            first, second = await zygote.fork(), await zygote.fork()
            assert first.pid != second.pid != zygote.proc.pid
            assert os.getpgid(first.pid) == os.getpgid(zygote.proc.pid)  # `stack down` stops the group
            for child in (first, second):
                assert (await _ready(child)).startswith(b"ready ")
            # An empty line instead of a flow-run id: the child has nothing to run and exits 0.
            first.stdin.write(b"\n")
            await first.stdin.drain()
            first.stdin.close()
            assert await asyncio.wait_for(first.wait(), 30) == 0
            second.kill()
            assert await asyncio.wait_for(second.wait(), 30) == -signal.SIGKILL
            assert second.returncode == -signal.SIGKILL
        finally:
            await zygote.close()

    asyncio.run(scenario())


def test_a_forked_child_shares_prefects_tls_contexts_before_its_warm_calls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = tmp_path / "tls"
    monkeypatch.setenv("RP_TLS_PROBE_FILE", str(probe))

    async def scenario() -> None:
        zygote = await Zygote.launch([], [], ["tests.fixtures.tls_probe:record"])
        try:
            child = await zygote.fork()
            assert (await _ready(child)).startswith(b"ready ")
            child.stdin.write(b"\n")
            await child.stdin.drain()
            child.stdin.close()
            assert await asyncio.wait_for(child.wait(), 30) == 0
        finally:
            await zygote.close()

    asyncio.run(scenario())
    assert probe.read_text() == "shared"


def test_a_zygote_whose_imports_started_a_thread_refuses_to_fork_for_a_while(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))

    async def scenario() -> None:
        forks = ForkServer()
        forks.RETRY_S = 1.0
        with pytest.raises(RuntimeError, match="unsafe"):
            await forks.spawn([], ["starts_a_thread"], [])
        assert forks.disabled is not None and "unsafe" in forks.disabled
        await asyncio.sleep(1.1)
        assert forks.disabled is None  # tried again later: a passing failure does not end forking for good
        await forks.close()

    asyncio.run(scenario())


def test_the_fork_server_replaces_its_zygote_when_what_children_import_changes() -> None:
    async def scenario() -> None:
        forks = ForkServer()
        try:
            a, _ = await forks.spawn([], ["json"], [])
            zygote_a = forks._zygote
            b, _ = await forks.spawn([], ["json"], [])
            assert forks._zygote is zygote_a  # same imports: the same zygote forks again
            b.kill()
            assert await asyncio.wait_for(b.wait(), 30) == -signal.SIGKILL
            c, _ = await forks.spawn([], ["json", "csv"], [])
            assert forks._zygote is not zygote_a and zygote_a is not None and not zygote_a.alive
            # `a` outlived its zygote: its end is still seen (pidfd), with no exit code to tell.
            a.kill()
            assert await asyncio.wait_for(a.wait(), 30) == -1
            c.kill()
            assert await asyncio.wait_for(c.wait(), 30) == -signal.SIGKILL
        finally:
            await forks.close()

    asyncio.run(scenario())
