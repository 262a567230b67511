"""Wallet service: the platform's single writer (deposit, withdraw, provider bet and settle).

Each write is one transaction: the lever checks, an append-only ledger row and the
player's bucket balance. The writer waits on locks for at most
SANDBOX_WALLET_LOCK_TIMEOUT_S and then answers 503, so a wedged database is an
answer, not a hung request. The contract is API.md.
"""

# No `from __future__ import annotations`: FastAPI evaluates the endpoint annotations.
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import psycopg
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from psycopg import errors as pgerr
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from sandbox.admin import run_service
from sandbox.config import WALLET_REQUIRED_SETTING, SandboxSettings
from sandbox.db import make_pool

__all__ = ["Write", "Writer", "create_app", "main"]

log = logging.getLogger("sandbox.wallet")

# Larger than any real single transaction, small enough that sums never leave BIGINT.
MAX_AMOUNT = 10**12
Key = Annotated[StrictStr, Field(min_length=1, max_length=128)]
Amount = Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT)]

Body = dict[str, Any]
FINANCE_MAINTENANCE: Body = {"status": 1, "msg": "Finance maintenance"}
INSUFFICIENT: Body = {"status": 2, "msg": "Insufficient balance"}
PLAYER_NOT_FOUND: Body = {"status": 3, "msg": "Player not found"}
UNKNOWN_ROUND: Body = {"status": 4, "msg": "Unknown round"}
KEY_REUSED: Body = {"status": 5, "msg": "Idempotency key already used for a different request"}
WRITER_UNAVAILABLE: Body = {"status": 503, "msg": "wallet writer unavailable"}
INTERNAL_ERROR: Body = {"status": 500, "msg": "Internal error"}


class MoneyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    player_id: Key
    amount: Amount
    ref: Key


class BetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    player_id: Key
    round_id: Key
    amount: Amount


class SettleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    player_id: Key
    round_id: Key
    win_amount: Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT)]


Kind = Literal["deposit", "withdraw", "bet", "settle"]


@dataclass(frozen=True)
class Write:
    """One requested wallet write. `amount` is signed as the ledger stores it."""

    kind: Kind
    player_id: str
    amount: int
    key: str  # ref for deposit/withdraw, round_id for bet/settle

    @property
    def key_column(self) -> str:
        return "ref" if self.kind in ("deposit", "withdraw") else "round_id"


def deposit(body: MoneyIn) -> Write:
    return Write("deposit", body.player_id, body.amount, body.ref)


def withdraw(body: MoneyIn) -> Write:
    return Write("withdraw", body.player_id, -body.amount, body.ref)


def bet(body: BetIn) -> Write:
    return Write("bet", body.player_id, -body.amount, body.round_id)


def settle(body: SettleIn) -> Write:
    return Write("settle", body.player_id, body.win_amount, body.round_id)


def success(player_id: str, balance: int, ledger_id: int) -> Body:
    return {"status": 0, "msg": "success",
            "data": {"player_id": player_id, "balance": balance, "ledger_id": ledger_id}}


class Refusal(Exception):
    """An answer other than success, decided inside the transaction (which then writes nothing)."""

    def __init__(self, http_status: int, body: Body, reason: str) -> None:
        super().__init__(reason)
        self.http_status = http_status
        self.body = body


def blocked_by_flags(flag_values: list[str | None]) -> bool:
    # Either policy key may carry the flag; `false` anywhere blocks (a JSON false and a
    # string "false" written by an SQL fallback both read back as 'false').
    return any(v is not None and v.strip().lower() == "false" for v in flag_values)


class Writer:
    def __init__(self, pool: ConnectionPool, lock_timeout_s: float) -> None:
        self.pool = pool
        self.lock_timeout_ms = max(1, int(lock_timeout_s * 1000))

    def _limits(self, conn: psycopg.Connection, lock_ms: int) -> None:
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{lock_ms}ms",))
        conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{lock_ms + 10_000}ms",))

    @staticmethod
    def fault_mode(conn: psycopg.Connection) -> str | None:
        row = conn.execute(
            "SELECT params->>'mode' FROM sandbox_fault WHERE name = 'wallet-wedged'"
        ).fetchone()
        return None if row is None else row[0]

    def execute(self, w: Write) -> tuple[int, Body]:
        try:
            try:
                status, body = self._attempt(w)
            except pgerr.UniqueViolation:
                # A concurrent request with the same key committed first; the retry replays its answer.
                status, body = self._attempt(w)
        except Refusal as r:
            status, body = r.http_status, r.body
            outcome = str(r)
        except (pgerr.LockNotAvailable, pgerr.QueryCanceled, PoolTimeout) as exc:
            status, body, outcome = 503, WRITER_UNAVAILABLE, f"unavailable ({type(exc).__name__})"
        except psycopg.OperationalError as exc:
            status, body, outcome = 503, WRITER_UNAVAILABLE, f"database unavailable ({type(exc).__name__})"
        else:
            outcome = "ok" if body["status"] == 0 else body["msg"]
        log.log(logging.ERROR if status >= 500 else logging.INFO,
                "write kind=%s player=%s amount=%d key=%s result=%s", w.kind, w.player_id, w.amount, w.key,
                outcome)
        return status, body

    def _attempt(self, w: Write) -> tuple[int, Body]:
        with self.pool.connection() as conn, conn.transaction():
            self._limits(conn, self.lock_timeout_ms)
            if self.fault_mode(conn) == "error":
                raise Refusal(500, INTERNAL_ERROR, "internal error (writer fault)")
            row = conn.execute("SELECT brand_id FROM player WHERE player_id = %s", (w.player_id,)).fetchone()
            if row is None:
                raise Refusal(404, PLAYER_NOT_FOUND, "player not found")
            brand_id: str = row[0]

            prior = conn.execute(
                f"SELECT player_id, amount, ledger_id, balance_after FROM ledger"
                f" WHERE kind = %s AND {w.key_column} = %s",
                (w.kind, w.key),
            ).fetchone()
            if prior is not None:
                if (prior[0], prior[1]) != (w.player_id, w.amount):
                    raise Refusal(409, KEY_REUSED, f"{w.key_column} reused for a different request")
                return 200, success(w.player_id, prior[3], prior[2])

            self._check_levers(conn, w, brand_id)
            if w.kind == "settle" and conn.execute(
                "SELECT 1 FROM ledger WHERE kind = 'bet' AND round_id = %s AND player_id = %s",
                (w.key, w.player_id),
            ).fetchone() is None:
                raise Refusal(200, UNKNOWN_ROUND, "unknown round")

            # The row lock serialises writes per player; a wedged table lock makes this wait.
            bal = conn.execute(
                "SELECT balance FROM bucket WHERE player_id = %s FOR UPDATE", (w.player_id,)
            ).fetchone()
            if bal is None:
                raise Refusal(500, INTERNAL_ERROR, "player has no bucket")
            new_balance = bal[0] + w.amount
            if w.amount < 0 and new_balance < 0:
                raise Refusal(200, INSUFFICIENT, "insufficient balance")
            ins = conn.execute(
                f"INSERT INTO ledger (player_id, brand_id, kind, amount, {w.key_column}, balance_after)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING ledger_id",
                (w.player_id, brand_id, w.kind, w.amount, w.key, new_balance),
            ).fetchone()
            assert ins is not None
            conn.execute(
                "UPDATE bucket SET balance = %s, updated_at = now() WHERE player_id = %s",
                (new_balance, w.player_id),
            )
            return 200, success(w.player_id, new_balance, ins[0])

    @staticmethod
    def _check_levers(conn: psycopg.Connection, w: Write, brand_id: str) -> None:
        """Seed 000 step 3 levers. FOR SHARE: once an admin's lever change commits, no write
        that read the old value can still be in flight."""
        row = conn.execute("SELECT is_active FROM maintenance WHERE id = 1 FOR SHARE").fetchone()
        if row is not None and row[0]:
            raise Refusal(200, FINANCE_MAINTENANCE, "platform maintenance")
        if w.kind == "deposit":
            var = conn.execute(
                "SELECT value FROM global_var WHERE code = 'DEPOSIT_MAINTENANCE_STATUS' FOR SHARE"
            ).fetchone()
            if var is not None and var[0].strip() == "1":
                raise Refusal(200, FINANCE_MAINTENANCE, "DEPOSIT_MAINTENANCE_STATUS=1")
        if w.kind in ("deposit", "withdraw"):
            flag = f"{w.kind}_enabled"
            values = conn.execute(
                "SELECT value->>%s FROM brand_config WHERE brand_id = %s FOR SHARE", (flag, brand_id)
            ).fetchall()
            if blocked_by_flags([v[0] for v in values]):
                raise Refusal(200, FINANCE_MAINTENANCE, f"brand {brand_id} {flag}=false")

    def balance(self, player_id: str) -> tuple[int, Body]:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT p.brand_id, b.balance FROM player p JOIN bucket b USING (player_id)"
                " WHERE p.player_id = %s",
                (player_id,),
            ).fetchone()
        if row is None:
            return 404, PLAYER_NOT_FOUND
        return 200, {"status": 0, "msg": "success",
                     "data": {"player_id": player_id, "brand_id": row[0], "balance": row[1]}}

    def probe(self) -> tuple[int, Body]:
        """A real write under the writer's locks, with a short lock timeout of its own."""
        probe_ms = min(self.lock_timeout_ms, 1000)
        try:
            with self.pool.connection(timeout=2.0) as conn, conn.transaction():
                self._limits(conn, probe_ms)
                if self.fault_mode(conn) == "error":
                    return 503, {"ok": False, "error": "write probe failed: Internal error"}
                conn.execute("LOCK TABLE bucket IN ROW EXCLUSIVE MODE")
                conn.execute("UPDATE wallet_heartbeat SET beat_at = now(), beats = beats + 1 WHERE id = 1")
        except pgerr.LockNotAvailable:
            return 503, {"ok": False, "error": f"bucket lock not granted within {probe_ms} ms"}
        except (psycopg.Error, PoolTimeout) as exc:
            return 503, {"ok": False, "error": f"database: {type(exc).__name__}: {exc}".strip()}
        return 200, {"ok": True}


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    settings = settings or SandboxSettings()
    writers: list[Writer] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Waiting for a pooled connection counts against the same budget as waiting on a lock.
        pool = make_pool(settings.dsn.get_secret_value(), name="sandbox-wallet", max_size=20,
                         timeout_s=settings.wallet_lock_timeout_s)
        writers.append(Writer(pool, settings.wallet_lock_timeout_s))
        yield
        writers.pop().pool.close()

    app = FastAPI(title="sandbox wallet service", lifespan=lifespan)

    def answer(result: tuple[int, Body]) -> JSONResponse:
        return JSONResponse(result[1], status_code=result[0])

    @app.post("/api/v1/wallet/deposit")
    def post_deposit(body: MoneyIn) -> JSONResponse:
        return answer(writers[0].execute(deposit(body)))

    @app.post("/api/v1/wallet/withdraw")
    def post_withdraw(body: MoneyIn) -> JSONResponse:
        return answer(writers[0].execute(withdraw(body)))

    @app.get("/api/v1/wallet/balance/{player_id}")
    def get_balance(player_id: str) -> JSONResponse:
        try:
            return answer(writers[0].balance(player_id))
        except (psycopg.OperationalError, PoolTimeout):
            return answer((503, WRITER_UNAVAILABLE))

    @app.post("/api/v1/provider/bet")
    def post_bet(body: BetIn) -> JSONResponse:
        return answer(writers[0].execute(bet(body)))

    @app.post("/api/v1/provider/settle")
    def post_settle(body: SettleIn) -> JSONResponse:
        return answer(writers[0].execute(settle(body)))

    @app.get("/internal/health")
    def internal_health() -> JSONResponse:
        return answer(writers[0].probe())

    return app


REQUIRED_SETTING = WALLET_REQUIRED_SETTING


def main() -> None:
    # Seed 002 §3.1: "Missing env var (`process.env.X!` throws on first read)" — exit at start, every start.
    if not os.environ.get(REQUIRED_SETTING):
        logging.basicConfig(level=logging.INFO)
        log.critical("FATAL: required setting %s is not set (host/wallet.env); exiting", REQUIRED_SETTING)
        sys.exit(78)  # EX_CONFIG
    settings = SandboxSettings()
    run_service(create_app(settings), settings, settings.wallet_port)


if __name__ == "__main__":
    main()
