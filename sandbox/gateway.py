"""Gateway: health of the deployed release, proxying to the wallet, the provider ingress block, and the edge
(sandbox/edge.py: access log, rate-limit hits, deny list).

It runs from the deploy host's `servers_v2` checkout (SANDBOX_RELEASE_DIR): at start it
imports that checkout's `gateway_hooks.py` and records `git rev-parse HEAD`, so a bad
deploy shows up as a failing `/health` while the process keeps serving, as a real
broken release would. The contract is API.md.
"""

# No `from __future__ import annotations`: FastAPI evaluates the Annotated aliases below.
import asyncio
import importlib.util
import itertools
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from sandbox.admin import TokenAuth, database_errors, iso, run_service
from sandbox.config import SandboxSettings
from sandbox.db import make_pool
from sandbox.edge import install as install_edge

__all__ = ["Release", "create_app", "load_release", "main", "proxy_headers"]

log = logging.getLogger("sandbox.gateway")

HOOKS_FILE = "gateway_hooks.py"
# Checks in /health/deep must answer while the thing they check is wedged.
CHECK_TIMEOUT_S = 2.0
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
})
PROVIDER_BLOCKED = {"status": 503, "msg": "Provider ingress blocked"}


@dataclass
class Release:
    """What the gateway loaded from the checkout at start."""

    directory: Path | None
    sha: str = "unknown"
    hooks: ModuleType | None = None
    error: str | None = None
    loaded_at: float = field(default_factory=time.time)

    def health(self) -> str | None:
        """None when healthy, else why not (the hook's exception, as an operator would see it)."""
        if self.hooks is None:
            return self.error or "release not loaded"
        try:
            result = self.hooks.health()
        except Exception as exc:
            return f"release health hook failed: {type(exc).__name__}: {exc}"
        if not isinstance(result, dict):
            return f"release health hook returned {type(result).__name__}, expected dict"
        if result.get("ok") is False:
            return f"release health hook reported not ok: {result}"
        return None


def _git_head(directory: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-c", f"safe.directory={directory}", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def load_release(directory: Path | None) -> Release:
    """Import the checkout's hooks from their file path; any failure is recorded, never raised."""
    if directory is None:
        return Release(None, error="SANDBOX_RELEASE_DIR is not set")
    release = Release(directory, sha=_git_head(directory))
    path = directory / HOOKS_FILE
    if not path.is_file():
        release.error = f"{HOOKS_FILE} not found in {directory}"
        return release
    name = "servers_v2_gateway_hooks"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if not callable(getattr(module, "health", None)):
            raise AttributeError(f"{HOOKS_FILE} defines no health()")
    except Exception as exc:
        sys.modules.pop(name, None)
        release.error = f"release failed to load: {type(exc).__name__}: {exc}"
        log.error("release %s: %s", release.sha, release.error)
        return release
    release.hooks = module
    log.info("release %s loaded from %s", release.sha, directory)
    return release


def proxy_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


class IngressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    blocked: StrictBool
    reason: StrictStr = Field(default="", max_length=500)


@dataclass
class _State:
    pool: ConnectionPool
    client: httpx.AsyncClient


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    settings = settings or SandboxSettings()
    auth = TokenAuth(settings.token_roles())
    release = load_release(settings.release_dir)
    states: list[_State] = []
    # Longer than the wallet's own lock-wait plus pool-wait budget, so a wedged writer's
    # 503 reaches the caller instead of being masked as a gateway timeout.
    upstream_timeout = httpx.Timeout(2 * settings.wallet_lock_timeout_s + 5.0, connect=CHECK_TIMEOUT_S)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool = make_pool(settings.dsn.get_secret_value(), name="sandbox-gateway", timeout_s=CHECK_TIMEOUT_S)
        client = httpx.AsyncClient(timeout=upstream_timeout)
        states.append(_State(pool, client))
        yield
        state = states.pop()
        await state.client.aclose()
        state.pool.close()

    app = FastAPI(title="sandbox gateway", lifespan=lifespan)
    database_errors(app, "gateway")
    Reader = Annotated[str, Depends(auth.require(action="read"))]
    SuperAdmin = Annotated[str, Depends(auth.require("super_admin", action="change provider ingress"))]

    @app.get("/health")
    def health() -> JSONResponse:
        error = release.health()
        if error is not None:
            return JSONResponse({"status": "error", "release": release.sha, "error": error}, status_code=500)
        return JSONResponse({"status": "ok", "release": release.sha})

    def check_database() -> dict[str, Any]:
        started = time.perf_counter()
        try:
            with states[0].pool.connection(timeout=CHECK_TIMEOUT_S) as conn, conn.transaction():
                conn.execute("SELECT set_config('statement_timeout', '2000ms', true)")
                conn.execute("SELECT 1")
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}".strip()
        return {"ok": error is None, "latency_ms": _ms(started), "error": error}

    async def check_wallet_writer() -> dict[str, Any]:
        started = time.perf_counter()
        try:
            # Where a request would go: the next instance, the one after it if that one refuses.
            resp = await _to_a_wallet("GET", httpx.URL("/internal/health"), b"", [], timeout=CHECK_TIMEOUT_S + 1.0)
            body = resp.json()
            error = None if resp.status_code == 200 and body.get("ok") is True else (
                f"HTTP {resp.status_code}: {body.get('error', body)}"
            )
        except (httpx.HTTPError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}".strip()
        return {"ok": error is None, "latency_ms": _ms(started), "error": error}

    @app.get("/health/deep")
    async def health_deep() -> JSONResponse:
        database, writer = await asyncio.gather(run_in_threadpool(check_database), check_wallet_writer())
        ok = database["ok"] and writer["ok"]
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "release": release.sha,
             "checks": {"database": database, "wallet_writer": writer}},
            status_code=200 if ok else 503,
        )

    def read_ingress() -> dict[str, Any]:
        with states[0].pool.connection() as conn:
            row = conn.execute(
                "SELECT blocked, reason, updated_at FROM gateway_ingress WHERE route = 'provider'"
            ).fetchone()
        if row is None:
            raise RuntimeError("gateway_ingress has no provider row; run `python -m sandbox.db init`")
        return {"blocked": row[0], "reason": row[1], "updated_at": iso(row[2])}

    @app.get("/api/v1/ingress/provider")
    def get_ingress(_role: Reader) -> dict[str, Any]:
        return read_ingress()

    @app.put("/api/v1/ingress/provider")
    def put_ingress(role: SuperAdmin, body: IngressIn) -> dict[str, Any]:
        with states[0].pool.connection() as conn, conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', '10s', true)")
            conn.execute(
                "INSERT INTO gateway_ingress (route, blocked, reason, updated_at)"
                " VALUES ('provider', %s, %s, now()) ON CONFLICT (route) DO UPDATE"
                " SET blocked = EXCLUDED.blocked, reason = EXCLUDED.reason, updated_at = now()",
                (body.blocked, body.reason),
            )
        log.info("provider ingress blocked=%s by role=%s", body.blocked, role)
        return read_ingress()

    wallets = settings.wallet_urls
    turn = itertools.count()

    async def _to_a_wallet(method: str, url: httpx.URL, body: bytes, headers: list[tuple[str, str]],
                           timeout: float | None = None) -> httpx.Response:
        """Round robin over the wallet instances; the next one only when one refuses the connection
        (nothing was sent, so a write cannot happen twice) — as nginx's `proxy_next_upstream error`."""
        first = next(turn)
        for i in range(len(wallets)):
            base = wallets[(first + i) % len(wallets)]
            try:
                return await states[0].client.request(
                    method, httpx.URL(base).join(url), content=body, headers=headers,
                    timeout=httpx.Timeout(timeout, connect=CHECK_TIMEOUT_S) if timeout else upstream_timeout)
            except httpx.ConnectError:
                if i == len(wallets) - 1:
                    raise
                log.info("wallet %s refused the connection; trying the next instance", base)
        raise AssertionError("unreachable")

    async def forward(request: Request) -> Response:
        url = httpx.URL(path=request.url.path, query=request.url.query.encode() or None)
        headers = proxy_headers(request.headers.items())
        if request.client is not None:
            headers.append(("x-forwarded-for", request.client.host))
        try:
            upstream = await _to_a_wallet(request.method, url, await request.body(), headers)
        except httpx.TimeoutException:
            log.warning("upstream timeout: %s %s", request.method, request.url.path)
            return JSONResponse({"detail": "upstream timeout"}, status_code=504)
        except httpx.TransportError as exc:
            log.warning("upstream unavailable: %s %s: %s", request.method, request.url.path,
                        type(exc).__name__)
            return JSONResponse({"detail": "upstream unavailable"}, status_code=502)
        # httpx has already decoded the body, so its content-encoding no longer applies.
        reply_headers = [(k, v) for k, v in proxy_headers(list(upstream.headers.items()))
                         if k.lower() != "content-encoding"]
        return Response(upstream.content, status_code=upstream.status_code, headers=dict(reply_headers))

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    @app.api_route("/api/v1/wallet/{path:path}", methods=methods)
    async def wallet_route(request: Request, path: str) -> Response:
        return await forward(request)

    @app.api_route("/api/v1/provider/{path:path}", methods=methods)
    async def provider_route(request: Request, path: str) -> Response:
        # Read per request from the database: the lever takes effect at once, and it survives restarts.
        ingress = await run_in_threadpool(read_ingress)
        if ingress["blocked"]:
            log.info("provider ingress blocked: %s %s", request.method, request.url.path)
            return JSONResponse(PROVIDER_BLOCKED, status_code=503)
        return await forward(request)

    return app


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def main() -> None:
    settings = SandboxSettings()
    app = create_app(settings)
    # The served gateway's edge (sandbox/edge.py): access log, rate-limit hits, the deny list (a denied
    # client gets 403 before anything else). Kept out of create_app so an app built in a test writes
    # no line to the stack's access log and reads no deny list.
    install_edge(app, settings.home, settings.host, TokenAuth(settings.token_roles()))
    run_service(app, settings, settings.gateway_port)


if __name__ == "__main__":
    main()
