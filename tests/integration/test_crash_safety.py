"""Crash-safe by default: with the shared SIDE_EFFECT policy, a flow that fails after a side effect
and is retried finds that step `Cached` instead of applying it twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow, task

from remediation.errors import PermanentError, RetryableError
from sandbox.stack.info import StackInfo
from tasks.policy import SIDE_EFFECT

pytestmark = pytest.mark.integration


@task(**{**SIDE_EFFECT, "retries": 0})
def apply_change(counter: Path, plan_hash: str) -> str:
    counter.write_text(str(int(counter.read_text() or "0") + 1))
    return f"applied {plan_hash}"


@task(retries=0)
def verify_after(flaky: Path) -> str:
    if not flaky.exists():
        flaky.write_text("failed once")
        raise RuntimeError("verification failed (first attempt)")
    return "verified"


@flow(retries=1, retry_delay_seconds=0, persist_result=True)
def remediate(counter: Path, flaky: Path) -> tuple[str, str]:
    applied = apply_change(counter, "plan-abc")
    return applied, verify_after(flaky)


def test_flow_retry_does_not_repeat_a_completed_side_effect(stack: StackInfo, tmp_path: Path) -> None:
    counter, flaky = tmp_path / "counter", tmp_path / "flaky"
    counter.write_text("0")
    state = remediate(counter, flaky, return_state=True)
    assert state.is_completed(), state
    assert state.result() == ("applied plan-abc", "verified")
    assert counter.read_text() == "1", "the side effect ran twice across the flow retry"


attempts: list[str] = []


@task(retries=3, retry_delay_seconds=0, retry_condition_fn=SIDE_EFFECT["retry_condition_fn"])
def flaky_call(kind: str) -> str:
    attempts.append(kind)
    if kind == "retryable" and attempts.count(kind) < 3:
        raise RetryableError("503 from upstream")
    if kind == "permanent":
        raise PermanentError("403 role may not do that")
    return "ok"


@flow
def call(kind: str) -> str:
    return flaky_call(kind)


def test_only_retryable_errors_are_retried(stack: StackInfo) -> None:
    attempts.clear()
    assert call("retryable") == "ok"
    assert attempts.count("retryable") == 3
    with pytest.raises(PermanentError):
        call("permanent")
    assert attempts.count("permanent") == 1
