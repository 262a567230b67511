"""Drill faults behave like the real incidents they imitate, against the running stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from sandbox import faults
from sandbox.config import SandboxSettings
from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration

WRITER_UNAVAILABLE = {"status": 503, "msg": "wallet writer unavailable"}


@pytest.fixture
def platform(reset_platform: StackInfo) -> Iterator[StackInfo]:
    """Seeded platform; any wedge a test leaves on is lifted even if the test fails."""
    yield reset_platform
    faults.wedge_off(reset_platform.platform_dsn.get_secret_value(), home=reset_platform.home)


def _dsn(stack: StackInfo) -> str:
    return stack.platform_dsn.get_secret_value()


def _deposit(stack: StackInfo, player: str = "alpha-0003", amount: int = 100) -> httpx.Response:
    return httpx.post(f"{stack.gateway_url}/api/v1/wallet/deposit",
                      json={"player_id": player, "amount": amount, "ref": uuid.uuid4().hex}, timeout=60)


def _holder_sessions(stack: StackInfo) -> list[tuple[int, str, str]]:
    with psycopg.connect(stack.superuser_dsn.get_secret_value()) as conn:
        rows = conn.execute(
            "SELECT a.pid, a.state, a.query FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid"
            " WHERE a.application_name = %s AND l.relation = 'bucket'::regclass AND l.granted",
            (faults.HOLDER_APP,),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_wedged_hang_answers_503_within_the_lock_timeout(platform: StackInfo) -> None:
    stack = platform
    lock_timeout = SandboxSettings().wallet_lock_timeout_s
    params = faults.wedge_on(_dsn(stack), "hang", home=stack.home)
    assert params["mode"] == "hang"

    sessions = _holder_sessions(stack)
    assert len(sessions) == 1
    assert sessions[0][1] == "active" and "pg_sleep" in sessions[0][2]

    started = time.monotonic()
    resp = _deposit(stack)
    elapsed = time.monotonic() - started
    assert (resp.status_code, resp.json()) == (503, WRITER_UNAVAILABLE)
    assert lock_timeout * 0.8 <= elapsed <= lock_timeout + 3.0, elapsed

    # Reads do not need the writer's lock; the deep health check sees the wedge quickly.
    assert httpx.get(f"{stack.gateway_url}/api/v1/wallet/balance/alpha-0003", timeout=10).status_code == 200
    deep = httpx.get(f"{stack.gateway_url}/health/deep", timeout=10)
    assert deep.status_code == 503 and deep.json()["status"] == "degraded"
    assert deep.json()["checks"]["wallet_writer"]["ok"] is False
    assert deep.json()["checks"]["database"]["ok"] is True

    assert faults.wedge_off(_dsn(stack), home=stack.home) is True
    assert _holder_sessions(stack) == []
    assert _deposit(stack).json()["status"] == 0


def test_wedge_on_twice_keeps_one_holder(platform: StackInfo) -> None:
    stack = platform
    first = faults.wedge_on(_dsn(stack), "hang", home=stack.home)
    second = faults.wedge_on(_dsn(stack), "hang", home=stack.home)
    assert first["backend_pid"] == second["backend_pid"]
    assert len(_holder_sessions(stack)) == 1


def test_hard_killed_holder_is_still_cleared(platform: StackInfo) -> None:
    stack = platform
    params = faults.wedge_on(_dsn(stack), "hang", home=stack.home)
    os.kill(params["pid"], signal.SIGKILL)
    faults.wedge_off(_dsn(stack), home=stack.home)
    assert _holder_sessions(stack) == []
    assert _deposit(stack).json()["status"] == 0


def test_wedged_error_mode_fails_writes_with_500(platform: StackInfo) -> None:
    stack = platform
    faults.wedge_on(_dsn(stack), "error", home=stack.home)
    resp = _deposit(stack)
    assert resp.status_code == 500
    bet = httpx.post(f"{stack.gateway_url}/api/v1/provider/bet",
                     json={"player_id": "beta-0001", "round_id": uuid.uuid4().hex, "amount": 5}, timeout=10)
    assert bet.status_code == 500
    assert httpx.get(f"{stack.gateway_url}/api/v1/wallet/balance/alpha-0003", timeout=10).status_code == 200
    assert httpx.get(f"{stack.gateway_url}/health/deep", timeout=10).status_code == 503
    faults.wedge_off(_dsn(stack), home=stack.home)
    assert _deposit(stack).json()["status"] == 0


MISMATCHES = """
    SELECT b.player_id, b.balance - COALESCE(l.total, 0) FROM bucket b
    LEFT JOIN (SELECT player_id, sum(amount) AS total FROM ledger GROUP BY player_id) l USING (player_id)
    WHERE b.balance <> COALESCE(l.total, 0) ORDER BY b.player_id
"""


def test_bucket_drift_moves_exactly_n_players(platform: StackInfo) -> None:
    stack = platform
    with psycopg.connect(_dsn(stack)) as conn:
        ledger_rows = conn.execute("SELECT count(*) FROM ledger").fetchone()
        assert conn.execute(MISMATCHES).fetchall() == []
    drifted = faults.drift_on(_dsn(stack), players=4, amount=-137, seed=11)
    assert len(drifted) == 4
    with psycopg.connect(_dsn(stack)) as conn:
        mismatches = conn.execute(MISMATCHES).fetchall()
        assert conn.execute("SELECT count(*) FROM ledger").fetchone() == ledger_rows
    assert mismatches == [(d["player_id"], -137) for d in drifted]
    assert not any(p.startswith("synthetic-") for p, _ in mismatches)

    more = faults.drift_on(_dsn(stack), players=2, amount=500, seed=11)
    assert not {d["player_id"] for d in more} & {d["player_id"] for d in drifted}
    with psycopg.connect(_dsn(stack)) as conn:
        assert len(conn.execute(MISMATCHES).fetchall()) == 6


def test_fault_cli(platform: StackInfo) -> None:
    env = {**os.environ, "SANDBOX_DSN": _dsn(platform), "SANDBOX_HOME": str(platform.home)}
    argv = [sys.executable, "-m", "sandbox.faults", "bucket-drift", "on", "--players", "2", "--amount", "99"]
    on = subprocess.run([*argv, "--seed", "3"], env=env, capture_output=True, text=True, timeout=60)
    assert on.returncode == 0, on.stderr
    assert '"drift": 99' in on.stdout
    off = subprocess.run([sys.executable, "-m", "sandbox.faults", "bucket-drift", "off"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert off.returncode == 2 and "cannot be switched off" in off.stderr
    assert _dsn(platform) not in on.stdout + on.stderr + off.stderr
