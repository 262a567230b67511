"""PostgreSQL through psycopg 3: bound parameters only, errors mapped to the taxonomy.

Each call opens its own short connection (statement timeout and application name set
at connect) and closes it: a runbook issues a handful of queries, and a connection
broken by a timeout or an admin kill never poisons the next call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, LiteralString, Protocol, TypeAlias, runtime_checkable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from pydantic import SecretStr

from remediation.errors import AuthError, BadInputError, ClientError, PermanentError, RetryableError

__all__ = ["Database", "Params", "PsycopgDatabase", "Query", "Transaction", "map_psycopg_error"]

#: A literal SQL string (checked by the type checker) or a composed one; never a formatted value.
Query: TypeAlias = LiteralString | sql.SQL | sql.Composed
Params: TypeAlias = Sequence[Any] | Mapping[str, Any] | None

# SQLSTATEs where the same statement can succeed on a later attempt.
_RETRYABLE_STATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout)
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up, recovery)
    "53300",  # too_many_connections
    "53400",  # configuration_limit_exceeded
})
_RETRYABLE_CLASSES = ("08",)  # connection_exception
_AUTH_STATES = frozenset({"42501", "28000", "28P01"})
# Failures at connect carry no SQLSTATE in psycopg; libpq's text is all there is.
_AUTH_TEXT = re.compile(
    r"password authentication failed|no pg_hba\.conf entry|authentication failed|"
    r"no password supplied|role \".*\" does not exist|permission denied for database",
    re.IGNORECASE,
)


class Transaction(Protocol):
    """The handle `Database.transaction()` yields: statements on one connection, one transaction."""

    def fetch_all(self, query: Query, params: Params = None) -> list[dict[str, Any]]: ...
    def fetch_one(self, query: Query, params: Params = None) -> dict[str, Any] | None: ...
    def execute(self, query: Query, params: Params = None) -> int: ...


@runtime_checkable
class Database(Protocol):
    def fetch_all(self, query: Query, params: Params = None) -> list[dict[str, Any]]: ...
    def fetch_one(self, query: Query, params: Params = None) -> dict[str, Any] | None: ...
    def execute(self, query: Query, params: Params = None) -> int: ...
    def transaction(self) -> AbstractContextManager[Transaction]: ...
    def server_version(self) -> str: ...


def _check_query(query: object) -> None:
    # LiteralString is a type-checker promise only; refuse at runtime what clearly is not SQL text.
    if not isinstance(query, str | sql.SQL | sql.Composed):
        raise BadInputError(f"a query is a literal str or psycopg.sql.SQL/Composed, not {type(query).__name__}")


class _CursorTransaction:
    def __init__(self, cursor: psycopg.Cursor[DictRow]) -> None:
        self._cur = cursor

    def fetch_all(self, query: Query, params: Params = None) -> list[dict[str, Any]]:
        _check_query(query)
        self._cur.execute(query, params)
        return [dict(row) for row in self._cur.fetchall()] if self._cur.description else []

    def fetch_one(self, query: Query, params: Params = None) -> dict[str, Any] | None:
        _check_query(query)
        self._cur.execute(query, params)
        row = self._cur.fetchone() if self._cur.description else None
        return dict(row) if row is not None else None

    def execute(self, query: Query, params: Params = None) -> int:
        _check_query(query)
        self._cur.execute(query, params)
        return self._cur.rowcount


class PsycopgDatabase:
    """`Database` over psycopg 3. `conninfo` is a libpq DSN or URL; it never appears in an error."""

    def __init__(
        self,
        conninfo: SecretStr,
        *,
        connect_timeout: int = 5,
        statement_timeout_ms: int = 30_000,
        lock_timeout_ms: int | None = None,
        application_name: str = "remediation-pipelines",
        read_only: bool = False,
    ) -> None:
        if statement_timeout_ms <= 0 or connect_timeout <= 0:
            raise BadInputError("connect_timeout and statement_timeout_ms must be positive")
        self._conninfo = conninfo
        self._connect_timeout = int(connect_timeout)
        options = f"-c statement_timeout={int(statement_timeout_ms)}"
        if lock_timeout_ms is not None:
            options += f" -c lock_timeout={int(lock_timeout_ms)}"
        self._options = options
        self._application_name = application_name
        # Evidence capture opens read-only transactions: a stray write fails instead of landing.
        self._read_only = read_only

    def fetch_all(self, query: Query, params: Params = None) -> list[dict[str, Any]]:
        with self.transaction() as tx:
            return tx.fetch_all(query, params)

    def fetch_one(self, query: Query, params: Params = None) -> dict[str, Any] | None:
        with self.transaction() as tx:
            return tx.fetch_one(query, params)

    def execute(self, query: Query, params: Params = None) -> int:
        with self.transaction() as tx:
            return tx.execute(query, params)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One connection, one transaction: committed when the block ends, rolled back if it raises."""
        try:
            with self._connect() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                yield _CursorTransaction(cur)
        except psycopg.Error as exc:
            raise map_psycopg_error(exc, self._password()) from None

    def server_version(self) -> str:
        row = self.fetch_one("SHOW server_version")
        return str(row["server_version"]) if row else ""

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self._conninfo.get_secret_value(),
            connect_timeout=self._connect_timeout,
            application_name=self._application_name,
            options=self._options,
        )
        conn.read_only = self._read_only
        return conn

    def _password(self) -> str | None:
        try:
            return conninfo_to_dict(self._conninfo.get_secret_value()).get("password")  # type: ignore[return-value]
        except psycopg.Error:
            return None

    def __repr__(self) -> str:
        return f"PsycopgDatabase(application_name={self._application_name!r})"


def map_psycopg_error(exc: psycopg.Error, password: str | None = None) -> ClientError:
    """The taxonomy error for a psycopg error; the message never holds the password."""
    state = exc.sqlstate
    text = " ".join(str(exc).split())
    if password:
        text = text.replace(password, "***")
    # libpq can echo a URL-form DSN; hide any userinfo password that slipped through.
    text = re.sub(r"(postgres(?:ql)?://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    text = re.sub(r"(password\s*=\s*)\S+", r"\1***", text, flags=re.IGNORECASE)
    if len(text) > 300:
        text = text[:300] + "…"
    message = f"database: {type(exc).__name__}{f' [{state}]' if state else ''}: {text}"

    if state in _AUTH_STATES or (state is None and _AUTH_TEXT.search(text)):
        return AuthError(message)
    if state == "57014":  # query_canceled: a timeout is worth retrying, an operator's cancel is not
        return RetryableError(message) if "timeout" in text else PermanentError(message)
    if state in _RETRYABLE_STATES or (state and state.startswith(_RETRYABLE_CLASSES)):
        return RetryableError(message)
    if state is None and isinstance(exc, psycopg.OperationalError):
        # Refused, reset, closed, connect timeout: the network or the server, not the query.
        return RetryableError(message)
    return PermanentError(message)
