"""rollback: seed 000 step 4 — "rollback = revert + rebuild" when the bad commit is < 24 h old."""

from __future__ import annotations

from typing import Annotated, Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import Field

from flows.verify_round_trip import verify_round_trip
from remediation.domain.rollback import CommitSha, RevertPlan, revert_message, summary_markdown
from remediation.flowkit.approve import Proposal, approve_until_stable
from remediation.flowkit.initiator import not_confirmed, verify_initiator
from remediation.flowkit.locks import target_lock
from remediation.flowkit.params import (
    ApprovalTimeout,
    DryRunRisky,
    IncidentId,
    Initiator,
    LockWait,
    TargetName,
    described,
)
from remediation.flowkit.run_context import tag_current_run
from remediation.flowkit.runbook import runbook_text
from remediation.target.inventory import Target, load_target
from tasks.gateway import wait_for_health
from tasks.git import plan_revert, push_revert
from tasks.host import get_deployed_revision, rebuild_on_host, release_failure_evidence

RUNBOOK = "rollback"


def _plan(inv: Target, bad_commit: str | None) -> RevertPlan:
    deployed = get_deployed_revision(inv)
    return plan_revert(inv, bad_commit, deployed.sha)


def _verify(inv: Target, incident_id: str, initiated_by: str) -> dict[str, Any]:
    state = verify_round_trip(incident_id=incident_id, target=inv.name, initiated_by=initiated_by,
                              return_state=True)
    data = state.result(raise_on_failure=False)
    return {"message": state.message, **(cast(dict[str, Any], data) if isinstance(data, dict) else {"ok": False})}


def _after_deploy(inv: Target, incident_id: str, initiated_by: str, health_deadline_s: float,
                  result: dict[str, Any], verify: bool) -> State:
    """Health with backoff and a deadline, then the round trip; never a second revert on failure."""
    health = wait_for_health(inv, health_deadline_s)
    result["health"] = health
    if not health["ok"]:
        result["failure_evidence"] = release_failure_evidence(inv)
        create_markdown_artifact(
            key=f"rollback-failed-{incident_id.lower()}",
            markdown=f"### rollback on `{inv.name}`: /health never returned\n\n"
                     f"- last answer: `{health['http_status']}` `{health['body'] or health['error']}`\n"
                     f"- host at `{result['failure_evidence']['host_head'][:12]}`\n\n"
                     f"```\n{result['failure_evidence']['log_tail'][-4000:]}\n```\n",
        )
        return Failed(message=f"reverted and rebuilt, but /health is not 200 after {health['waited_s']:.0f} s "
                              f"(last: {health['http_status'] or health['error']}); not reverting again — "
                              "see the rollback-failed artifact", data=result)
    if not verify:
        return Completed(message="health is back (round trip not asked for)", data=result)
    result["verify"] = _verify(inv, incident_id, initiated_by)
    if result["verify"].get("failed"):
        return Failed(message=f"health is back but the round trip failed: {result['verify']['message']}",
                      data=result)
    return Completed(message=f"health is back; {result['verify']['message']}", data=result)


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def rollback(
    incident_id: IncidentId,
    initiated_by: Initiator,
    target: TargetName = "sandbox",
    bad_commit: CommitSha | None = None,
    dry_run: DryRunRisky = True,
    verify: Annotated[bool, Field(description="After a healthy rebuild, run `verify-round-trip` (a netted "
                                              "deposit, withdraw, bet and settle on each brand's synthetic player)")
                      ] = True,
    health_deadline_s: Annotated[float, Field(ge=5, le=3600, description="Seconds (5-3600) to wait for the "
                                              "gateway's `/health` to answer 200 after the rebuild; never healthy "
                                              "fails the run with the last health body (no second revert)")] = 120,
    approval_timeout_s: ApprovalTimeout | None = None,
    lock_wait_s: LockWait = 60,
) -> State:
    """Revert the bad commit (default: the last deploy), push, rebuild on the host over SSH, wait for
    health, verify a round trip. Approval first; older than the policy's limit only as an override."""
    log = get_run_logger()
    inv = load_target(target)
    tag_current_run(incident_id, RUNBOOK, inv.name)
    plan = _plan(inv, bad_commit)
    summary = summary_markdown(incident_id, plan)
    create_markdown_artifact(key=f"rollback-plan-{incident_id.lower()}", markdown=summary)
    result: dict[str, Any] = {"plan": plan.model_dump(mode="json")}

    if plan.state == "reverted-and-deployed":
        log.info("%s is already reverted by %s and deployed: nothing to revert",
                 plan.bad.sha[:12], cast(Any, plan.existing_revert).sha[:12])
        result["outcome"] = "already-reverted"
        if dry_run:
            return Completed(message="already reverted and deployed; nothing to do (dry run)", data=result)
        return _after_deploy(inv, incident_id, initiated_by, health_deadline_s, result, verify)
    if dry_run:
        advice = "forward fix recommended (policy), " if plan.too_old else ""
        return Completed(message=f"dry run: {advice}would revert {plan.bad.sha[:12]} ({len(plan.files)} file(s)) "
                                 f"and rebuild on {plan.host}", data={**result, "outcome": "dry-run"})

    initiator = verify_initiator(inv, initiated_by, timeout_s=approval_timeout_s or inv.policy.approval_timeout_s)
    if initiator is None:
        return not_confirmed(initiated_by, "not rolled back", **result)
    step = "rollback-override-age" if plan.too_old else "rollback"
    with target_lock(inv, f"release:{inv.git.deploy_host}", wait_s=lock_wait_s):
        # The approval holds only for the plan it saw (someone may have reverted or pushed meanwhile).
        def replan() -> Proposal[RevertPlan]:
            again = _plan(inv, plan.bad.sha)
            return Proposal(again, again.approval_view(), summary_markdown(incident_id, again))

        verdict = approve_until_stable(step, inv, Proposal(plan, plan.approval_view(), summary), replan,
                                       requested_by=initiated_by, timeout_s=approval_timeout_s)
        advice = ". Policy: fix forward." if plan.too_old else "."
        if (stop := verdict.stopped("not rolled back", result, advice)) is not None:
            return stop
        approval = verdict.approval
        assert approval is not None
        plan = verdict.proposal.plan
        result["approval"] = approval.model_dump(mode="json")
        if plan.too_old:
            log.warning("policy override: %s approved reverting a %.1f h old commit: %s",
                        approval.approver, plan.bad_age_hours, approval.reason)
        if plan.existing_revert is not None:
            revert = plan.existing_revert
        else:
            run_id = str(flow_run.get_id()) if flow_run.get_id() else None
            revert = push_revert(inv, plan, revert_message(plan, incident_id, approval.approver,
                                                           approval.reason, run_id))
        result["revert"] = revert.model_dump(mode="json")
        result["rebuild"] = rebuild_on_host(inv, revert.sha)
    result["outcome"] = "reverted"
    return _after_deploy(inv, incident_id, initiated_by, health_deadline_s, result, verify)
