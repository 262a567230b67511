"""The gateway's edge: an access log with each client's address, a per-address rate limiter that
records its hits, and a deny list of addresses and networks, each with an expiry. The contract is API.md.

- **Access log**: one line per request in `$SANDBOX_HOME/logs/gateway-access.log`, nginx `combined`
  plus `rt=<seconds>` and `limit_req=<PASSED|REJECTED|REJECTED_DRY_RUN|->` (nginx's `$limit_req_status`),
  so seed 002 §3.7's `awk '{print $1}' | sort | uniq -c | sort -rn | head` works on it as on nginx's.
- **Rate limiter**: a token bucket per client address (`SANDBOX_GATEWAY_RATE_PER_S`, `_BURST`). By
  default it only records (nginx's `limit_req_dry_run on`): the drills share one gateway and their
  traffic all comes from 127.0.0.1. `SANDBOX_GATEWAY_RATE_ENFORCE=1` refuses with 429 instead.
- **Deny list**: a client inside a listed network gets `403 {"status": 403, "msg": "Source address
  denied"}` before anything else (logged, never rate-limited, never proxied). An entry lifts itself at
  its `expires_at`. The list is a JSON file written atomically (`$SANDBOX_HOME/gateway/deny-list.json`),
  so it survives a gateway restart; it is read and changed through `/api/v1/edge/deny` with the admin
  bearer (any role reads, `super_admin` changes). A network that is every address, or that holds the
  gateway's own address, is refused (422).
"""

# No `from __future__ import annotations`: FastAPI evaluates the Annotated aliases below.
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sandbox.admin import TokenAuth

__all__ = ["ACCESS_LOG", "DENIED", "DENY_FILE", "AccessLog", "DenyList", "EdgeMiddleware", "EdgeSettings",
           "RateLimiter", "access_log_path", "deny_file_path", "deny_router", "install"]

log = logging.getLogger("sandbox.gateway.edge")

ACCESS_LOG = "gateway-access.log"
DENY_FILE = "deny-list.json"
DENIED = {"status": 403, "msg": "Source address denied"}
TOO_MANY = {"status": 429, "msg": "Too many requests"}
MAX_EXPIRY_S = 30 * 86_400

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANDBOX_GATEWAY_", extra="ignore")

    #: Requests per second per client address, and how many may come at once above it.
    rate_per_s: float = Field(default=50.0, gt=0)
    rate_burst: int = Field(default=100, ge=1)
    #: Off (the default): hits are only recorded in the access log, as nginx's `limit_req_dry_run on`.
    rate_enforce: bool = False


def access_log_path(home: Path) -> Path:
    return home / "logs" / ACCESS_LOG


def deny_file_path(home: Path) -> Path:
    return home / "gateway" / DENY_FILE


def _canonical(net: Network) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _network(text: str) -> Network:
    net = ipaddress.ip_network(text, strict=True)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen == 128 and net.network_address.ipv4_mapped:
        return ipaddress.ip_network(net.network_address.ipv4_mapped)
    return net


def _client(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True)
class _Entry:
    network: Network
    expires_at: float | None
    reason: str
    added_at: float
    added_by: str

    def live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def as_dict(self) -> dict[str, Any]:
        return {"address": _canonical(self.network), "expires_at": _iso(self.expires_at), "reason": self.reason,
                "added_at": _iso(self.added_at), "added_by": self.added_by}


class DenyList:
    """The deny list, in memory for the per-request check, in a file for restarts. Writers (the admin
    routes, in FastAPI's thread pool) replace the dict whole, so the check never sees one half-changed."""

    def __init__(self, path: Path, own_address: str) -> None:
        self.path = path
        self.own = _client(own_address)
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("deny list %s unreadable (%s): starting with what it held before: nothing", self.path, exc)
            return
        for item in raw.get("entries", []):
            try:
                net = _network(item["address"])
            except (KeyError, ValueError):
                continue
            self._entries[_canonical(net)] = _Entry(net, item.get("expires_at"), item.get("reason", ""),
                                                    item.get("added_at") or time.time(), item.get("added_by", ""))

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        entries = [{"address": k, "expires_at": e.expires_at, "reason": e.reason, "added_at": e.added_at,
                    "added_by": e.added_by} for k, e in self._entries.items()]
        with tmp.open("w") as f:
            json.dump({"entries": entries}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def check_address(self, text: str) -> Network:
        """The canonical network for `text`, or ValueError saying why it may not be listed."""
        net = _network(text)
        if net.prefixlen == 0:
            raise ValueError(f"{text} is every address: it would deny every client")
        if self.own is not None and self.own.version == net.version and self.own in net:
            raise ValueError(f"{text} holds the gateway's own address {self.own}")
        return net

    def denied(self, host: str) -> bool:
        if not self._entries:
            return False
        addr = _client(host)
        if addr is None:
            return False
        now = time.time()
        return any(e.live(now) and addr.version == e.network.version and addr in e.network
                   for e in self._entries.values())

    def entries(self) -> list[dict[str, Any]]:
        now = time.time()
        return [e.as_dict() for e in self._entries.values() if e.live(now)]

    def get(self, address: str) -> dict[str, Any] | None:
        entry = self._entries.get(address)
        return entry.as_dict() if entry is not None and entry.live(time.time()) else None

    def put(self, net: Network, expires_in_s: float | None, reason: str, by: str) -> tuple[dict[str, Any], bool]:
        """Add or replace the entry; (entry, whether a live entry for it was there before)."""
        key, now = _canonical(net), time.time()
        with self._lock:
            self._prune(now)
            existed = key in self._entries
            entry = _Entry(net, None if expires_in_s is None else now + expires_in_s, reason, now, by)
            self._entries = {**self._entries, key: entry}
            self._save()
            return entry.as_dict(), existed

    def delete(self, net: Network) -> bool:
        key, now = _canonical(net), time.time()
        with self._lock:
            self._prune(now)
            if key not in self._entries:
                return False
            self._entries = {k: e for k, e in self._entries.items() if k != key}
            self._save()
            return True

    def _prune(self, now: float) -> None:
        self._entries = {k: e for k, e in self._entries.items() if e.live(now)}


class RateLimiter:
    """A token bucket per client address (nginx `limit_req`: rate and burst)."""

    def __init__(self, rate_per_s: float, burst: int, enforce: bool) -> None:
        self.rate, self.burst, self.enforce = rate_per_s, float(burst), enforce
        self._buckets: dict[str, tuple[float, float]] = {}
        self._checked = 0

    def check(self, host: str) -> str:
        """nginx's `$limit_req_status` for this request: PASSED, REJECTED or REJECTED_DRY_RUN."""
        now = time.monotonic()
        tokens, at = self._buckets.get(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[host] = (tokens - 1, now)
            status = "PASSED"
        else:
            self._buckets[host] = (tokens, now)
            status = "REJECTED" if self.enforce else "REJECTED_DRY_RUN"
        self._checked += 1
        if self._checked % 10_000 == 0:  # forget addresses idle long enough to have a full bucket again
            idle = self.burst / self.rate
            self._buckets = {h: v for h, v in self._buckets.items() if now - v[1] < idle}
        return status


def _escape(text: str) -> str:
    """nginx's access-log escaping: `"`, `\\` and non-printable bytes as \\xHH."""
    out: list[str] = []
    for ch in text:
        if ch in '"\\' or not 0x20 <= ord(ch) < 0x7F:
            out.extend(f"\\x{b:02X}" for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    return "".join(out)


class AccessLog:
    """Appends one line per request; a write error is logged once and never fails a request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = path.open("a", buffering=1)
        self._warned = False

    def write(self, line: str) -> None:
        if self._file is None:
            return
        try:
            self._file.write(line + "\n")
        except OSError as exc:
            if not self._warned:
                log.error("access log %s: %s", self.path, exc)
                self._warned = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


class EdgeMiddleware:
    """Pure ASGI, outermost: deny → rate limit → the app; every request logged with its answer."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, deny: DenyList,
                 limiter: RateLimiter, access: AccessLog) -> None:
        self.app, self.deny, self.limiter, self.access = app, deny, limiter, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        host = (scope.get("client") or ("-", 0))[0]
        seen = {"status": 500, "bytes": 0}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        limit = "-"
        try:
            if self.deny.denied(host):
                await _answer(sending, 403, DENIED)
                return
            limit = self.limiter.check(host)
            if limit == "REJECTED":
                await _answer(sending, 429, TOO_MANY)
                return
            await self.app(scope, receive, sending)
        finally:
            self.access.write(self._line(scope, host, seen, limit, started))

    @staticmethod
    def _line(scope: Scope, host: str, seen: dict[str, int], limit: str, started: float) -> str:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("raw_path", b"").decode("latin-1") or scope.get("path", "")
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{path}?{query}" if query else path
        request = f"{scope.get('method', '-')} {target} HTTP/{scope.get('http_version', '1.1')}"
        stamp = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
        return (f'{host} - - [{stamp}] "{_escape(request)}" {seen["status"]} {seen["bytes"]} '
                f'"{_escape(headers.get("referer", "-"))}" "{_escape(headers.get("user-agent", "-"))}" '
                f"rt={time.perf_counter() - started:.3f} limit_req={limit}")


class DenyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Seconds until the entry lifts itself; null: never (only a DELETE lifts it).
    expires_in_s: float | None = Field(default=None, gt=0, le=MAX_EXPIRY_S)
    reason: StrictStr = Field(default="", max_length=500)


def deny_router(deny: DenyList, auth: TokenAuth) -> APIRouter:
    router = APIRouter()
    Reader = Annotated[str, Depends(auth.require(action="read"))]
    SuperAdmin = Annotated[str, Depends(auth.require("super_admin", action="change the deny list"))]

    def network(address: str) -> Network:
        try:
            return deny.check_address(address)
        except ValueError as exc:
            raise HTTPException(422, detail=f"address {address!r} refused: {exc}") from None

    @router.get("/api/v1/edge/deny")
    def list_denied(_role: Reader) -> dict[str, Any]:
        return {"entries": deny.entries(), "now": datetime.now(UTC).isoformat()}

    @router.get("/api/v1/edge/deny/{address:path}")
    def get_denied(_role: Reader, address: str) -> dict[str, Any]:
        entry = deny.get(_canonical(network(address)))
        if entry is None:
            raise HTTPException(404, detail=f"{address} is not denied")
        return entry

    @router.put("/api/v1/edge/deny/{address:path}")
    def put_denied(role: SuperAdmin, address: str, body: DenyIn) -> dict[str, Any]:
        entry, existed = deny.put(network(address), body.expires_in_s, body.reason, role)
        log.info("deny list: %s %s until %s by role=%s", "replaced" if existed else "added", entry["address"],
                 entry["expires_at"] or "lifted by hand", role)
        return {**entry, "replaced": existed}

    @router.delete("/api/v1/edge/deny/{address:path}")
    def delete_denied(role: SuperAdmin, address: str) -> dict[str, Any]:
        net = network(address)
        removed = deny.delete(net)
        log.info("deny list: %s %s by role=%s", "lifted" if removed else "nothing to lift for", _canonical(net), role)
        return {"address": _canonical(net), "removed": removed}

    return router


def install(app: Any, home: Path, own_address: str, auth: TokenAuth) -> DenyList:
    """The edge around `app`: the deny list's routes, then the middleware (outermost)."""
    settings = EdgeSettings()
    deny = DenyList(deny_file_path(home), own_address)
    app.include_router(deny_router(deny, auth))
    app.add_middleware(EdgeMiddleware, deny=deny, access=AccessLog(access_log_path(home)),
                       limiter=RateLimiter(settings.rate_per_s, settings.rate_burst, settings.rate_enforce))
    return deny
