"""respond: seed 000's standard response loop, each step one of the runbook flows as a subflow."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed, State
from pydantic import Field

from flows.capture_evidence import capture_evidence
from flows.contain import BrandId, contain
from flows.postmortem import Title, postmortem
from flows.reconcile import reconcile
from flows.recover import recover
from flows.restart_service import ServiceName, restart_service
from flows.rollback import rollback
from flows.snapshot_context import snapshot_context
from flows.verify_round_trip import verify_round_trip
from remediation.domain.reconcile import Scope
from remediation.domain.rollback import CommitSha
from remediation.flowkit.incident_loop import Loop, Step
from remediation.flowkit.initiator import not_confirmed, verify_initiator
from remediation.flowkit.params import (
    ApprovalTimeout,
    DryRunRisky,
    IncidentId,
    Initiator,
    LeverChoice,
    ReconcileScope,
    SeverityChoice,
    TargetName,
    described,
)
from remediation.flowkit.run_context import tag_current_run
from remediation.flowkit.runbook import runbook_text
from remediation.target.inventory import load_target

RUNBOOK = "respond"
PatternChoice = Annotated[Literal["bad-deploy", "api-down"], Field(description=(
    "Which response: `bad-deploy` (seed 000's loop: snapshot → capture → contain → rollback → verify → reconcile → "
    "recover); `api-down` (seed 003 \"API down\": snapshot → restart-service, which stores the service's logs "
    "in S3 before restarting one instance at a time → verify round trip)."))]
Impact = Annotated[str, Field(
    pattern=r"^[\w .,:;!?()#/@%+'—–-]{1,200}$",
    description="Current impact, one line, for the status updates (e.g. `deposits failing on every brand`)",
)]


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def respond(
    incident_id: IncidentId,
    initiated_by: Initiator,
    target: TargetName = "sandbox",
    pattern: PatternChoice = "bad-deploy",
    severity: SeverityChoice = "SEV2",
    title: Title = "incident",
    impact: Impact = "under investigation",
    contain_lever: LeverChoice | None = "deposit-halt",
    brand_id: BrandId | None = None,
    bad_commit: CommitSha | None = None,
    reconcile_scope: ReconcileScope = Scope(),  # noqa: B008 - frozen pydantic model: the UI form's default
    service: Annotated[ServiceName, Field(description="`api-down` only: the service to restart, as the target's "
                                                      "inventory names it (the sandbox: `wallet`).")] = "wallet",
    dry_run: DryRunRisky = True,
    status_interval_s: Annotated[float, Field(ge=1, le=86400, description="SEV1/SEV2: seconds between status "
                                              "updates to the channel (1-86400; seed 000: every 30 min = 1800), "
                                              "besides one at each step; SEV3/SEV4 get the per-step ones only")
                                 ] = 1800,
    approval_timeout_s: ApprovalTimeout | None = None,
) -> State:
    """acknowledge → snapshot → capture evidence → contain ⚠ → rollback ⚠ → verify → reconcile ⚠ →
    recover ⚠ → postmortem (`api-down`: acknowledge → snapshot → restart-service ⚠ → verify → postmortem).
    A rejected or timed-out approval ends the loop at that step; a skipped one (with its reason) lets it
    go on."""
    log = get_run_logger()
    inv = load_target(target)
    tag_current_run(incident_id, RUNBOOK, inv.name)
    if not dry_run:
        # Acknowledging is proving who you are: every risky step of the loop then trusts this run's check.
        initiator = verify_initiator(inv, initiated_by, timeout_s=approval_timeout_s or inv.policy.approval_timeout_s)
        if initiator is None:
            return not_confirmed(initiated_by, "not started", steps=[], all_clear=False, stopped_at="acknowledge")
    loop = Loop(inv, incident_id, severity, title, impact, status_interval_s, pattern, dry_run=dry_run)
    acknowledged = datetime.now(UTC)
    create_markdown_artifact(
        key=f"acknowledged-{incident_id.lower()}",
        markdown=f"### {incident_id} acknowledged\n\n- by: {initiated_by}\n- at: {acknowledged.isoformat()} UTC\n"
                 f"- severity: {severity}\n- title: {title}\n",
    )
    log.info("%s %s acknowledged by %s at %s", severity, incident_id, initiated_by, acknowledged.isoformat())
    loop.start(initiated_by)
    common: dict[str, Any] = {"incident_id": incident_id, "target": inv.name, "initiated_by": initiated_by}
    risky: dict[str, Any] = {**common, "dry_run": dry_run, "approval_timeout_s": approval_timeout_s}
    api_down = [
        Step("snapshot-context", lambda: snapshot_context(**common, return_state=True), risky=False),
        # Seed 003: "Logs first … Restart only after capturing logs": restart-service stores them in S3 itself.
        Step("restart-service", lambda: restart_service(**risky, service=service, return_state=True)),
        Step("verify-round-trip", lambda: verify_round_trip(**common, return_state=True), risky=False),
    ]
    bad_deploy = [
        Step("snapshot-context", lambda: snapshot_context(**common, return_state=True), risky=False),
        Step("capture-evidence", lambda: capture_evidence(**common, return_state=True), risky=False),
        Step("contain", lambda: contain(**risky, lever=contain_lever, brand_id=brand_id, return_state=True),
             skip_reason=None if contain_lever else "no containment lever chosen"),
        # verify=False: the loop's next step is the round trip itself.
        Step("rollback", lambda: rollback(**risky, bad_commit=bad_commit, verify=False, return_state=True)),
        Step("verify-round-trip", lambda: verify_round_trip(**common, return_state=True), risky=False,
             must_pass=False),
        # Seed 000: clean reconciliation before all-clear. Reconciled while the levers still hold (fewer
        # writes racing the apply), recover's gates then find the books clean: a green incident reads green.
        Step("reconcile", lambda: reconcile(**risky, scope=reconcile_scope, return_state=True)),
        Step("recover", lambda: recover(**risky, return_state=True)),
    ]
    try:
        for step in api_down if pattern == "api-down" else bad_deploy:
            if not loop.run(step):
                break
        all_clear = loop.all_clear()
    finally:
        loop.finish()
    pm = postmortem(incident_id=incident_id, target=inv.name, severity=severity, title=title,
                    initiated_by=initiated_by, outcome=loop.outcome(dry_run), escalated=loop.escalated_lines() or None,
                    dry_run=dry_run, return_state=True)
    create_table_artifact(key=f"respond-{incident_id.lower()}", table=loop.table(),
                          description=f"response loop for {incident_id}: each step's outcome")
    data = {"steps": loop.table(), "all_clear": all_clear, "stopped_at": loop.stopped_at,
            "postmortem": pm.message, "status_updates": loop.updates_sent, "escalated": loop.escalated,
            **({"status_updates_not_posted": loop.would_post} if dry_run else {})}
    if loop.stopped_at is not None:
        return Completed(message=f"loop ended at {loop.stopped_at}: {loop.stop_reason}; nothing after it ran",
                         data=data) if loop.stopped_safely else Failed(
            message=f"loop stopped at {loop.stopped_at}: {loop.stop_reason}", data=data)
    if dry_run:
        return Completed(message="dry run: every step shown, nothing changed", data=data)
    if not all_clear:
        return Failed(message="loop done but NOT all-clear: " + loop.why_not_clear(), data=data)
    return Completed(message=f"all-clear: {loop.pattern.clear_text}", data=data)
