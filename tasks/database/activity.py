"""Read-only evidence from the data stores: PostgreSQL (seed 001's investigation SQL) and Redis.

Every PostgreSQL query is a literal with bound parameters, run in a read-only
transaction under the collector's statement timeout, on its own short connection
(application_name `rp-capture-evidence`, so the capture can tell itself apart in
pg_stat_activity). Redis is read over its own protocol (RESP): INFO, and a bounded
`--bigkeys`-style SCAN with MEMORY USAGE, so no redis-cli is needed on any host.
"""

from __future__ import annotations

import socket
from typing import Any, LiteralString

from prefect import task

from remediation.clients.database import PsycopgDatabase
from remediation.errors import AuthError, PermanentError, RetryableError
from remediation.evidence.bundle import EvidenceFile, now
from remediation.target.evidence_profile import EvidenceProfile, RedisCollector
from remediation.target.inventory import Target
from tasks.evidence import CollectorRecord, CollectorSpec, collect
from tasks.policy import READ_ONLY

__all__ = ["PG_QUERIES", "Resp", "capture_pg_query", "capture_redis"]

APPLICATION = "rp-capture-evidence"

_ACTIVITY_COLUMNS: LiteralString = """
    a.pid, a.usename, a.application_name, a.client_addr::text AS client_addr, a.backend_type, a.state,
    a.wait_event_type, a.wait_event, a.backend_start, a.xact_start, a.query_start, a.state_change,
    extract(epoch FROM now() - a.query_start) AS running_s, pg_blocking_pids(a.pid) AS blocked_by,
    left(a.query, 4000) AS query"""

#: key -> (what it shows, SQL). Seed 001 "Database Investigation" and seed 003 "pg_stat_activity".
PG_QUERIES: dict[str, tuple[str, LiteralString]] = {
    "activity": (
        "pg_stat_activity WHERE state <> 'idle'",
        "SELECT" + _ACTIVITY_COLUMNS + " FROM pg_stat_activity a"
        " WHERE a.state <> 'idle' AND a.pid <> pg_backend_pid()"
        " ORDER BY a.query_start NULLS LAST LIMIT %(limit)s",
    ),
    "locks": (
        "pg_locks WHERE NOT granted, and the locks held by whoever blocks them",
        "SELECT l.locktype, l.relation::regclass::text AS relation, l.mode, l.granted, l.pid,"
        " pg_blocking_pids(l.pid) AS blocked_by, a.application_name, a.state,"
        " extract(epoch FROM now() - a.query_start) AS running_s, left(a.query, 4000) AS query"
        " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted OR l.pid IN ("
        "   SELECT unnest(pg_blocking_pids(w.pid)) FROM pg_locks w WHERE NOT w.granted)"
        " ORDER BY l.granted, l.pid LIMIT %(limit)s",
    ),
    "long-queries": (
        "queries running longer than the profile's threshold",
        "SELECT" + _ACTIVITY_COLUMNS + " FROM pg_stat_activity a"
        " WHERE a.state <> 'idle' AND a.pid <> pg_backend_pid()"
        " AND now() - a.query_start > make_interval(secs => %(threshold_s)s)"
        " ORDER BY a.query_start LIMIT %(limit)s",
    ),
    "connections": (
        "connections by state",
        "SELECT coalesce(state, '(background)') AS state, count(*) AS connections"
        " FROM pg_stat_activity GROUP BY 1 ORDER BY 2 DESC LIMIT %(limit)s",
    ),
    "database-sizes": (
        "database sizes",
        "SELECT datname, CASE WHEN has_database_privilege(datname, 'CONNECT')"
        " THEN pg_database_size(datname) END AS bytes,"
        " CASE WHEN has_database_privilege(datname, 'CONNECT')"
        " THEN pg_size_pretty(pg_database_size(datname)) END AS size"
        " FROM pg_database WHERE datallowconn ORDER BY 2 DESC NULLS LAST LIMIT %(limit)s",
    ),
}


@task(name="capture-pg-query", **READ_ONLY)
def capture_pg_query(target: Target, profile: EvidenceProfile, spec: CollectorSpec, out_dir: str) -> CollectorRecord:
    summary, sql = PG_QUERIES[spec.params["query"]]
    params = {"limit": int(spec.params["limit"]), "threshold_s": float(spec.params["threshold_s"])}

    def body(out: EvidenceFile) -> None:
        cfg = target.database
        db = PsycopgDatabase(
            cfg.dsn.resolve(), connect_timeout=min(cfg.connect_timeout_s, max(1, int(spec.timeout_s))),
            statement_timeout_ms=int(spec.timeout_s * 1000), application_name=APPLICATION, read_only=True,
        )
        rows = db.fetch_all(sql, params)
        out.write_json({"shows": summary, "sql": " ".join(sql.split()), "params": params,
                        "captured_at": now().isoformat(), "row_count": len(rows), "rows": rows})

    return collect(spec, out_dir, target, profile, body)


class Resp:
    """The smallest Redis client that evidence needs: send a command, read one reply (RESP2)."""

    def __init__(self, address: str, port: int, timeout_s: float) -> None:
        try:
            self._sock = socket.create_connection((address, port), timeout=timeout_s)
        except OSError as exc:
            raise RetryableError(f"redis {address}:{port} unreachable: {exc}") from None
        self._file = self._sock.makefile("rb")

    def call(self, *args: str) -> Any:
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        try:
            self._sock.sendall(payload)
            return self._reply()
        except (OSError, TimeoutError) as exc:
            raise RetryableError(f"redis: {args[0]} failed: {type(exc).__name__}") from None

    def _reply(self) -> Any:
        line = self._file.readline().rstrip(b"\r\n")
        if not line:
            raise RetryableError("redis closed the connection")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            message = rest.decode(errors="replace")
            raise (AuthError if message.startswith(("NOAUTH", "WRONGPASS")) else PermanentError)(f"redis: {message}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._file.read(size + 2)[:-2].decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise PermanentError(f"redis: unexpected reply {line[:40]!r}")

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def _bigkeys(redis: Resp, cfg: RedisCollector) -> dict[str, Any]:
    cursor, seen, sizes = "0", 0, []
    while True:
        cursor, keys = redis.call("SCAN", cursor, "COUNT", "500")
        for key in keys:
            seen += 1
            usage = redis.call("MEMORY", "USAGE", key)
            sizes.append({"key": key, "type": redis.call("TYPE", key), "bytes": usage})
        if cursor == "0" or seen >= cfg.scan_limit:
            break
    sizes.sort(key=lambda k: -(k["bytes"] or 0))
    return {"keys_sampled": seen, "complete": cursor == "0", "top": sizes[: cfg.top]}


@task(name="capture-redis", **READ_ONLY)
def capture_redis(target: Target, profile: EvidenceProfile, spec: CollectorSpec, out_dir: str) -> CollectorRecord:
    """Seed 003: `redis-cli INFO` / `--bigkeys`, over the protocol (kind redis-info or redis-bigkeys)."""
    cfg = profile.redis
    assert cfg is not None

    def body(out: EvidenceFile) -> None:
        redis = Resp(cfg.address, cfg.port, cfg.timeout_s)
        try:
            if cfg.password is not None:
                redis.call("AUTH", cfg.password.resolve().get_secret_value())
            if spec.kind == "redis-info":
                out.write(str(redis.call("INFO", "everything")))
            else:
                out.write_json({"at": now().isoformat(), **_bigkeys(redis, cfg)})
        finally:
            redis.close()

    return collect(spec, out_dir, target, profile, body)
