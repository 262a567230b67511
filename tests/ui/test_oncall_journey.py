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

from remediation.flowkit.resume import wait_for_pause
from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from tests.integration.flow_runs import result, start
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
    for lever in ("platform-freeze", "deposit-halt", "brand-disable", "provider-ingress-block"):
        assert lever in lever_help
    assert "Finance maintenance" in lever_help
    ui.fill("incident_id", inc)
    ui.choose("lever", "deposit-halt")
    ui.fill("initiated_by", "alice")
    ui.toggle("dry_run", False)
    ui.shot("run form filled", full_page=True)
    ui.shot("run form", doc="01-contain-run-form")
    run_id = ui.submit_run()

    ui.wait_for_state("Paused")
    ui.shot("paused for approval", doc="02-contain-paused")
    dialog = ui.open_resume_form()
    shown = dialog.inner_text()
    assert "DEPOSIT_MAINTENANCE_STATUS" in shown and "admin API" in shown and "SQL fallback" in shown
    assert "withdrawals, bets and settles" in shown
    ui.answer(dialog, decision="approve", approver="bob", reason="deposits failing since 03:10", confirm="production")
    ui.shot("wrong target typed", element=dialog)
    ui.submit_answer(dialog)
    refused = ui.toast()
    assert "confirm_target" in refused and "production" in refused, refused
    ui.shot("wrong target refused", doc="03-wrong-target-refused")
    assert _run(run_id).state.is_paused() and _deposit_halt(stack) == "0"

    ui.fill("Confirm Target", "sandbox", within=dialog)
    ui.fill("Approver", "bob smith", within=dialog)  # not a handle
    ui.submit_answer(dialog)
    assert "approver" in ui.toast()
    assert _run(run_id).state.is_paused() and _deposit_halt(stack) == "0"

    ui.fill("Approver", "bob", within=dialog)
    ui.wait_for_toasts_to_go()
    ui.shot("answer ready", element=dialog, doc="04-approve-in-resume-form")
    ui.submit_answer(dialog)
    ui.wait_for_state("Completed")
    run = _run(run_id)
    assert run.state.message == "deposit-halt applied via admin-api; verified", run.state.message
    assert _deposit_halt(stack) == "1"
    out = _result(run)
    assert out["verification"]["ok"] and out["approval"]["approver"] == "bob"

    keys = ui.artifact_keys()
    assert {"plan-contain-deposit-halt", "approval-contain-deposit-halt", f"changes-{inc.lower()}"} <= set(keys), keys
    ui.shot("artifacts", doc="05-run-artifacts")
    record = ui.open_artifact("approval-contain-deposit-halt", showing="requested_by")
    assert "bob" in record and "approve" in record and "deposits failing since 03:10" in record
    ui.shot("approval record")


def test_reject_from_the_resume_form_changes_nothing(
    ui: PrefectUI, stack: StackInfo, deployments: list[str], reset_platform: StackInfo, incidents: Incidents,
) -> None:
    inc = incidents.new()
    run_id = _start("contain/contain", incident_id=inc, lever="platform-freeze", initiated_by="alice", dry_run=False)
    ui.open_run(run_id)
    ui.wait_for_state("Paused")
    dialog = ui.open_resume_form()
    assert "PUT /api/v1/maintenance" in dialog.inner_text()
    ui.answer(dialog, decision="reject", approver="bob", reason="only deposits are affected", confirm="sandbox")
    ui.shot("reject", element=dialog)
    ui.submit_answer(dialog)
    ui.wait_for_state("Completed")
    ui.shot("rejected run")
    run = _run(run_id)
    assert run.state.message.startswith("not applied: reject by bob"), run.state.message
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
                       initiated_by="alice", dry_run=False, contain_lever="platform-freeze", approval_timeout_s=300)
    ui.open_run(respond_id)
    # The on-call follows the loop from its run page to the step that waits: Subflow Runs.
    for step, reason in (("contain", "the freeze is too broad for this"), ("rollback", "no deploy in the last 24 h")):
        wait_for_pause(_paused_subflow(inc, step), timeout_s=180)
        ui.open_run(respond_id)
        ui.open_subflow(step)
        ui.wait_for_state("Paused")
        dialog = ui.open_resume_form()
        ui.answer(dialog, decision="skip", approver="bob", reason=reason, confirm="sandbox")
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
        "skipped by bob: the freeze is too broad for this"
    assert _admin_get(stack, "/api/v1/maintenance")["is_active"] is False
    keys = ui.artifact_keys()
    assert f"respond-{inc.lower()}" in keys, keys
    steps = ui.open_artifact(f"respond-{inc.lower()}", showing="skipped by bob")
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
