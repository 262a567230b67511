"""respond: seed 000's standard response loop, each step one of the runbook flows as a subflow."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed, State
from pydantic import Field

from flows.capture_evidence import capture_evidence
from flows.contain import BrandId, contain
from flows.postmortem import Title, postmortem
from flows.reconcile import reconcile
from flows.recover import recover
from flows.rollback import rollback
from flows.snapshot_context import snapshot_context
from flows.verify_round_trip import verify_round_trip
from remediation.incident_loop import Loop, Step
from remediation.inventory import load_target
from remediation.levers import Lever
from remediation.params import IncidentId, Initiator, TargetName
from remediation.reconcile import Scope
from remediation.rollback import CommitSha
from remediation.run_context import tag_current_run
from remediation.runbook import runbook_text
from remediation.status import Severity

RUNBOOK = "respond"
Impact = Annotated[str, Field(pattern=r"^[\w .,:;!?()#/@%+'—–-]{1,200}$", description="current impact, one line")]


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
def respond(
    incident_id: IncidentId,
    target: TargetName = "sandbox",
    severity: Severity = "SEV2",
    title: Title = "incident",
    impact: Impact = "under investigation",
    initiated_by: Initiator = "unknown",
    contain_lever: Lever | None = "deposit-halt",
    brand_id: BrandId | None = None,
    bad_commit: CommitSha | None = None,
    reconcile_scope: Scope = Scope(),  # noqa: B008 - frozen pydantic model: the UI form's default
    dry_run: bool = True,
    status_interval_s: Annotated[float, Field(ge=1, le=86400)] = 1800,
    approval_timeout_s: Annotated[int, Field(ge=5, le=86400)] | None = None,
) -> State:
    """acknowledge → snapshot → capture evidence → contain ⚠ → rollback ⚠ → verify → recover ⚠ →
    reconcile ⚠ → postmortem. A rejected or timed-out approval ends the loop at that step; a skipped
    one (with its reason) lets it go on."""
    log = get_run_logger()
    inv = load_target(target)
    tag_current_run(incident_id, RUNBOOK, inv.name)
    loop = Loop(inv, incident_id, severity, title, impact, status_interval_s)
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
    steps = [
        Step("snapshot-context", lambda: snapshot_context(**common, return_state=True), risky=False),
        Step("capture-evidence", lambda: capture_evidence(**common, return_state=True), risky=False),
        Step("contain", lambda: contain(**risky, lever=contain_lever, brand_id=brand_id, return_state=True),
             skip_reason=None if contain_lever else "no containment lever chosen"),
        # verify=False: the loop's next step is the round trip itself.
        Step("rollback", lambda: rollback(**risky, bad_commit=bad_commit, verify=False, return_state=True)),
        Step("verify-round-trip", lambda: verify_round_trip(**common, return_state=True), risky=False,
             must_pass=False),
        # recover's books gate can fail on drift that reconcile is about to fix: not a reason to stop.
        Step("recover", lambda: recover(**risky, return_state=True), must_pass=False),
        Step("reconcile", lambda: reconcile(**risky, scope=reconcile_scope, return_state=True)),
    ]
    try:
        for step in steps:
            if not loop.run(step):
                break
        all_clear = loop.all_clear()
    finally:
        loop.finish()
    pm = postmortem(incident_id=incident_id, target=inv.name, severity=severity, title=title,
                    initiated_by=initiated_by, outcome=loop.outcome(dry_run), dry_run=dry_run, return_state=True)
    create_table_artifact(key=f"respond-{incident_id.lower()}", table=loop.table(),
                          description=f"response loop for {incident_id}: each step's outcome")
    data = {"steps": loop.table(), "all_clear": all_clear, "stopped_at": loop.stopped_at,
            "postmortem": pm.message, "status_updates": loop.updates_sent}
    if loop.stopped_at is not None:
        return Completed(message=f"loop ended at {loop.stopped_at}: {loop.stop_reason}; nothing after it ran",
                         data=data) if loop.stopped_safely else Failed(
            message=f"loop stopped at {loop.stopped_at}: {loop.stop_reason}", data=data)
    if dry_run:
        return Completed(message="dry run: every step shown, nothing changed", data=data)
    if not all_clear:
        return Failed(message="loop done but NOT all-clear: " + loop.why_not_clear(), data=data)
    return Completed(message="all-clear: round trip passed and reconciliation clean", data=data)
