"""The stack control: idempotent `up`, everything reported running, credentials kept private."""

from __future__ import annotations

import stat
import subprocess
import time

import pytest

from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from sandbox.stack.processes import read_pid

pytestmark = pytest.mark.integration


def test_up_again_is_idempotent_and_quick(stack: StackInfo) -> None:
    st = Stack()
    run = st.home / "run"
    before = {p.name: read_pid(p) for p in run.glob("*.pid")}
    started = time.monotonic()
    again = st.up(log=lambda _m: None)
    # Everything is there already: no CLI start, no block saved again (2-3 s here, 12 s when both were).
    assert time.monotonic() - started < 10
    after = {p.name: read_pid(p) for p in run.glob("*.pid")}
    assert before == after, "a second `up` restarted something that was running"
    assert again.model_dump() == stack.model_dump()
    assert all(st.status().values()), st.status()
    assert st.result_storage_current()


def test_generated_credentials_are_private(stack: StackInfo) -> None:
    for name in ("stack.json", "secrets.json"):
        mode = stat.S_IMODE((stack.home / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    assert stat.S_IMODE(stack.ssh_client_key.stat().st_mode) == 0o600


def test_known_hosts_holds_only_the_sandbox_host_key(stack: StackInfo) -> None:
    lines = stack.ssh_known_hosts.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"[127.0.0.1]:{stack.ssh_port} ssh-ed25519 ")


def test_bad_deploy_breaks_health_and_reset_restores_it(stack: StackInfo) -> None:
    import httpx

    st = Stack()
    healthy = httpx.get(f"{stack.gateway_url}/health", timeout=5)
    assert healthy.status_code == 200
    try:
        sha = st.bad_deploy()
        broken = httpx.get(f"{stack.gateway_url}/health", timeout=5)
        assert broken.status_code == 500
        assert broken.json()["release"] == sha
        assert "wallet_timeout_s" in broken.json()["error"]
        # The bad commit is on origin and deployed on the host, as a real bad deploy would be.
        assert st.host.head() == sha
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=st.host.checkout, check=True, capture_output=True,
                                  text=True).stdout.strip()

        # A drill stopped before its rollback leaves the bad change on main: the next bad deploy starts
        # again from the seeded history instead of failing on a commit with nothing in it.
        seeded = git("rev-parse", f"{sha}^^{{tree}}"), git("rev-list", "--count", sha)
        again = st.bad_deploy()
        assert again != sha and st.host.head() == again
        assert httpx.get(f"{stack.gateway_url}/health", timeout=5).json()["release"] == again
        assert (git("rev-parse", f"{again}^^{{tree}}"), git("rev-list", "--count", again)) == seeded, (
            "one bad commit on the seeded history, not two")
    finally:
        st.reset_release()
    restored = httpx.get(f"{stack.gateway_url}/health", timeout=5)
    assert restored.status_code == 200
    assert restored.json()["release"] == st.host.head() != sha


def test_admin_down_fault_stops_and_restores_the_admin_service(stack: StackInfo) -> None:
    import httpx

    st = Stack()
    try:
        st.admin_down(True)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{stack.admin_url}/health", timeout=2)
    finally:
        st.admin_down(False)
    assert httpx.get(f"{stack.admin_url}/health", timeout=5).status_code == 200
