"""Admin service: maintenance record, global vars, brand config, behind bearer tokens with roles.

Reached directly, not through the gateway (seed 000, step 3a). The contract is API.md.
The bearer-token check lives here and the gateway reuses it for its ingress lever.
"""

# No `from __future__ import annotations`: FastAPI must evaluate the Annotated aliases
# defined inside create_app(), which string annotations would hide from it.
import copy
import hmac
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from sandbox.config import ROLES, SLOW_WRITE_FILE, SandboxSettings
from sandbox.db import make_pool

__all__ = ["TokenAuth", "create_app", "database_errors", "main", "run_service"]

log = logging.getLogger("sandbox.admin")

CONFIG_KEYS = ("feature_policy", "payment_policy")
# Flags the wallet (or a future feature check) reads: a string "false" would look
# like a disabled flag to a human and like an enabled one to code, so refuse it.
BOOLEAN_FLAGS = ("deposit_enabled", "withdraw_enabled", "bets_enabled")
# An admin write must not hang behind a wedged transaction; the caller retries.
ADMIN_LOCK_TIMEOUT = "10s"


class TokenAuth:
    """Maps bearer tokens to roles. Comparison is constant-time; tokens are never logged."""

    def __init__(self, token_roles: dict[str, str]) -> None:
        unknown = sorted({r for r in token_roles.values() if r not in ROLES})
        if unknown:
            raise ValueError(f"SANDBOX_ADMIN_TOKENS names unknown roles {unknown}; known: {list(ROLES)}")
        self._pairs = [(t.encode(), r) for t, r in token_roles.items() if t]

    def role_of(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = token.strip().encode()
        found: str | None = None
        for known, role in self._pairs:
            if hmac.compare_digest(presented, known):
                found = role
        return found

    def require(self, *roles: str, action: str) -> Callable[[Request], str]:
        """A FastAPI dependency: the caller's role, or 401/403 with the contract's bodies."""
        allowed = roles or ROLES

        def dependency(request: Request) -> str:
            role = self.role_of(request.headers.get("authorization"))
            if role is None:
                raise HTTPException(
                    401, detail="missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
                )
            if role not in allowed:
                raise HTTPException(403, detail=f"role '{role}' may not {action}")
            return role

        return dependency


def database_errors(app: FastAPI, service: str) -> None:
    """Database trouble answers 503 (retryable) instead of a bare 500 with a traceback."""

    async def busy(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s: database busy or unavailable: %s", service, type(exc).__name__)
        return JSONResponse({"detail": "database unavailable, try again"}, status_code=503)

    app.add_exception_handler(psycopg.OperationalError, busy)
    app.add_exception_handler(PoolTimeout, busy)


def iso(ts: datetime) -> str:
    return ts.isoformat()


class MaintenanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    is_active: StrictBool
    message: StrictStr = Field(default="", max_length=500)


class GlobalVarIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: StrictStr = Field(max_length=256)


class BrandConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: dict[str, Any]

    @field_validator("value")
    @classmethod
    def flags_are_booleans(cls, value: dict[str, Any]) -> dict[str, Any]:
        for flag in BOOLEAN_FLAGS:
            if flag in value and not isinstance(value[flag], bool):
                raise ValueError(f"{flag} must be a JSON boolean (true/false)")
        return value


def _maintenance_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "is_active": row["is_active"],
        "message": row["message"],
        "updated_at": iso(row["updated_at"]),
        "updated_by": row["updated_by"],
    }


def _var_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"code": row["code"], "value": row["value"], "updated_at": iso(row["updated_at"])}


def _check_target(conn: psycopg.Connection[dict[str, Any]], brand_id: str, key: str) -> None:
    if conn.execute("SELECT 1 FROM brand WHERE brand_id = %s", (brand_id,)).fetchone() is None:
        raise HTTPException(404, detail=f"unknown brand '{brand_id}'")
    if key not in CONFIG_KEYS:
        raise HTTPException(404, detail=f"unknown config key '{key}'; known: {', '.join(CONFIG_KEYS)}")


def _config_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"brand_id": row["brand_id"], "key": row["key"], "value": row["value"],
            "updated_at": iso(row["updated_at"])}


STATUS_POSTS_KEPT = 1000


class StatusPost(BaseModel):
    text: str = Field(min_length=1, max_length=40_000)


def _slow_after_write(home: Path) -> None:
    try:
        delay = float((home / SLOW_WRITE_FILE).read_text() or "0")
    except (OSError, ValueError):
        return
    log.warning("fault admin-slow-write: answering %.0f s after the commit", delay)
    time.sleep(min(delay, 300))


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    settings = settings or SandboxSettings()
    auth = TokenAuth(settings.token_roles())
    pools: list[ConnectionPool] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pools.append(make_pool(settings.dsn.get_secret_value(), name="sandbox-admin"))
        yield
        pools.pop().close()

    app = FastAPI(title="sandbox admin service", lifespan=lifespan)
    database_errors(app, "admin")

    @contextmanager
    def tx() -> Iterator[psycopg.Connection[dict[str, Any]]]:
        # Committed before the response is sent: a 200 means the change is durable.
        with pools[0].connection() as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (ADMIN_LOCK_TIMEOUT,))
                yield conn  # type: ignore[misc]

    # Auth is a dependency, so it runs (and refuses) before any database work.
    Reader = Annotated[str, Depends(auth.require(action="read"))]
    SuperAdmin = Annotated[str, Depends(auth.require("super_admin", action="change maintenance"))]
    VarAdmin = Annotated[str, Depends(auth.require("super_admin", action="change global vars"))]
    ConfigAdmin = Annotated[
        str, Depends(auth.require("super_admin", "brand_admin", action="change brand config"))
    ]

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # A stand-in for the on-call channel: takes Slack incoming-webhook posts and shows them back.
    status_posts: list[dict[str, Any]] = []

    @app.post("/hooks/status")
    def post_status(body: StatusPost) -> dict[str, bool]:
        status_posts.append({"at": datetime.now(UTC).isoformat(), "text": body.text})
        del status_posts[:-STATUS_POSTS_KEPT]
        return {"ok": True}

    @app.get("/hooks/status")
    def read_status(_role: Reader) -> list[dict[str, Any]]:
        return status_posts

    @app.get("/api/v1/maintenance")
    def get_maintenance(_role: Reader) -> dict[str, Any]:
        with tx() as conn:
            row = conn.execute("SELECT * FROM maintenance WHERE id = 1").fetchone()
        if row is None:
            raise HTTPException(500, detail="maintenance record missing; run `python -m sandbox.db init`")
        return _maintenance_out(row)

    @app.put("/api/v1/maintenance")
    def put_maintenance(role: SuperAdmin, body: MaintenanceIn) -> dict[str, Any]:
        with tx() as conn:
            row = conn.execute(
                "INSERT INTO maintenance (id, is_active, message, updated_at, updated_by)"
                " VALUES (1, %s, %s, now(), %s) ON CONFLICT (id) DO UPDATE SET"
                " is_active = EXCLUDED.is_active, message = EXCLUDED.message,"
                " updated_at = now(), updated_by = EXCLUDED.updated_by RETURNING *",
                (body.is_active, body.message, role),
            ).fetchone()
        assert row is not None
        log.info("maintenance set is_active=%s by role=%s", body.is_active, role)
        return _maintenance_out(row)

    @app.get("/api/v1/global-vars/{code}")
    def get_global_var(_role: Reader, code: str) -> dict[str, Any]:
        with tx() as conn:
            row = conn.execute("SELECT * FROM global_var WHERE code = %s", (code,)).fetchone()
        if row is None:
            raise HTTPException(404, detail=f"unknown global var '{code}'")
        return _var_out(row)

    @app.put("/api/v1/global-vars/{code}")
    def put_global_var(role: VarAdmin, code: str, body: GlobalVarIn) -> dict[str, Any]:
        with tx() as conn:
            row = conn.execute(
                "UPDATE global_var SET value = %s, updated_at = now() WHERE code = %s RETURNING *",
                (body.value, code),
            ).fetchone()
        if row is None:
            raise HTTPException(404, detail=f"unknown global var '{code}'")
        log.info("global var %s set to %r by role=%s", code, body.value, role)
        _slow_after_write(settings.home)
        return _var_out(row)

    @app.get("/api/v1/brands")
    def list_brands(_role: Reader) -> list[dict[str, Any]]:
        with tx() as conn:
            return conn.execute("SELECT brand_id, name FROM brand ORDER BY brand_id").fetchall()

    @app.get("/api/v1/brands/{brand_id}/config/{key}")
    def get_config(_role: Reader, brand_id: str, key: str) -> dict[str, Any]:
        with tx() as conn:
            _check_target(conn, brand_id, key)
            row = conn.execute(
                "SELECT * FROM brand_config WHERE brand_id = %s AND key = %s", (brand_id, key)
            ).fetchone()
        if row is None:
            raise HTTPException(404, detail=f"brand '{brand_id}' has no '{key}'")
        return _config_out(row)

    def write_config(
        brand_id: str, key: str, value: dict[str, Any], mode: Literal["replace", "merge"], role: str
    ) -> dict[str, Any]:
        new_value = "EXCLUDED.value" if mode == "replace" else "brand_config.value || EXCLUDED.value"
        with tx() as conn:
            _check_target(conn, brand_id, key)
            row = conn.execute(
                "INSERT INTO brand_config (brand_id, key, value, updated_at) VALUES (%s, %s, %s, now())"
                f" ON CONFLICT (brand_id, key) DO UPDATE SET value = {new_value}, updated_at = now()"
                " RETURNING *",
                (brand_id, key, Jsonb(value)),
            ).fetchone()
        assert row is not None
        log.info("brand_config %s/%s %s keys=%s by role=%s", brand_id, key, mode, sorted(value), role)
        return _config_out(row)

    @app.put("/api/v1/brands/{brand_id}/config/{key}")
    def put_config(role: ConfigAdmin, brand_id: str, key: str, body: BrandConfigIn) -> dict[str, Any]:
        return write_config(brand_id, key, body.value, "replace", role)

    @app.patch("/api/v1/brands/{brand_id}/config/{key}")
    def patch_config(role: ConfigAdmin, brand_id: str, key: str, body: BrandConfigIn) -> dict[str, Any]:
        return write_config(brand_id, key, body.value, "merge", role)

    return app


def run_service(app: FastAPI, settings: SandboxSettings, port: int) -> None:
    """Serve on loopback with an access log on stderr (request lines only: no headers, no tokens)."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # One line per proxied request is already in the access log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # uvicorn's default sends the access log to stdout; one stream keeps one ordered log file.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    for formatter in log_config["formatters"].values():
        formatter["fmt"] = "%(asctime)s " + formatter["fmt"]
    uvicorn.run(app, host=settings.host, port=port, access_log=True, log_level="info", log_config=log_config)


def main() -> None:
    settings = SandboxSettings()
    run_service(create_app(settings), settings, settings.admin_port)


if __name__ == "__main__":
    main()
