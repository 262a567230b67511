"""The on-call journey in the real Prefect UI: start a runbook from its run form, then approve,
reject or skip its risky steps in the run's Resume form, in headless Chromium against the stack.

State is checked where the on-call would see it (the run page's badge, toasts, artifacts); what
the platform did is checked against the sandbox itself (admin API, database, gateway).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client

from remediation.flowkit.resume import pending_step, wait_for_pause
from sandbox import faults
from sandbox.stack import people
from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from tests.integration.flow_runs import LEAD, ONCALL, SRE, result, start
from tests.ui.conftest import Incidents
from tests.ui.prefect_ui import PrefectUI

T = TypeVar("T")
pytestmark = [pytest.mark.integration, pytest.mark.ui]
CONTAIN_FIELDS = ("incident_id", "lever", "initiated_by", "target", "brand_id", "brand_flags", "message", "dry_run",
                  "approval_timeout_s", "lock_wait_s")


def _admin_get(stack: StackInfo, path: str) -> Any:
    token = stack.admin_tokens["viewer"].get_secret_value()
    reply = httpx.get(f"{stack.admin_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    reply.raise_for_status()
    return reply.json()


def _deposit_halt(stack: StackInfo) -> str:
    return str(_admin_get(stack, "/api/v1/global-vars/DEPOSIT_MAINTENANCE_STATUS")["value"])


def _off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # Playwright's sync API keeps an event loop running in this thread, where Prefect's dual sync/async
    # calls (`run_deployment`, `State.result()`) would hand back a coroutine: call them from a plain thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def _result(run: Any) -> dict[str, Any]:
    return _off_loop(result, run)


def _start(deployment: str, **params: Any) -> UUID:
    return _off_loop(start, deployment, **params)


def _run(run_id: UUID) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


_USED: set[str] = set()


def _code(handle: str) -> str:
    """What the person's authenticator shows now — a code no earlier answer used (each counts once)."""
    return people.wait_for_fresh_code(handle, _USED)


def _wrong_code(handle: str) -> str:
    right = people.current_code(handle)
    return "000000" if right != "000000" else "111111"


def _wait_for_step(ui: PrefectUI, run_id: UUID, step: str, not_key: str | None = None) -> str:
    """Until the run pauses at `step` (a new pause, not `not_key`); then the run page, reloaded. Its key."""
    import time

    deadline = time.monotonic() + 180
    while True:
        run = _off_loop(wait_for_pause, run_id, timeout_s=180)
        key = run.state.state_details.pause_key
        if pending_step(run) == step and key != not_key:
            break
        assert time.monotonic() < deadline, f"run {run_id} never paused at {step}"
        time.sleep(0.5)
    ui.open_run(run_id)
    ui.wait_for_state("Paused")
    return str(key)


def _confirm_initiator(ui: PrefectUI, run_id: UUID, handle: str = ONCALL, doc: str | None = None) -> None:
    _wait_for_step(ui, run_id, "verify-initiator")
    dialog = ui.open_resume_form(asks="Handle")
    ui.confirm_initiator(dialog, handle=handle, code=_code(handle))
    ui.shot("who started this run", element=dialog, doc=doc)
    ui.submit_answer(dialog)


def test_contain_started_from_the_run_form_refuses_bad_answers_then_applies_on_approval(
    ui: PrefectUI, stack: StackInfo, deployments: list[str], reset_platform: StackInfo, incidents: Incidents,
) -> None:
    inc = incidents.new()
    ui.open_deployment("contain")
    ui.custom_run()
    # Every field of the form says what it is; the lever says what each choice does.
    for label in CONTAIN_FIELDS:
        assert len(ui.description(label).strip()) > 20, f"{label} has no description in the run form"
    lever_help = ui.description("lever")
    for lever in ("platform-freeze", "deposit-halt", "brand-disable", "provider-ingress-block", "redis-eviction"):
        assert lever in lever_help
    assert "Finance maintenance" in lever_help
    ui.fill("incident_id", inc)
    ui.choose("lever", "deposit-halt")
    ui.fill("initiated_by", ONCALL)
    ui.toggle("dry_run", False)
    ui.shot("run form filled", full_page=True)
    ui.shot("run form", doc="01-contain-run-form")
    run_id = ui.submit_run()

    # A risky run first asks the one who started it to prove it: handle and authenticator code.
    _confirm_initiator(ui, run_id, doc="02-confirm-initiator")
    approval_key = _wait_for_step(ui, run_id, "contain-deposit-halt")
    dialog = ui.open_resume_form()
    shown = dialog.inner_text()
    assert "DEPOSIT_MAINTENANCE_STATUS" in shown and "admin API" in shown and "SQL fallback" in shown
    assert "withdrawals, bets and settles" in shown
    ui.answer(dialog, decision="approve", approver=LEAD, reason="deposits failing since 03:10", confirm="production",
              code=_wrong_code(LEAD))
    ui.shot("wrong target typed", element=dialog)
    ui.submit_answer(dialog)
    refused = ui.toast()
    assert "confirm_target" in refused and "production" in refused, refused
    ui.shot("wrong target refused", doc="03-wrong-target-refused")
    assert _run(run_id).state.is_paused() and _deposit_halt(stack) == "0"

    ui.fill("Confirm Target", "sandbox", within=dialog)
    ui.fill("Approver", "lead bob", within=dialog)  # not a handle
    ui.submit_answer(dialog)
    assert "approver" in ui.toast()
    assert _run(run_id).state.is_paused() and _deposit_halt(stack) == "0"

    # A well-formed answer with a wrong code passes the form, but the run refuses it and asks again.
    ui.fill("Approver", LEAD, within=dialog)
    ui.submit_answer(dialog)
    approval_key = _wait_for_step(ui, run_id, "contain-deposit-halt", not_key=approval_key)
    assert _deposit_halt(stack) == "0"
    dialog = ui.open_resume_form()
    ui.answer(dialog, decision="approve", approver=LEAD, reason="deposits failing since 03:10", confirm="sandbox",
              code=_code(LEAD))
    ui.wait_for_toasts_to_go()
    ui.shot("answer ready", element=dialog, doc="04-approve-in-resume-form")
    ui.submit_answer(dialog)
    ui.wait_for_state("Completed")
    run = _run(run_id)
    assert run.state.message == "deposit-halt applied via admin-api; verified", run.state.message
    assert _deposit_halt(stack) == "1"
    out = _result(run)
    assert out["verification"]["ok"]
    assert out["approval"]["approver"] == LEAD and out["approval"]["signoffs"][0]["verified_by"] == "totp"
    assert out["initiator"] == {**out["initiator"], "handle": ONCALL, "verified_by": "totp"}

    keys = ui.artifact_keys()
    assert {"plan-contain-deposit-halt", "approval-contain-deposit-halt", f"changes-{inc.lower()}"} <= set(keys), keys
    ui.shot("artifacts", doc="05-run-artifacts")
    assert keys.count("approval-contain-deposit-halt") == 2  # the refused answer is on record too
    record = ui.open_artifact("approval-contain-deposit-halt", showing="signoffs",
                              card_text="approval record: contain-deposit-halt approve")
    assert f"{LEAD} (totp" in record and "approve" in record and "deposits failing since 03:10" in record
    ui.shot("approval record")


def test_reject_from_the_resume_form_changes_nothing(
    ui: PrefectUI, stack: StackInfo, deployments: list[str], reset_platform: StackInfo, incidents: Incidents,
) -> None:
    inc = incidents.new()
    run_id = _start("contain/contain", incident_id=inc, lever="platform-freeze", initiated_by=ONCALL, dry_run=False)
    _confirm_initiator(ui, run_id)
    _wait_for_step(ui, run_id, "contain-platform-freeze")
    dialog = ui.open_resume_form()
    shown = dialog.inner_text()
    assert "PUT /api/v1/maintenance" in shown and "needs 2 approvers" in shown
    ui.answer(dialog, decision="reject", approver=LEAD, reason="only deposits are affected", confirm="sandbox",
              code=_code(LEAD))
    ui.shot("reject", element=dialog)
    ui.submit_answer(dialog)
    ui.wait_for_state("Completed")
    ui.shot("rejected run")
    run = _run(run_id)
    assert run.state.message.startswith(f"not applied: reject by {LEAD}"), run.state.message
    assert _admin_get(stack, "/api/v1/maintenance")["is_active"] is False
    assert "approval-contain-platform-freeze" in ui.artifact_keys()


@pytest.mark.timeout(420)
def test_skip_in_respond_from_the_resume_form_lets_the_loop_go_on(
    ui: PrefectUI, stack: StackInfo, deployments: list[str], reset_platform: StackInfo, incidents: Incidents,
    release: Stack,
) -> None:
    # The seeded release history is two days old: rollback asks whether to override its 24 h policy.
    release.reset_release()
    inc = incidents.new()
    respond_id = _start("respond/respond", incident_id=inc, severity="SEV2", title="suspicious deposits",
                       initiated_by=ONCALL, dry_run=False, contain_lever="platform-freeze", approval_timeout_s=300)
    _confirm_initiator(ui, respond_id)  # once: every step of the loop trusts it
    # The on-call follows the loop from its run page to the step that waits: Subflow Runs.
    for step, reason, who in (("contain", "the freeze is too broad for this", LEAD),
                              ("rollback", "no deploy in the last 24 h", SRE)):
        _off_loop(wait_for_pause, _paused_subflow(inc, step), timeout_s=180)
        ui.open_run(respond_id)
        ui.open_subflow(step)
        ui.wait_for_state("Paused")
        dialog = ui.open_resume_form()
        ui.answer(dialog, decision="skip", approver=who, reason=reason, confirm="sandbox", code=_code(who))
        ui.shot(f"skip {step}", element=dialog)
        ui.submit_answer(dialog)
        ui.wait_for_state("Completed")
    ui.open_run(respond_id)
    ui.wait_for_state("Completed", timeout_s=240)
    ui.shot("loop done")
    out = _result(_run(respond_id))
    outcomes = {s["step"]: s["outcome"] for s in out["steps"]}
    assert outcomes["contain"] == "skipped" and outcomes["rollback"] == "skipped", outcomes
    assert out["stopped_at"] is None and out["all_clear"], out
    assert next(s for s in out["steps"] if s["step"] == "contain")["message"] == \
        f"skipped by {LEAD}: the freeze is too broad for this"
    assert _admin_get(stack, "/api/v1/maintenance")["is_active"] is False
    keys = ui.artifact_keys()
    assert f"respond-{inc.lower()}" in keys, keys
    steps = ui.open_artifact(f"respond-{inc.lower()}", showing=f"skipped by {SRE}")
    assert "the freeze is too broad for this" in steps and "no deploy in the last 24 h" in steps
    ui.shot("the loop's steps", doc="06-respond-steps")
    ui.open_run(respond_id)
    ui.open_subflow("capture-evidence")
    assert f"evidence-{inc.lower()}" in ui.artifact_keys()
    ui.shot("evidence report")


def _paused_subflow(inc: str, step: str) -> UUID:
    """The id of the incident's run of `step` (a subflow of respond), once it exists."""
    import time

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    deadline = time.monotonic() + 180
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"incident:{inc}", f"runbook:{step}"])))
            if runs:
                return runs[0].id
            time.sleep(0.5)
    raise TimeoutError(f"no {step} run of {inc}")


def test_kill_long_queries_from_its_run_form_plans_the_blocker_and_stops_nothing(
    ui: PrefectUI, stack: StackInfo, deployments: list[str], reset_platform: StackInfo, incidents: Incidents,
) -> None:
    """Seed 001's "kill long-running queries" as the on-call starts it: every field explained, the
    threshold typed in, a dry run that names the session holding the lock and stops nothing."""
    dsn = stack.platform_dsn.get_secret_value()
    faults.wedge_on(dsn, "hang", home=stack.home)
    try:
        holder = faults.status(dsn)["lock_holder_backends"]
        ui.open_deployment("kill-long-queries")
        ui.custom_run()
        for label in ("incident_id", "initiated_by", "threshold_s", "include", "grace_s", "evidence_profile",
                      "dry_run", "approval_timeout_s", "lock_wait_s"):
            assert len(ui.description(label).strip()) > 20, f"{label} has no description in the run form"
        assert "autovacuum" in ui.description("include") and "5 minutes" in ui.description("threshold_s")
        inc = incidents.new()
        ui.fill("incident_id", inc)
        ui.fill("initiated_by", ONCALL)
        ui.fill("threshold_s", "1")
        ui.shot("kill run form filled", full_page=True)
        run_id = ui.submit_run()
        ui.wait_for_state("Completed")
        message = _run(run_id).state.message
        assert message == f"dry run: would cancel 1 backend(s): {holder[0]}", message
        assert f"kill-plan-{inc.lower()}" in ui.artifact_keys()
        plan = ui.open_artifact(f"kill-plan-{inc.lower()}", showing=faults.HOLDER_APP)
        assert str(holder[0]) in plan and "pg_cancel_backend" in plan and "dry run: nothing changed" in plan
        ui.shot("kill dry run plan", full_page=True)
        assert faults.status(dsn)["lock_holder_backends"] == holder, "the dry run stopped nothing"
    finally:
        faults.wedge_off(dsn, home=stack.home)
