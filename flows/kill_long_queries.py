"""kill-long-queries: seed 001 "Database Connection Issues → Kill long-running queries" — evidence first,
the backends over a threshold approved by identity, cancelled, terminated after a grace if still there,
the lock queue checked drained, evidence after."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State
from pydantic import Field

from flows.capture_evidence import evidence_first
from remediation.domain.backends import BackendPlan, SystemKind, plan_backends, summary_markdown
from remediation.errors import BadInputError
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
from remediation.target.evidence_profile import PROFILE_NAME
from remediation.target.inventory import load_target
from tasks.database.backends import check_backends_stopped, read_long_backends, stop_backends

RUNBOOK = "kill-long-queries"
#: One run at a time signals this target's database backends.
RESOURCE = "pg-backends"
Threshold = Annotated[float, Field(ge=1, le=86400, description=(
    "Seconds a query must have been running to be stopped (1-86400). Seed 001's investigation uses "
    "5 minutes (300)."))]
Include = Annotated[list[SystemKind], Field(description=(
    "System backends that may be stopped too: `autovacuum` workers, `replication` senders. Empty (the "
    "default): only client sessions; our own session never."))]
Grace = Annotated[float, Field(ge=1, le=300, description=(
    "Seconds between `pg_cancel_backend` and `pg_terminate_backend` for a session still on its query or "
    "still blocking others (1-300)."))]
EvidenceProfileName = Annotated[str, Field(pattern=PROFILE_NAME, description=(
    "The target's evidence profile captured before (and after) anything is stopped, e.g. `database`."))]


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def kill_long_queries(
    incident_id: IncidentId,
    initiated_by: Initiator,
    target: TargetName = "sandbox",
    threshold_s: Threshold = 300,
    include: Include | None = None,
    grace_s: Grace = 10,
    evidence_profile: EvidenceProfileName = "database",
    dry_run: DryRunRisky = True,
    approval_timeout_s: ApprovalTimeout | None = None,
    lock_wait_s: LockWait = 60,
) -> State:
    """Stop the queries running longer than the threshold: plan → evidence → approval → cancel → terminate
    after the grace → verify the lock queue drained → evidence."""
    log = get_run_logger()
    inv = load_target(target)
    if evidence_profile not in inv.evidence_profiles:
        raise BadInputError(f"evidence_profile {evidence_profile!r} is not one of {sorted(inv.evidence_profiles)}")
    tag_current_run(incident_id, RUNBOOK, inv.name)
    kinds = set(include or [])

    def plan() -> Proposal[BackendPlan]:
        found = plan_backends(read_long_backends(inv, threshold_s), threshold_s, kinds)
        return Proposal(found, found.view(incident_id, inv.name), summary_markdown(incident_id, inv.name, found,
                                                                                  grace_s))

    proposal = plan()
    chosen = proposal.plan.chosen
    pids = ", ".join(str(b.pid) for b in chosen)
    if not chosen:
        return Completed(message=f"no query has run longer than {threshold_s:g} s "
                                 f"({len(proposal.plan.left)} left alone); nothing to stop",
                         data={"outcome": "nothing-to-do", "left": len(proposal.plan.left)})
    if dry_run:
        create_markdown_artifact(key=f"kill-plan-{incident_id.lower()}",
                                 description=f"kill-long-queries dry run: {len(chosen)} backend(s) would be stopped",
                                 markdown=proposal.summary + "\n*dry run: nothing changed*\n")
        return Completed(message=f"dry run: would cancel {len(chosen)} backend(s): {pids}",
                         data={"outcome": "dry-run", "would_stop": [b.identity for b in chosen]})

    initiator = verify_initiator(inv, initiated_by, timeout_s=approval_timeout_s or inv.policy.approval_timeout_s)
    if initiator is None:
        return not_confirmed(initiated_by)
    # The database as it is, in S3, before anything is stopped (seed 003: capture before mitigating).
    evidence_before, before = evidence_first(incident_id, inv.name, evidence_profile, initiated_by)
    if evidence_before is None:
        return Failed(message=f"evidence before could not be stored ({before.message}); nothing was stopped",
                      data={"outcome": "no-evidence"})
    with target_lock(inv, RESOURCE, wait_s=lock_wait_s):
        # The approval names backends by pid, session start and query start; the apply signals only those
        # still exactly there, so one that ended meanwhile needs no new approval and a new one gets none.
        verdict = approve_until_stable(RUNBOOK, inv, proposal, lambda: proposal, requested_by=initiated_by,
                                       timeout_s=approval_timeout_s)
        if (stop := verdict.stopped()) is not None:
            return stop
        done = stop_backends(inv, chosen, grace_s)
        verified = check_backends_stopped(inv, chosen)
    evidence_after, after = evidence_first(incident_id, inv.name, evidence_profile, initiated_by)
    by_pid: dict[str, str] = done["by_pid"]
    outcome = ", ".join(f"{pid} {what}" for pid, what in by_pid.items())
    log.info("kill-long-queries on %s: %s; verified=%s", inv.name, outcome, verified["ok"])
    create_markdown_artifact(
        key=f"kill-result-{incident_id.lower()}", description=f"kill-long-queries result for {incident_id}",
        markdown=proposal.summary + "\n| pid | done |\n|---|---|\n"
        + "\n".join(f"| {pid} | {what} |" for pid, what in by_pid.items())
        + f"\n\nLock queue behind them: {verified['waiting']} waiting; evidence before {evidence_before}, "
          f"after {evidence_after or 'not stored: ' + str(after.message)}\n",
    )
    result = {"outcome": "applied", "by_pid": by_pid, "verification": verified,
              "evidence_before": evidence_before, "evidence_after": evidence_after,
              "initiator": initiator.model_dump(mode="json"),
              "approval": verdict.approval.model_dump(mode="json") if verdict.approval else None}
    if not verified["ok"]:
        return Failed(message=f"signalled ({outcome}) but {len(verified['remaining'])} still on their query or "
                              f"blocking, {verified['waiting']} waiting behind them", data=result)
    return Completed(message=f"stopped {len(chosen)} backend(s) ({outcome}); lock queue drained; verified",
                     data=result)
