"""The respond loop end to end on the sandbox: bad deploy + drifted buckets, approvals given through the
resume API, status updates in the channel, all-clear, postmortem; and a rejected approval ending it safely."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterTags

from remediation.flowkit.resume import pending_step, wait_for_incident_pause
from sandbox import db, faults
from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from tests.integration.flow_runs import LEAD, ONCALL, answer, confirm_initiator, finish, incident, result, start

pytestmark = pytest.mark.integration
RESPOND = "respond/respond"


def _posts(stack: StackInfo, inc: str) -> list[str]:
    token = stack.admin_tokens["viewer"].get_secret_value()
    posts = httpx.get(f"{stack.admin_url}/hooks/status", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    return [p["text"] for p in posts.json() if inc in p["text"]]


def _artifact(key: str) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, key
    return str(found[0].data)


def _decide(inc: str, decisions: dict[str, str], expect: int) -> list[str]:
    """Answer each pause of the incident as `decisions[step]` says, as the on-call would in the UI."""
    steps: list[str] = []
    seen: set[tuple[Any, str | None]] = set()
    while len(steps) < expect:
        run = wait_for_incident_pause(inc, timeout_s=240)
        key = (run.id, run.state.state_details.pause_key if run.state else None)
        if key in seen:
            continue
        seen.add(key)
        step = pending_step(run)
        if step == "verify-initiator":
            confirm_initiator(run.id)
            continue
        decision = decisions.get(step.split("-")[0], "approve")
        answer(run.id, decision=decision, approver=LEAD, reason=f"drill: {decision} {step}")
        steps.append(step)
    return steps


def test_sev1_loop_on_a_bad_deploy_with_drift_ends_all_clear(
    stack: StackInfo, deployments: list[str], reset_platform: StackInfo, release: Stack,
) -> None:
    bad = release.bad_deploy()
    dsn = stack.platform_dsn.get_secret_value()
    drifted = faults.drift_on(dsn, players=3, amount=1500, seed=7)
    inc = incident()
    run_id = start(RESPOND, incident_id=inc, severity="SEV1", title="deposits failing after a deploy",
                   impact="health 500 and drifted balances", initiated_by=ONCALL, dry_run=False,
                   status_interval_s=5, contain_lever="deposit-halt", approval_timeout_s=300)
    steps = _decide(inc, {}, expect=4)
    assert steps == ["contain-deposit-halt", "rollback", "reconcile", "recover"]
    run = finish(run_id, timeout_s=420)
    out = result(run)
    assert run.state is not None and run.state.is_completed(), (run.state and run.state.message, out)
    assert out["all_clear"] and out["stopped_at"] is None
    assert [s["step"] for s in out["steps"]] == ["snapshot-context", "capture-evidence", "contain", "rollback",
                                                 "verify-round-trip", "reconcile", "recover"]
    # A green incident reads green: no step of it failed, in the loop's table or in any run of the incident.
    assert not [s for s in out["steps"] if "fail" in s["outcome"]], out["steps"]
    # The platform is back: new release healthy, lever off, books clean.
    health = httpx.get(f"{stack.gateway_url}/health", timeout=5)
    assert health.status_code == 200 and health.json()["release"] != bad
    with db.connect(dsn) as conn:
        assert conn.execute("SELECT value FROM global_var WHERE code='DEPOSIT_MAINTENANCE_STATUS'").fetchone()[0] == "0"
        off = conn.execute("SELECT count(*) FROM bucket b JOIN (SELECT player_id, sum(amount) s FROM ledger "
                           "GROUP BY player_id) l USING (player_id) WHERE b.balance <> l.s").fetchone()[0]
    assert off == 0 and len(drifted) == 3
    # Every run of the incident carries its tag: the loop's subflows and the alert-free capture.
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"incident:{inc}"])))
    assert len(runs) >= 9  # respond, its 7 step subflows (recover's verify too) and the postmortem
    assert not [r.name for r in runs if r.state is not None and not r.state.is_completed()]
    # Status updates: initial, one per step, periodic (5 s here), and the resolution.
    posts = _posts(stack, inc)
    assert posts[0].startswith("🚨 Incident Alert - SEV1")
    assert sum(p.startswith("📊 Incident Update - SEV1") for p in posts) >= 8
    assert posts[-1].startswith("✅ Incident Resolved - SEV1") and bad[:12] in posts[-1]
    postmortem = _artifact(f"postmortem-{inc.lower()}")
    assert postmortem.startswith("# Postmortem: SEV1 deposits failing after a deploy")
    assert "## Timeline (UTC)" in postmortem and f"reverted `{bad[:12]}`" in postmortem
    assert f"approval approve: rollback by {LEAD}" in postmortem and "all-clear" in postmortem
    assert "Postmortem due:" in postmortem and "5 business days" in postmortem
    assert "Failed" not in postmortem and "failed" not in posts[-1]


def test_a_skipped_step_goes_on_and_a_rejected_one_ends_the_loop_with_the_system_as_it_was(
    stack: StackInfo, deployments: list[str], reset_platform: StackInfo, release: Stack,
) -> None:
    inc = incident()
    remote_before = release.host.head()
    run_id = start(RESPOND, incident_id=inc, severity="SEV2", title="suspicious deposits", initiated_by=ONCALL,
                   dry_run=False, contain_lever="platform-freeze", approval_timeout_s=300)
    # Nothing was deployed lately: the last deploy is two days old, so rollback asks for a policy override.
    steps = _decide(inc, {"contain": "skip", "rollback": "reject"}, expect=2)
    assert steps == ["contain-platform-freeze", "rollback-override-age"]
    run = finish(run_id, timeout_s=240)
    out = result(run)
    assert run.state is not None and run.state.is_completed(), run.state and run.state.message
    assert out["stopped_at"] == "rollback" and not out["all_clear"]
    assert [(s["step"], s["outcome"]) for s in out["steps"]] == [
        ("snapshot-context", "completed"), ("capture-evidence", "completed"), ("contain", "skipped"),
        ("rollback", "reject")]
    assert out["steps"][2]["message"] == f"skipped by {LEAD}: drill: skip contain-platform-freeze"
    token = stack.admin_tokens["viewer"].get_secret_value()
    freeze = httpx.get(f"{stack.admin_url}/api/v1/maintenance", headers={"Authorization": f"Bearer {token}"}).json()
    assert freeze["is_active"] is False and release.host.head() == remote_before
    postmortem = _artifact(f"postmortem-{inc.lower()}")
    assert f"loop ended at rollback: reject by {LEAD}" in postmortem
    assert f"approval skip: contain-platform-freeze by {LEAD}" in postmortem
