"""Fault switches for drills and tests: a wedged wallet writer and drifted buckets.

    python -m sandbox.faults wallet-wedged on --mode hang|error
    python -m sandbox.faults wallet-wedged off
    python -m sandbox.faults bucket-drift on --players N --amount CENTS [--seed S]
    python -m sandbox.faults status

`hang` is a real lock, not a flag the wallet obeys: a detached holder process keeps a
transaction open with `bucket` locked and runs `pg_sleep`, so it shows in
pg_stat_activity and pg_locks exactly as a stuck writer would. `error` is a flag the
wallet reads per request. Drift changes buckets without a ledger row, as a bug would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from sandbox.config import SandboxSettings
from sandbox.db import connect, reseed
from sandbox.stack.processes import is_running, read_pid, start_detached, stop

__all__ = ["HOLDER_APP", "drift_on", "status", "wedge_off", "wedge_on"]

WEDGE = "wallet-wedged"
DRIFT = "bucket-drift"
MODES = ("hang", "error")
#: application_name of the holder's session: how off() and tests find it in pg_stat_activity.
HOLDER_APP = "sandbox-fault-wallet-wedged"
HOLD_SECONDS = 3600
_HOLD_COMMAND = "_hold-wallet-lock"
_PROJECT_DIR = Path(__file__).resolve().parent.parent

_HOLDER_LOCKS = """
    SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
    WHERE a.application_name = %s AND l.relation = 'bucket'::regclass
      AND l.mode = 'ExclusiveLock' AND l.granted
"""


def _home(home: Path | None) -> Path:
    return home if home is not None else SandboxSettings().home


def _pid_file(home: Path | None) -> Path:
    return _home(home) / "run" / f"fault-{WEDGE}.pid"


def _current(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT params FROM sandbox_fault WHERE name = %s", (name,)).fetchone()
    return None if row is None else dict(row[0])


def _set(conn: psycopg.Connection, name: str, params: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO sandbox_fault (name, params, set_at) VALUES (%s, %s, now())"
        " ON CONFLICT (name) DO UPDATE SET params = EXCLUDED.params, set_at = now()",
        (name, Jsonb(params)),
    )


def _holder_backends(conn: psycopg.Connection) -> list[int]:
    return [r[0] for r in conn.execute(_HOLDER_LOCKS, (HOLDER_APP,)).fetchall()]


def wedge_on(dsn: str, mode: str, *, home: Path | None = None, wait_s: float = 15.0) -> dict[str, Any]:
    """Wedge the wallet writer; returns the fault's recorded params. Repeating it changes nothing."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    with connect(dsn, application_name="sandbox-faults", autocommit=True) as conn:
        current = _current(conn, WEDGE)
        if current is not None and current.get("mode") == mode and (
            mode == "error" or _holder_backends(conn)
        ):
            return current
    wedge_off(dsn, home=home)
    with connect(dsn, application_name="sandbox-faults", autocommit=True) as conn:
        params: dict[str, Any] = {"mode": mode}
        if mode == "hang":
            params.update(_start_holder(conn, dsn, home, wait_s))
        _set(conn, WEDGE, params)
    return params


def _start_holder(conn: psycopg.Connection, dsn: str, home: Path | None, wait_s: float) -> dict[str, Any]:
    pid_file = _pid_file(home)
    log_file = _home(home) / "logs" / f"fault-{WEDGE}.log"
    # The DSN carries a password: it goes through the environment, never the command line.
    env = {**os.environ, "SANDBOX_DSN": dsn}
    pid = start_detached([sys.executable, "-m", "sandbox.faults", _HOLD_COMMAND],
                         pid_file=pid_file, log_file=log_file, env=env, cwd=_PROJECT_DIR)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        backends = _holder_backends(conn)
        if backends:
            return {"pid": pid, "backend_pid": backends[0], "lock": "bucket IN EXCLUSIVE MODE"}
        if not is_running(pid_file):
            break
        time.sleep(0.1)
    stop(pid_file)
    tail = log_file.read_text(errors="replace").splitlines()[-10:] if log_file.exists() else []
    raise RuntimeError(f"lock holder did not take the bucket lock within {wait_s:.0f}s: " + " | ".join(tail))


def _is_holder(pid: int) -> bool:
    # A recorded pid may have been reused by an unrelated process: only signal our holder.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"sandbox.faults" in cmdline and _HOLD_COMMAND.encode() in cmdline


def _kill_holder(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        for _ in range(50):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            if not _is_holder(pid):
                return
            time.sleep(0.1)


def wedge_off(dsn: str, *, home: Path | None = None) -> bool:
    """Unwedge: stop the holder, terminate its backend(s), clear the flag. True if anything was on."""
    pid_file = _pid_file(home)
    recorded = read_pid(pid_file)
    # A stale pid file may name a reused pid: stop only a process that is our holder.
    was_on = stop(pid_file) if recorded is not None and _is_holder(recorded) else False
    pid_file.unlink(missing_ok=True)
    with connect(dsn, application_name="sandbox-faults", autocommit=True) as conn:
        current = _current(conn, WEDGE)
        pid = (current or {}).get("pid")
        if isinstance(pid, int) and _is_holder(pid):
            _kill_holder(pid)
            was_on = True
        # Belt and braces: a holder killed hard leaves its backend sleeping with the lock held.
        killed = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (HOLDER_APP,),
        ).fetchone()
        deleted = conn.execute("DELETE FROM sandbox_fault WHERE name = %s", (WEDGE,)).rowcount
    return was_on or bool(killed and killed[0]) or deleted > 0


def drift_on(dsn: str, players: int, amount: int, seed: int | None = None) -> list[dict[str, Any]]:
    """Move `players` in-sync players' buckets by `amount` cents with no ledger row.

    Only players whose bucket currently equals their ledger sum are chosen, so exactly
    `players` more players are out of balance afterwards. Synthetic test players are
    never drifted: the round-trip check must not trip over a drill.
    """
    if players < 1:
        raise ValueError("players must be at least 1")
    if amount == 0:
        raise ValueError("amount must not be 0 (cents; negative drifts down)")
    with connect(dsn, application_name="sandbox-faults") as conn, conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', '5s', true)")
        in_sync = [r[0] for r in conn.execute(
            "SELECT b.player_id FROM bucket b JOIN player p USING (player_id)"
            " LEFT JOIN (SELECT player_id, sum(amount) AS total FROM ledger GROUP BY player_id) l"
            " USING (player_id)"
            " WHERE NOT p.is_synthetic AND b.balance = COALESCE(l.total, 0) ORDER BY b.player_id"
        ).fetchall()]
        if players > len(in_sync):
            raise ValueError(f"only {len(in_sync)} players are in balance; cannot drift {players}")
        chosen = sorted(random.Random(seed).sample(in_sync, players))  # noqa: S311 - drill data, not crypto
        conn.execute(
            "UPDATE bucket SET balance = balance + %s, updated_at = now() WHERE player_id = ANY(%s)",
            (amount, chosen),
        )
        conn.execute("SELECT 1 FROM sandbox_fault WHERE name = %s FOR UPDATE", (DRIFT,))
        record = _current(conn, DRIFT) or {"players": {}}
        for pid in chosen:
            record["players"][pid] = int(record["players"].get(pid, 0)) + amount
        _set(conn, DRIFT, record)
    return [{"player_id": pid, "drift": amount} for pid in chosen]


def status(dsn: str) -> dict[str, Any]:
    with connect(dsn, application_name="sandbox-faults", autocommit=True) as conn:
        rows = conn.execute("SELECT name, params, set_at FROM sandbox_fault ORDER BY name").fetchall()
        holders = _holder_backends(conn)
    return {
        "faults": {name: {"params": params, "set_at": set_at.isoformat()} for name, params, set_at in rows},
        "lock_holder_backends": holders,
    }


def _hold_lock(dsn: str) -> None:
    """The holder process: lock `bucket` in an open transaction and sleep."""
    with psycopg.connect(dsn, application_name=HOLDER_APP) as conn:
        # Without this a hard-killed holder leaves its backend asleep with the lock for an hour.
        conn.execute("SET client_connection_check_interval = '1s'")
        conn.execute("LOCK TABLE bucket IN EXCLUSIVE MODE")
        print(f"holding bucket lock in backend {conn.info.backend_pid}", flush=True)
        conn.execute("SELECT pg_sleep(%s)", (HOLD_SECONDS,))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox.faults", description="Sandbox fault switches.")
    sub = parser.add_subparsers(dest="fault", required=True)
    wedged = sub.add_parser(WEDGE, help="wedge the wallet writer")
    wedged.add_argument("action", choices=("on", "off"))
    wedged.add_argument("--mode", choices=MODES, default="hang",
                        help="hang: hold a lock on bucket (writes answer 503); error: writes answer 500")
    drift = sub.add_parser(DRIFT, help="drift N players' buckets away from their ledger")
    drift.add_argument("action", choices=("on", "off"))
    drift.add_argument("--players", type=int, default=3)
    drift.add_argument("--amount", type=int, default=1000, help="cents, may be negative")
    drift.add_argument("--seed", type=int, default=None)
    sub.add_parser("status", help="show active faults")
    sub.add_parser("reset", help="every fault off, and the platform back to its seeded state")
    sub.add_parser(_HOLD_COMMAND)  # internal: the detached lock holder
    return parser


def reset(dsn: str) -> None:
    """Every fault off, then the platform reseeded: what tests and drills start from."""
    wedge_off(dsn)  # the hang holder's table lock would block the reseed's TRUNCATE
    reseed(dsn)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    dsn = SandboxSettings().dsn.get_secret_value()
    if not dsn:
        print("SANDBOX_DSN is not set", file=sys.stderr)
        return 2
    try:
        if args.fault == _HOLD_COMMAND:
            _hold_lock(dsn)
        elif args.fault == "reset":
            reset(dsn)
            print(json.dumps({"reset": "every fault off; platform reseeded"}))
        elif args.fault == "status":
            print(json.dumps(status(dsn), indent=2))
        elif args.fault == WEDGE and args.action == "on":
            print(json.dumps(wedge_on(dsn, args.mode)))
        elif args.fault == WEDGE:
            print(json.dumps({"fault": WEDGE, "was_on": wedge_off(dsn)}))
        elif args.action == "on":
            print(json.dumps(drift_on(dsn, args.players, args.amount, args.seed)))
        else:
            print(
                "bucket-drift cannot be switched off: the drift is real data in the bucket table.\n"
                "Repair it with the reconcile runbook, or restore the seed with"
                " `python -m sandbox.faults reset`.",
                file=sys.stderr,
            )
            return 2
    except (ValueError, RuntimeError, psycopg.Error) as exc:
        print(f"sandbox.faults: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
