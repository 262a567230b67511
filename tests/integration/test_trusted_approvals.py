"""Approvals an auditor can trust, on the real stack: verified people, N distinct approvers, one answer
per pause of one attempt, a write-ahead change log a crash cannot lose and an API user cannot forge."""

from __future__ import annotations

import os
import signal
import time
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.states import AwaitingRetry

from remediation.audit import export as audit
from remediation.audit.report import render
from remediation.flowkit import resume
from remediation.flowkit.change_log import incident_changes
from remediation.flowkit.resume import pending_form, pending_step, wait_for_pause
from remediation.target.connect import evidence_store
from remediation.target.inventory import load_target
from sandbox.stack import people
from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from tests.integration.flow_runs import (
    LEAD,
    ONCALL,
    SRE,
    answer,
    answer_until_done,
    approval_records,
    confirm_initiator,
    finish,
    incident,
    result,
    signing_key,
    start,
)

pytestmark = pytest.mark.integration
CONTAIN, RECOVER = "contain/contain", "recover/recover"


def _maintenance(stack: StackInfo) -> bool:
    token = stack.admin_tokens["viewer"].get_secret_value()
    reply = httpx.get(f"{stack.admin_url}/api/v1/maintenance", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    return bool(reply.json()["is_active"])


def _deposit_halt(stack: StackInfo) -> str:
    import psycopg

    with psycopg.connect(stack.platform_dsn.get_secret_value()) as conn:
        row = conn.execute("SELECT value FROM global_var WHERE code = 'DEPOSIT_MAINTENANCE_STATUS'").fetchone()
    assert row is not None
    return str(row[0])


def _next_pause(run_id: UUID, after: str | None) -> Any:
    """The run's next pause (a different pause key than `after`)."""
    deadline = time.monotonic() + 60
    while True:
        run = wait_for_pause(run_id, timeout_s=60)
        if run.state.state_details.pause_key != after:
            return run
        assert time.monotonic() < deadline, "the run did not ask again"
        time.sleep(0.3)


def _kill(run_id: UUID) -> None:
    """kill -9 the warm child executing the run, on whichever replica claimed it."""
    st = Stack()
    deadline = time.monotonic() + 10
    while True:
        pids = [p for r in (*st.runners, st.warm_runner) if (p := r.pid_of(run_id)) is not None]
        if pids:
            break
        assert time.monotonic() < deadline, f"no replica reports running {run_id}"
        time.sleep(0.2)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def _crashed(run_id: UUID, timeout_s: float = 60) -> None:
    """Until the replica that ran it has marked the killed run Crashed (it supervises its children)."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run_id).state
            if state is not None and state.name == "Crashed":
                return
            assert time.monotonic() < deadline, f"{run_id} was never marked Crashed: {state}"
            time.sleep(0.2)


def _retry_from_the_ui(run_id: UUID) -> None:
    """What the UI's Retry button does."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, AwaitingRetry(message="Retry from the UI"))


def test_answers_that_must_not_count_change_nothing_and_each_is_recorded(
    stack: StackInfo, deployments: list[str], reset_platform: StackInfo,
) -> None:
    # The platform freeze needs two approvers on the sandbox (policy.approvals_required_for).
    run_id = start(CONTAIN, incident_id=incident(), lever="platform-freeze", initiated_by=ONCALL, dry_run=False)
    confirm_initiator(run_id)
    first = wait_for_pause(run_id)
    key = first.state.state_details.pause_key

    def refused(**kw: Any) -> None:
        nonlocal key
        resume.answer(run_id, decision="approve", reason="looks right", **kw)
        key = _next_pause(run_id, key).state.state_details.pause_key
        assert not _maintenance(stack), f"applied after an answer that must not count: {kw}"

    refused(approver=ONCALL, sign_key=signing_key(ONCALL))   # the initiator approving herself
    refused(approver="mallory", code="123456")                # nobody the target declares
    wrong = "000000" if people.current_code(LEAD) != "000000" else "111111"
    refused(approver=LEAD, code=wrong)                        # a wrong code
    code = people.current_code(LEAD)
    resume.answer(run_id, decision="approve", approver=LEAD, reason="freeze: money at risk", code=code)
    key = _next_pause(run_id, key).state.state_details.pause_key  # one of two: asks for the second
    assert not _maintenance(stack)
    assert "needs 2 approvers" in str(pending_form(wait_for_pause(run_id))["description"])
    refused(approver=LEAD, sign_key=signing_key(LEAD))        # the same person twice
    refused(approver=SRE, code=code)                          # someone else's code (wrong for her)
    answer(run_id, approver=SRE, reason="second pair of eyes")
    run = finish(run_id)
    out = result(run)
    assert run.state is not None and run.state.is_completed(), run.state
    assert _maintenance(stack)
    assert [s["approver"] for s in out["approval"]["signoffs"]] == [LEAD, SRE]
    assert [s["verified_by"] for s in out["approval"]["signoffs"]] == ["totp", "ssh-signature"]
    assert out["initiator"]["handle"] == ONCALL and out["initiator"]["verified_by"] == "ssh-signature"

    records = approval_records(run_id)
    reasons = [r["reason"] for r in records if r["decision"] == "invalid"]
    assert len(reasons) == 5, records
    assert "four eyes" in reasons[0] and "not one of sandbox's declared people" in reasons[1]
    assert "not lead-bob's current one" in reasons[2] and "already approved this step" in reasons[3]
    assert "not sre-carol's current one" in reasons[4]
    assert records[-1]["decision"] == "approve" and records[-1]["required"] == "2"


def test_a_code_counts_once(stack: StackInfo, deployments: list[str], reset_platform: StackInfo) -> None:
    code = people.wait_for_fresh_code(ONCALL, set())
    first = start(CONTAIN, incident_id=incident(), lever="deposit-halt", initiated_by=ONCALL, dry_run=False)
    second = start(CONTAIN, incident_id=incident(), lever="brand-disable", brand_id="beta", initiated_by=ONCALL,
                   dry_run=False)
    first_asked = wait_for_pause(first).state.state_details.pause_key
    resume.confirm_initiator(first, handle=ONCALL, code=code)
    # The first use counted (waited for: given to both at once, whichever run reads its answer first
    # takes the code, and the other is asked again).
    assert pending_step(_next_pause(first, first_asked)) == "contain-deposit-halt"
    asked = wait_for_pause(second).state.state_details.pause_key
    resume.confirm_initiator(second, handle=ONCALL, code=code)  # the same code again: refused, asked again
    again = _next_pause(second, asked)
    assert pending_step(again) == "verify-initiator"
    for run_id in (first, second):
        answer_until_done(run_id, decision="reject")
    assert _deposit_halt(stack) == "0"


def test_a_retried_run_asks_people_again_and_never_uses_an_earlier_answer(
    stack: StackInfo, deployments: list[str], reset_platform: StackInfo,
) -> None:
    run_id = start(CONTAIN, incident_id=incident(), lever="platform-freeze", initiated_by=ONCALL, dry_run=False)
    answer(run_id, approver=LEAD, reason="first of two")
    waiting = _next_pause(run_id, None)
    first_attempt = waiting.state.state_details.pause_key.rsplit("-", 3)[1]
    assert pending_step(waiting) == "contain-platform-freeze"
    _kill(run_id)  # killed right after its first approval, holding the lock
    _crashed(run_id)

    started = time.monotonic()
    _retry_from_the_ui(run_id)
    asked = wait_for_pause(run_id, timeout_s=120)
    assert pending_step(asked) == "verify-initiator", "the retry did not ask who started it again"
    confirm_initiator(run_id)
    again = wait_for_pause(run_id, timeout_s=60)
    took = time.monotonic() - started
    assert pending_step(again) == "contain-platform-freeze"
    assert again.state.state_details.pause_key.rsplit("-", 3)[1] != first_attempt, "asked within the old attempt"
    assert "none yet" in str(pending_form(again)["description"]), "the first attempt's approval was carried over"
    assert not _maintenance(stack)
    assert took < 45, f"the retry waited {took:.0f} s: the dead attempt's lock lease was waited out"
    run = answer_until_done(run_id)
    out = result(run)
    assert run.state is not None and run.state.is_completed(), run.state
    assert [s["approver"] for s in out["approval"]["signoffs"]] == [LEAD, SRE]
    assert f"a{out['approval']['run_attempt']}" != first_attempt and _maintenance(stack)


def test_a_lever_moved_by_a_run_killed_before_its_outcome_is_still_undone(
    stack: StackInfo, deployments: list[str], reset_platform: StackInfo,
) -> None:
    inc = incident()
    st = Stack()
    st.admin_slow_write(True)  # the admin API commits, then answers 30 s later
    try:
        run_id = start(CONTAIN, incident_id=inc, lever="deposit-halt", initiated_by=ONCALL, dry_run=False)
        answer(run_id, approver=LEAD, reason="deposits failing")
        deadline = time.monotonic() + 60
        while _deposit_halt(stack) != "1":  # the lever's first change: kill the run there
            assert time.monotonic() < deadline, "the lever never moved"
            time.sleep(0.05)
        _kill(run_id)
    finally:
        st.admin_slow_write(False)
    _crashed(run_id)
    target = load_target("sandbox")
    [entry] = incident_changes(target, inc)
    assert entry.unfinished and entry.approvers == [LEAD], entry

    recover_id = start(RECOVER, incident_id=inc, initiated_by=ONCALL, dry_run=False)
    run = answer_until_done(recover_id, timeout_s=240)
    out = result(run)
    assert run.state is not None and run.state.is_completed(), (run.state, out)
    assert _deposit_halt(stack) == "0"
    assert any("no recorded outcome" in note and "undoing it" in note for note in out["found"])
    assert [u["change"]["lever"] for u in out["undone"]] == ["deposit-halt"]

    # The auditor's export shows the intent, that its outcome is missing, and the undo.
    export = audit.build(target, inc, evidence_store(target))
    changes = [r["data"] for r in export["records"] if r["kind"] == "change-log"]
    assert [(c["undo"], c["outcome"]) for c in changes] == [(False, None), (True, "reverted")]
    assert "run died between intent and outcome" in changes[0]["note"]
    assert "| NONE |" in render(export)


def test_a_forged_change_log_artifact_changes_nothing(
    stack: StackInfo, deployments: list[str], reset_platform: StackInfo,
) -> None:
    """Anyone with API access can write an artifact under the change log's old key; recover never reads it."""
    inc = incident()
    forged = {"change": {"lever": "deposit-halt", "resource": "global-var-deposit-maintenance-status",
                         "description": "forged", "before": {"value": "1"}, "after": {"value": "0"}},
              "outcome": "applied", "path": "admin-api", "at": "2026-01-01T00:00:00Z"}
    create_table_artifact(key=f"changes-{inc.lower()}", table=[{"record": str(forged)}], description="forged")
    run = finish(start(RECOVER, incident_id=inc, initiated_by=ONCALL))  # a dry run: what it would undo
    out = result(run)
    assert run.state is not None and run.state.is_completed()
    assert out["would_change"] == [] and _deposit_halt(stack) == "0"
