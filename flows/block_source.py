"""block-source: seed 001 "Block suspicious IPs", seed 002 §3.7 "Identify the offender … Block at the edge",
seed 003 "single IP ≥ 10× the median → likely a probe; block at the edge" — the access log read, the
offenders approved by address, blocked once at the target's edge with an expiry, verified as a client sees
it, the access log in the evidence before anything is blocked; `recover` lifts the blocks."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State
from pydantic import Field

from flows.capture_evidence import evidence_first
from remediation.domain.levers import AppliedChange, edge_block_change, edge_resource
from remediation.domain.sources import (
    SourcePlan,
    block_changes,
    candidates,
    plan_sources,
    summary_markdown,
    validate_addresses,
)
from remediation.errors import BadInputError
from remediation.flowkit.approve import Proposal, approve_until_stable
from remediation.flowkit.change_log import log_intent, log_outcome
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
from tasks.admin_api import apply_lever_change
from tasks.edge import check_edge_blocks, edge_of, get_edge_blocks, protected_networks, read_top_sources

RUNBOOK = "block-source"
SourceAddress = Annotated[str, Field(pattern=r"^[0-9A-Fa-f.:/]{2,49}$")]
Addresses = Annotated[list[SourceAddress], Field(max_length=100, description=(
    "Addresses or networks to block, e.g. `203.0.113.7` or `203.0.113.0/24` (no broader than the target's "
    "rule allows). Empty (the default): the sources the access log shows over the target's rule (seed 003: "
    "≥ 10× the median over the last 5 minutes). Every address is refused, before anything is read, when it is "
    "malformed, every address (`0.0.0.0/0`, `::/0`) or covers a never-blocked one (the gateway's or load "
    "balancer's own address, the platform's own clients)."))]
Expiry = Annotated[int, Field(ge=1, le=30 * 86400, description=(
    "Seconds until each block lifts itself (1-2592000, and no more than the target's `max_expiry_s`). Empty: "
    "the target's `default_expiry_s` (the sandbox: 3600). `recover` lifts them sooner."))]
EvidenceProfileName = Annotated[str, Field(pattern=PROFILE_NAME, description=(
    "The target's evidence profile captured before anything is blocked, e.g. `edge`: gateway health and log, "
    "the access log's last lines."))]


def _row(a: AppliedChange) -> dict[str, Any]:
    return {"address": a.change.extra["address"], "outcome": a.outcome, "path": a.path,
            "expiry_s": a.change.extra.get("expiry_s")}


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def block_source(
    incident_id: IncidentId,
    initiated_by: Initiator,
    target: TargetName = "sandbox",
    addresses: Addresses | None = None,
    expiry_s: Expiry | None = None,
    evidence_profile: EvidenceProfileName = "edge",
    dry_run: DryRunRisky = True,
    approval_timeout_s: ApprovalTimeout | None = None,
    lock_wait_s: LockWait = 60,
) -> State:
    """Block abusive sources at the edge: bad input refused → plan from the access log → evidence →
    approval bound to the addresses → block once each, with an expiry → verify as clients see it."""
    inv = load_target(target)
    edge = edge_of(inv)
    if evidence_profile not in inv.evidence_profiles:
        raise BadInputError(f"evidence_profile {evidence_profile!r} is not one of {sorted(inv.evidence_profiles)}")
    rule = edge.rule
    protected = protected_networks(inv, edge)
    explicit = validate_addresses(addresses, rule, protected) if addresses else None
    expiry = float(expiry_s) if expiry_s is not None else rule.default_expiry_s
    if expiry > rule.max_expiry_s:
        raise BadInputError(f"expiry_s {expiry:g} is over the target's max_expiry_s {rule.max_expiry_s:g}")
    tag_current_run(incident_id, RUNBOOK, inv.name)
    where = edge.block_at.describe()
    reason = f"block-source {incident_id}"

    def plan() -> Proposal[SourcePlan]:
        traffic = read_top_sources(inv)
        blocked = get_edge_blocks(inv, candidates(traffic, rule, explicit))
        found = plan_sources(traffic, rule, blocked=blocked, explicit=explicit, expiry_s=expiry, protected=protected)
        return Proposal(found, found.view(incident_id, inv.name, edge.block_at.kind),
                        summary_markdown(incident_id, inv.name, found, where))

    proposal = plan()
    chosen = [b.address for b in proposal.plan.block]
    if not chosen:
        already = [b.address for b in proposal.plan.already]
        if already:
            verified = check_edge_blocks(inv, [edge_block_change(a, expiry_s=expiry, reason=reason, edge=where)
                                               for a in already])
            return Completed(message=f"{', '.join(already)} already blocked at {edge.block_at.kind}; nothing applied; "
                                     f"verified={verified['ok']}",
                             data={"outcome": "already-in-place", "already": already, "verification": verified})
        spared = [b.address for b in proposal.plan.spared]
        return Completed(message=f"no source over the rule ({proposal.plan.traffic.source_count} source(s), median "
                                 f"{proposal.plan.traffic.median:g}); nothing to block"
                                 + (f"; spared (never blocked): {', '.join(spared)}" if spared else ""),
                         data={"outcome": "nothing-to-do", "spared": spared})
    if dry_run:
        create_markdown_artifact(key=f"block-plan-{incident_id.lower()}",
                                 description=f"block-source dry run: {len(chosen)} source(s) would be blocked",
                                 markdown=proposal.summary + "\n*dry run: nothing changed*\n")
        return Completed(message=f"dry run: would block {', '.join(chosen)} at {edge.block_at.kind} for {expiry:g} s",
                         data={"outcome": "dry-run", "would_block": chosen, "expiry_s": expiry})

    initiator = verify_initiator(inv, initiated_by, timeout_s=approval_timeout_s or inv.policy.approval_timeout_s)
    if initiator is None:
        return not_confirmed(initiated_by)
    # The access log as it is, in S3, before anyone is blocked (seed 002 §3.7 step 5: preserve evidence).
    evidence_before, before = evidence_first(incident_id, inv.name, evidence_profile, initiated_by)
    if evidence_before is None:
        return Failed(message=f"evidence before could not be stored ({before.message}); nothing was blocked",
                      data={"outcome": "no-evidence"})
    locked = set(chosen)

    def settled(p: Proposal[SourcePlan]) -> State | None:
        now = {b.address for b in p.plan.block}
        if not now:
            return Completed(message="the sources were blocked by someone else meanwhile; nothing applied",
                             data={"outcome": "already-in-place"})
        if now - locked:
            return Failed(message=f"the plan now also blocks {', '.join(sorted(now - locked))} (new offenders "
                                  "meanwhile); nothing blocked — run block-source again", data={"outcome": "replan"})
        return None

    with target_lock(inv, [edge_resource(a) for a in chosen], wait_s=lock_wait_s):
        verdict = approve_until_stable(RUNBOOK, inv, proposal, plan, requested_by=initiated_by,
                                       timeout_s=approval_timeout_s, settled=settled)
        if (stop := verdict.stopped()) is not None:
            return stop
        approval = verdict.approval
        changes = block_changes(verdict.proposal.plan, reason=reason, edge=where)
        done: list[AppliedChange] = []
        for change in changes:
            intent = log_intent(inv, incident_id, change, verdict.proposal.hash, approval.approvers if approval else [])
            done.append(apply_lever_change(inv, change, verdict.proposal.hash))
            log_outcome(inv, incident_id, intent, done[-1])
        verified = check_edge_blocks(inv, changes)
    # No capture after: the verification above is what changed, as clients see it, and the access log
    # keeps the offender's 403s for the next capture (or the postmortem's); a second capture here would
    # only delay the result by seconds while the flood is being answered.
    rows = [_row(a) for a in done]
    blocked = ", ".join(f"{r['address']} {r['outcome']}" for r in rows)
    get_run_logger().info("block-source on %s: %s; verified=%s", inv.name, blocked, verified["ok"])
    normal = verified["normal_client"] or {}
    table = "\n".join(f"| {c['address']} | {r['outcome']} | {r['path']} | {'ok' if c['ok'] else 'WRONG'} | "
                      f"{(c.get('probe') or {}).get('http_status', '—')} |"
                      for r, c in zip(rows, verified["checks"], strict=True))
    tail = (f"A normal client ({normal.get('source')}) got {normal.get('http_status')} on `{normal.get('path')}`. "
            f"Evidence before: {evidence_before}. Undo: `recover` for {incident_id}; each block lifts itself "
            f"after {expiry:g} s.\n")
    create_markdown_artifact(
        key=f"block-result-{incident_id.lower()}", description=f"block-source result for {incident_id}",
        markdown=f"{verdict.proposal.summary}\n| address | done | via | check | probe from it |\n"
                 f"|---|---|---|---|---|\n{table}\n\n{tail}",
    )
    result = {"outcome": "applied", "blocked": rows, "verification": verified, "expiry_s": expiry,
              "evidence_before": evidence_before,
              "initiator": initiator.model_dump(mode="json"),
              "approval": approval.model_dump(mode="json") if approval else None}
    if not verified["ok"]:
        wrong = [c["address"] for c in verified["checks"] if not c["ok"]]
        return Failed(message=f"blocked ({blocked}) but verification failed: sources not refused {wrong}, normal "
                              f"client got {normal.get('http_status')}", data=result)
    return Completed(message=f"blocked {len(rows)} source(s) ({blocked}) at {edge.block_at.kind} for {expiry:g} s; "
                             f"verified: refused from the source, {normal.get('http_status')} for a normal client",
                     data=result)
