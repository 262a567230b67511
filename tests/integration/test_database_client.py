"""PsycopgDatabase against the stack's real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from remediation.clients import Database, PsycopgDatabase
from remediation.errors import AuthError, BadInputError, PermanentError, RetryableError
from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration

INJECTION = "x'; DROP TABLE player; --"


@pytest.fixture
def db(stack: StackInfo) -> PsycopgDatabase:
    return PsycopgDatabase(stack.platform_dsn, connect_timeout=5, statement_timeout_ms=5_000,
                           application_name="rp-client-test")


@pytest.fixture
def scratch_table(db: PsycopgDatabase) -> Iterator[sql.Identifier]:
    name = sql.Identifier(f"rp_client_test_{uuid.uuid4().hex[:12]}")
    db.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, note text NOT NULL)").format(name))
    yield name
    db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))


def test_is_a_database_and_reports_version_and_application_name(db: PsycopgDatabase) -> None:
    assert isinstance(db, Database)
    assert db.server_version()[:2].isdigit()
    row = db.fetch_one("SELECT current_setting('application_name') AS app, current_setting('statement_timeout') AS st")
    assert row == {"app": "rp-client-test", "st": "5s"}


def test_bound_parameters_treat_injection_as_data(db: PsycopgDatabase) -> None:
    assert db.fetch_one("SELECT %s::text AS v", (INJECTION,)) == {"v": INJECTION}
    assert db.fetch_all("SELECT player_id FROM player WHERE player_id = %(p)s", {"p": INJECTION}) == []
    # The table the string tried to drop is still there.
    assert db.fetch_one("SELECT count(*) AS n FROM player")["n"] > 0  # type: ignore[index]


def test_execute_returns_rowcount_and_transaction_is_atomic(db: PsycopgDatabase, scratch_table: sql.Identifier) -> None:
    insert = sql.SQL("INSERT INTO {} (id, note) VALUES (%s, %s)").format(scratch_table)
    assert db.execute(insert, (1, INJECTION)) == 1
    with db.transaction() as tx:
        tx.execute(insert, (2, "two"))
        assert tx.execute(sql.SQL("UPDATE {} SET note = note || %s").format(scratch_table), ("!",)) == 2
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute(insert, (3, "three"))
        raise RuntimeError("abort midway")
    rows = db.fetch_all(sql.SQL("SELECT id, note FROM {} ORDER BY id").format(scratch_table))
    assert rows == [{"id": 1, "note": INJECTION + "!"}, {"id": 2, "note": "two!"}]


def test_a_failing_statement_rolls_the_whole_transaction_back(
    db: PsycopgDatabase, scratch_table: sql.Identifier
) -> None:
    insert = sql.SQL("INSERT INTO {} (id, note) VALUES (%s, %s)").format(scratch_table)
    with pytest.raises(PermanentError, match="UniqueViolation"), db.transaction() as tx:
        tx.execute(insert, (1, "a"))
        tx.execute(insert, (1, "duplicate"))
    assert db.fetch_all(sql.SQL("SELECT id FROM {}").format(scratch_table)) == []


def test_statement_timeout_is_retryable(stack: StackInfo) -> None:
    quick = PsycopgDatabase(stack.platform_dsn, statement_timeout_ms=200)
    with pytest.raises(RetryableError, match="statement timeout"):
        quick.fetch_one("SELECT pg_sleep(3)")


def test_wrong_password_is_auth_and_no_password_leaks(stack: StackInfo) -> None:
    parts = conninfo_to_dict(stack.platform_dsn.get_secret_value())
    real = str(parts.get("password") or "")
    wrong = "Wr0ng-" + uuid.uuid4().hex
    bad = PsycopgDatabase(SecretStr(make_conninfo(**{**parts, "password": wrong})))  # type: ignore[arg-type]
    with pytest.raises(AuthError) as info:
        bad.fetch_one("SELECT 1")
    text = f"{info.value} {info.value!r}"
    assert wrong not in text and (not real or real not in text)
    assert "password authentication failed" in text


def test_insufficient_privilege_is_auth(db: PsycopgDatabase) -> None:
    with pytest.raises(AuthError, match="42501"):
        db.fetch_all("SELECT * FROM pg_authid")


def test_refused_connection_is_retryable(stack: StackInfo) -> None:
    parts = conninfo_to_dict(stack.platform_dsn.get_secret_value())
    down = PsycopgDatabase(SecretStr(make_conninfo(**{**parts, "port": "1"})), connect_timeout=2)  # type: ignore[arg-type]
    with pytest.raises(RetryableError) as info:
        down.fetch_one("SELECT 1")
    assert str(parts.get("password")) not in str(info.value)


def test_read_only_refuses_writes(stack: StackInfo, scratch_table: sql.Identifier) -> None:
    ro = PsycopgDatabase(stack.platform_dsn, read_only=True)
    assert ro.fetch_one("SELECT 1 AS one") == {"one": 1}
    with pytest.raises(PermanentError, match="read-only"):
        ro.execute(sql.SQL("INSERT INTO {} (id, note) VALUES (%s, %s)").format(scratch_table), (9, "x"))


def test_syntax_error_is_permanent_and_non_sql_is_refused(db: PsycopgDatabase) -> None:
    with pytest.raises(PermanentError, match="SyntaxError"):
        db.fetch_all("SELEC 1")
    with pytest.raises(BadInputError):
        db.fetch_all(b"SELECT 1")  # type: ignore[arg-type]
