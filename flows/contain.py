"""contain: seed 000 step 3, "Isolate blast radius" — one chosen lever, approved, applied once, verified."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State
from pydantic import Field

from remediation.domain.levers import (
    AppliedChange,
    BrandFlag,
    Lever,
    LeverChange,
    apply_path,
    needs_approval,
    plan_contain,
    resource_for,
)
from remediation.errors import BadInputError
from remediation.flowkit.approve import Proposal, approve_until_stable
from remediation.flowkit.change_log import incident_changes, log_intent, log_outcome
from remediation.flowkit.initiator import not_confirmed, verify_initiator
from remediation.flowkit.locks import target_lock
from remediation.flowkit.params import (
    ApprovalTimeout,
    DryRunRisky,
    IncidentId,
    Initiator,
    LeverChoice,
    LockWait,
    TargetName,
    described,
)
from remediation.flowkit.run_context import tag_current_run
from remediation.flowkit.runbook import runbook_text
from remediation.target.inventory import Target, load_target
from tasks.admin_api import apply_lever_change, get_lever_state
from tasks.wallet import check_lever_effect

RUNBOOK = "contain"
BrandId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                                description="`brand-disable` only: the brand to disable, one of the target's "
                                            "brands (e.g. `alpha`); leave empty for the other levers")]
BrandFlags = Annotated[
    list[BrandFlag],
    Field(description="`brand-disable` only: which `payment_policy` flags to set false: `deposit_enabled` "
                      "(the default when empty) and/or `withdraw_enabled`"),
]
Message = Annotated[
    str,
    Field(pattern=r"^[\w .,:!?()#/@+—–-]{0,200}$",
          description="`platform-freeze`: the maintenance message; `provider-ingress-block`: the block reason. "
                      "Empty: `Emergency maintenance — <incident>`. Letters, digits, spaces and "
                      ". , : ! ? ( ) # / @ + - only"),
]


def _stays_live(target: Target, lever: Lever, brand_id: str | None) -> list[str]:
    if lever == "platform-freeze":
        return ["nothing: every wallet write answers Finance maintenance"]
    if lever == "deposit-halt":
        return ["withdrawals, bets and settles on every brand"]
    if lever == "brand-disable":
        return [f"brand {b}" for b in target.brands if b != brand_id] + [f"{brand_id}'s bets and settles"]
    if lever == "redis-eviction":
        return ["every wallet flow; the cache keeps its most recently used keys and drops the rest"]
    return ["deposits and withdrawals through the gateway"]


def _summary(incident_id: str, target: Target, change: LeverChange, live: list[str], read_via: str) -> str:
    return (
        f"### contain {change.lever} on `{target.name}` for {incident_id}\n\n"
        f"- **change**: {change.description}\n- **from** `{change.before}` **to** `{change.after}`\n"
        f"- **path**: {apply_path(change, read_via)}\n"
        f"- **stays live**: {'; '.join(live)}\n"
    )


def _finish_intents(inv: Target, incident_id: str, change: LeverChange) -> list[int]:
    """This incident's intents for the lever that a dead run left without an outcome, now that the
    lever is found holding their value: record the outcome the dead run could not."""
    done = []
    for entry in incident_changes(inv, incident_id):
        if entry.unfinished and entry.change.resource == change.resource and entry.change.after == change.after:
            log_outcome(inv, incident_id, entry.intent_id, AppliedChange(
                change=entry.change, outcome="applied", path="unknown", at=entry.intended_at,
                note="found in place by a later run: the run that intended it died before recording it",
                flow_run_id=entry.flow_run_id, approval_plan_hash=entry.plan_hash))
            done.append(entry.intent_id)
    return done


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def contain(
    incident_id: IncidentId,
    lever: LeverChoice,
    initiated_by: Initiator,
    target: TargetName = "sandbox",
    brand_id: BrandId | None = None,
    brand_flags: BrandFlags | None = None,
    message: Message | None = None,
    dry_run: DryRunRisky = True,
    approval_timeout_s: ApprovalTimeout | None = None,
    lock_wait_s: LockWait = 60,
) -> State:
    """Apply one containment lever: plan → approval bound to the plan → apply once → verify → record."""
    log = get_run_logger()
    inv = load_target(target)
    if lever == "brand-disable":
        if brand_id not in inv.brands:
            raise BadInputError(f"brand-disable needs brand_id, one of {inv.brands}; got {brand_id!r}")
    elif brand_id is not None or brand_flags is not None:
        raise BadInputError(f"brand_id and brand_flags apply only to brand-disable, not {lever}")
    default_flags: list[BrandFlag] = ["deposit_enabled"]
    flags = tuple(sorted(set(brand_flags or default_flags)))
    text = message or f"Emergency maintenance — {incident_id}"
    tag_current_run(incident_id, RUNBOOK, inv.name)
    live = _stays_live(inv, lever, brand_id)

    def plan() -> Proposal[LeverChange]:
        state = get_lever_state(inv)
        change = plan_contain(lever, state, message=text, brand_id=brand_id, flags=flags)
        return Proposal(change, {"incident_id": incident_id, "target": inv.name,
                                 "change": change.model_dump(mode="json")},
                        _summary(incident_id, inv, change, live, state.read_via))

    proposal = plan()
    change = proposal.plan
    if change.in_place:
        log.info("%s is already in place on %s: nothing to apply", lever, inv.name)
        verified = check_lever_effect(inv, change, incident_id)
        return Completed(message=f"{lever} already in place; verified={verified['ok']}",
                         data={"outcome": "already-in-place", "verification": verified,
                               "finished_intents": [] if dry_run else _finish_intents(inv, incident_id, change)})
    if dry_run:
        create_markdown_artifact(key=f"contain-plan-{incident_id.lower()}",
                                 markdown=proposal.summary + "\n*dry run: nothing changed*\n")
        return Completed(message=f"dry run: would {change.description}",
                         data={"outcome": "dry-run", "would_change": [change.model_dump(mode="json")],
                               "stays_live": live})

    initiator = verify_initiator(inv, initiated_by, timeout_s=approval_timeout_s or inv.policy.approval_timeout_s)
    if initiator is None:
        return not_confirmed(initiated_by)

    def put_in_place_meanwhile(p: Proposal[LeverChange]) -> State | None:
        return Completed(message=f"{lever} was put in place by someone else meanwhile; nothing applied",
                         data={"outcome": "already-in-place"}) if p.plan.in_place else None

    with target_lock(inv, resource_for(lever, brand_id), wait_s=lock_wait_s):
        verdict = approve_until_stable(
            f"contain-{lever}", inv, proposal, plan, requested_by=initiated_by, timeout_s=approval_timeout_s,
            ask=needs_approval(lever, approve_deposit_halt=inv.policy.approve_deposit_halt,
                               approve_brand_disable=inv.policy.approve_brand_disable),
            settled=put_in_place_meanwhile)
        if (stop := verdict.stopped()) is not None:
            return stop
        approval = verdict.approval
        change = verdict.proposal.plan
        intent = log_intent(inv, incident_id, change, verdict.proposal.hash, approval.approvers if approval else [])
        applied = apply_lever_change(inv, change, verdict.proposal.hash)
        log_outcome(inv, incident_id, intent, applied)
        verified = check_lever_effect(inv, change, incident_id)
    result = {"outcome": applied.outcome, "path": applied.path, "note": applied.note,
              "change": change.model_dump(mode="json"), "verification": verified,
              "initiator": initiator.model_dump(mode="json"),
              "approval": approval.model_dump(mode="json") if approval else None}
    if not verified["ok"]:
        return Failed(message=f"{lever} applied via {applied.path} but verification failed: {verified['wrong']}",
                      data=result)
    return Completed(message=f"{lever} {applied.outcome} via {applied.path}; verified", data=result)
