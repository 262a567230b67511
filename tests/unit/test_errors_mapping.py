"""Each client's library errors land in the right place of the taxonomy, without secrets."""

from __future__ import annotations

import pickle
from typing import Any

import psycopg
import psycopg.errors as pg
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from remediation.clients.database import map_psycopg_error
from remediation.clients.evidence_store import map_boto_error
from remediation.clients.remote_host import CommandResult, build_command
from remediation.errors import (
    AuthError,
    BadInputError,
    CommandFailedError,
    ConflictError,
    NotFoundError,
    PermanentError,
    PushRejectedError,
    RetryableError,
    is_retryable,
)

PASSWORD = "pw-Very-Secret-77"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (pg.SerializationFailure("could not serialize access"), RetryableError),
        (pg.DeadlockDetected("deadlock detected"), RetryableError),
        (pg.AdminShutdown("terminating connection due to administrator command"), RetryableError),
        (pg.LockNotAvailable("canceling statement due to lock timeout"), RetryableError),
        (pg.QueryCanceled("canceling statement due to statement timeout"), RetryableError),
        (pg.QueryCanceled("canceling statement due to user request"), PermanentError),
        (pg.TooManyConnections("sorry, too many clients already"), RetryableError),
        (pg.InsufficientPrivilege("permission denied for table ledger"), AuthError),
        (pg.InvalidPassword("password authentication failed"), AuthError),
        (pg.UniqueViolation("duplicate key value"), PermanentError),
        (pg.UndefinedTable('relation "nope" does not exist'), PermanentError),
        (pg.InvalidTextRepresentation("invalid input syntax for type integer"), PermanentError),
        (psycopg.OperationalError("connection failed: Connection refused"), RetryableError),
        (psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
         RetryableError),
        (psycopg.OperationalError(
            'connection failed: connection to server at "db" (10.0.0.5), port 5432 failed: '
            'FATAL:  password authentication failed for user "wallet_app"'), AuthError),
        (psycopg.OperationalError('FATAL:  no pg_hba.conf entry for host "10.1.1.1"'), AuthError),
    ],
)
def test_psycopg_errors(exc: psycopg.Error, expected: type[Exception]) -> None:
    mapped = map_psycopg_error(exc, PASSWORD)
    assert type(mapped) is expected
    assert mapped.__class__.__name__ and type(exc).__name__ in str(mapped)


def test_psycopg_messages_never_hold_the_password() -> None:
    exc = psycopg.OperationalError(
        f"connection to postgresql://app:{PASSWORD}@db:5432/wallet failed; password={PASSWORD} host=db"
    )
    text = str(map_psycopg_error(exc, PASSWORD))
    assert PASSWORD not in text and "app" in text
    # Without knowing the password, URL userinfo and password= are still blanked.
    text2 = str(map_psycopg_error(exc, None))
    assert PASSWORD not in text2


def _client_error(code: str, status: int, op: str = "HeadObject") -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": f"{code} happened"},
                     "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, op)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (EndpointConnectionError(endpoint_url="http://s3.test"), RetryableError),
        (ConnectTimeoutError(endpoint_url="http://s3.test"), RetryableError),
        (ReadTimeoutError(endpoint_url="http://s3.test"), RetryableError),
        (NoCredentialsError(), AuthError),
        (_client_error("AccessDenied", 403), AuthError),
        (_client_error("InvalidAccessKeyId", 403), AuthError),
        (_client_error("SignatureDoesNotMatch", 403), AuthError),
        (_client_error("NoSuchKey", 404), NotFoundError),
        (_client_error("NoSuchBucket", 404), NotFoundError),
        (_client_error("404", 404), NotFoundError),
        (_client_error("InternalError", 500), RetryableError),
        (_client_error("ServiceUnavailable", 503), RetryableError),
        (_client_error("SlowDown", 503), RetryableError),
        (_client_error("OperationAborted", 409), ConflictError),
        (_client_error("InvalidArgument", 400), PermanentError),
    ],
)
def test_boto_errors(exc: Exception, expected: type[Exception]) -> None:
    assert type(map_boto_error(exc, "head s3://b/k")) is expected


def test_upload_failures_are_unwrapped_to_the_real_error() -> None:
    try:
        try:
            raise _client_error("AccessDenied", 403, "PutObject")
        except ClientError as inner:
            raise S3UploadFailedError(f"Failed to upload: {inner}")  # noqa: B904 - boto3 does exactly this
    except S3UploadFailedError as exc:
        mapped = map_boto_error(exc, "put s3://b/k")
    assert isinstance(mapped, AuthError) and "AccessDenied" in str(mapped)


def test_command_result_check() -> None:
    ok = CommandResult(command="true", exit_code=0, stdout="", stderr="", duration_s=0.1)
    assert ok.check() is ok
    failed = CommandResult(command="make", exit_code=2, stdout="", stderr="x" * 5000 + "\nboom", duration_s=1)
    with pytest.raises(CommandFailedError, match=r"`make` exited 2: x+\nboom") as info:
        failed.check()
    assert len(str(info.value)) < 2200
    signalled = CommandResult(command="sleep 9", exit_code=-1, stdout="", stderr="", duration_s=1)
    with pytest.raises(CommandFailedError, match="killed by a signal"):
        signalled.check()


@pytest.mark.parametrize(
    ("argv", "cwd", "expected"),
    [
        (["git", "-C", "/srv/app", "log", "-1"], None, "git -C /srv/app log -1"),
        (["echo", "a b", "$(id)"], None, "echo 'a b' '$(id)'"),
        (["ls"], "/srv/my app", "cd '/srv/my app' && ls"),
        (["ls"], "/x; rm -rf /", "cd '/x; rm -rf /' && ls"),
    ],
)
def test_build_command_quotes_every_argument(argv: list[str], cwd: str | None, expected: str) -> None:
    assert build_command(argv, cwd) == expected


@pytest.mark.parametrize("argv", ["rm -rf /", b"ls", [], ["ls", None], ["a\x00b"]])
def test_build_command_refuses_non_lists(argv: object) -> None:
    with pytest.raises(BadInputError):
        build_command(argv)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc", [CommandFailedError("`x` exited 3: boom", 3), PushRejectedError("moved"), RetryableError("again")]
)
def test_errors_survive_pickling(exc: Exception) -> None:
    # Prefect persists a failed task's exception; one that cannot round-trip loses the reason.
    back = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
    assert type(back) is type(exc) and str(back) == str(exc)
    if isinstance(back, CommandFailedError):
        assert back.exit_code == 3


def test_taxonomy_relations() -> None:
    assert issubclass(PushRejectedError, ConflictError) and issubclass(CommandFailedError, PermanentError)
    assert is_retryable(RetryableError("x")) and not is_retryable(PushRejectedError("x"))


def test_output_capture_keeps_the_tail_and_survives_a_broken_callback() -> None:
    from remediation.clients.remote_host import _Capture

    seen: list[str] = []

    def flaky(line: str) -> None:
        seen.append(line)
        if line == "b":
            raise RuntimeError("log sink down")

    cap = _Capture(8, flaky)
    cap.feed(b"a\nb\nc\n")
    cap.feed("é".encode()[:1])  # a UTF-8 character split across two reads
    cap.feed("é".encode()[1:] + b"end")
    assert cap.finish().endswith("éend") and cap.truncated
    assert seen == ["a", "b"]  # the callback is dropped after it raised; capture goes on

    lines: list[str] = []
    whole = _Capture(1024, lines.append)
    whole.feed(b"x\r\ny")
    whole.feed("é\nlast".encode())
    assert whole.finish() == "x\r\nyé\nlast" and not whole.truncated
    assert lines == ["x", "yé", "last"]
