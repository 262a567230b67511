"""The one redaction path where text leaves for Prefect or a person: a command's output as one stream
(a key printed over many lines goes whole), the exception a failed command raises, the task boundary
(exceptions and results), log records (ours and Prefect's tracebacks), text read out of git, and
every state message the audit history copies."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import FlowRun, State, TaskRun
from prefect.states import Failed, Running

from remediation.audit.history import flow_run_records
from remediation.clients.git_repo import CliGitRepo
from remediation.clients.remote_host import CommandResult, _Capture
from remediation.errors import CommandFailedError, PermanentError, RetryableError
from remediation.evidence import scrub
from remediation.evidence.redact import Redactor
from tasks.policy import task
from tests.unit.test_git_repo import commit_file, git
from tests.unit.test_redact import PEM, PGP

SECRET = "zq-boundary-secret-7Hk2"


def _capture(secret: str = SECRET) -> tuple[_Capture, list[str]]:
    lines: list[str] = []
    cap = _Capture(1 << 20, lines.append, None, Redactor([secret]).stream())
    return cap, lines


def _packets(text: str, size: int) -> list[bytes]:
    data = text.encode()
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 64, 4096])
def test_a_key_block_printed_by_a_command_never_reaches_a_line_callback_or_the_result(size: int) -> None:
    cap, lines = _capture()
    for packet in _packets("rebuilding\n" + PEM + "middle\n" + PGP + f"token {SECRET} done", size):
        cap.feed(packet)
    stored = cap.finish()
    shown = "\n".join(lines)
    for text in (shown, stored):
        assert "b3BlbnNzaC1rZXkt" not in text and "QyNTUxOQ" not in text and "lQOYBGZ0" not in text
        assert SECRET not in text
    assert lines[0] == "rebuilding" and "middle" in lines and lines[-1] == "token [REDACTED] done"
    assert lines.count("[REDACTED PRIVATE KEY]") == 2


def test_without_a_redactor_the_capture_is_unchanged() -> None:
    lines: list[str] = []
    cap = _Capture(1 << 20, lines.append)
    for packet in _packets("a\nb\r\nc", 1):
        cap.feed(packet)
    assert cap.finish() == "a\nb\r\nc" and lines == ["a", "b", "c"]


def test_a_failed_commands_exception_carries_only_redacted_stderr() -> None:
    cap, _ = _capture()
    for packet in _packets(f"fatal: could not read from {SECRET}\n" + PEM, 5):
        cap.feed(packet)
    result = CommandResult(command="deploy", exit_code=2, stdout="", stderr=cap.finish(), duration_s=0.1)
    with pytest.raises(CommandFailedError) as info:
        result.check()
    assert SECRET not in str(info.value) and "b3BlbnNzaC1rZXkt" not in str(info.value)
    assert "exited 2" in str(info.value)


@task(name="pytest-leaky-task")
def _leaky(kind: str) -> dict[str, object]:
    if kind == "ours":
        raise CommandFailedError(f"`deploy` exited 3: auth with {SECRET} refused", 3)
    if kind == "retryable":
        raise RetryableError(f"timeout talking to https://x:{SECRET}@host/")
    if kind == "foreign":
        raise FileNotFoundError(2, "No such file", f"/srv/{SECRET}")
    if kind == "carrying":
        error = LookupError("no such key")
        error.request = object()  # type: ignore[attr-defined]  # like an httpx error's request and headers
        raise error
    return {"note": f"read {SECRET}", "rows": [SECRET, 1], "n": 3}


@pytest.fixture
def known_secret() -> None:
    scrub.remember([SECRET])


def test_the_task_boundary_scrubs_our_exceptions_in_place(known_secret: None) -> None:
    with pytest.raises(CommandFailedError) as info:
        _leaky.fn("ours")
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert info.value.exit_code == 3  # same type, same attributes: retry policy and callers see no difference
    with pytest.raises(RetryableError) as retry:
        _leaky.fn("retryable")
    assert SECRET not in str(retry.value)


def test_an_exception_whose_text_we_cannot_reach_is_replaced(known_secret: None) -> None:
    with pytest.raises(PermanentError) as info:
        _leaky.fn("foreign")
    assert "FileNotFoundError" in str(info.value) and SECRET not in str(info.value)
    assert info.value.__suppress_context__


def test_a_foreign_exception_carrying_objects_is_replaced_even_with_a_clean_message() -> None:
    with pytest.raises(PermanentError, match="LookupError: no such key") as info:
        _leaky.fn("carrying")
    assert not hasattr(info.value, "request")


def test_the_task_boundary_scrubs_returned_values(known_secret: None) -> None:
    out = _leaky.fn("value")
    assert SECRET not in repr(out) and out["n"] == 3 and out["rows"] == ["[REDACTED]", 1]


def test_log_records_and_tracebacks_are_scrubbed_as_they_are_created(known_secret: None) -> None:
    scrub.install_log_redaction()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("pytest.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("token is %s", SECRET)
        try:
            raise ValueError(f"bad {SECRET}")
        except ValueError as exc:
            # What Prefect's engine logs for a failed run.
            logger.exception("Encountered exception during execution: %r", exc)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert SECRET not in text
    assert "token is [REDACTED]" in text and "Traceback" in text and "ValueError: bad [REDACTED]" in text


def test_text_read_out_of_git_is_redacted(tmp_path: Path) -> None:
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(bare), str(seed))
    git(seed, "checkout", "-q", "-b", "main")
    commit_file(seed, "app.py", "VERSION = 1\n", "first")
    bad = commit_file(seed, "app.py", "VERSION = 2\n", f"set token {SECRET}")
    git(seed, "push", "-q", "origin", "main")
    repo = CliGitRepo.clone(str(bare), tmp_path / "work", "main", redact=Redactor([SECRET]).text)
    shown = [repo.commit(bad).subject, repo.message(bad), repo.show_stat(bad), repo.show_patch(bad),
             *(c.subject for c in repo.log_oneline(5))]
    assert not [s for s in shown if SECRET in s]
    revert = repo.revert(bad, "")  # the default subject quotes the bad commit's: redacted too
    assert SECRET not in git(repo.workdir, "show", "-s", "--format=%B", revert)


class _History:
    """Just enough of the Prefect client for `flow_run_records`: one run, a leaky state history."""

    def __init__(self, states: list[State]) -> None:
        self.states = states

    def read_flow(self, _id: object) -> SimpleNamespace:
        return SimpleNamespace(name="rollback")

    def read_flow_run_states(self, _id: object) -> list[State]:
        return self.states

    def read_task_runs(self, **_: object) -> list[TaskRun]:
        return [TaskRun(flow_run_id=uuid4(), task_key="k", dynamic_key="d", name=f"rebuild {SECRET}",
                        state=Failed(message=f"CommandFailedError: exited 3: {SECRET}"))]

    def read_artifacts(self, **_: object) -> list[object]:
        return []


def test_every_state_message_of_the_audit_history_is_redacted() -> None:
    states: list[State] = [Running(message=f"started with {SECRET}"), Failed(message=f"rebuild failed: {SECRET}")]
    run = FlowRun(flow_id=uuid4(), name="leaky-run", state=states[-1], tags=[f"note:{SECRET}"],
                  parameters={"incident_id": "INC-1", "reason": f"paste {SECRET}"})
    records = flow_run_records(_History(states), [run], Redactor([SECRET]).text)  # type: ignore[arg-type]
    assert [kind for kind, _ in records] == ["flow-run", "task-run"]
    assert SECRET not in json.dumps(records, default=str)
    assert [s["message"] for s in records[0][1]["states"]] == ["started with [REDACTED]", "rebuild failed: [REDACTED]"]
