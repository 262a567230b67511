"""What capture-evidence reads from PostgreSQL: seed 001's investigation SQL, as literals with bound
parameters (key -> (what it shows, SQL)); tasks/database/activity.py runs them."""

from __future__ import annotations

from typing import LiteralString

__all__ = ["PG_QUERIES"]

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
