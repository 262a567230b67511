"""recover: seed 000 step 3's recovery — undo this incident's levers (and its block-source blocks) in
reverse, then prove all-clear."""

from __future__ import annotations

from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State

from flows.verify_round_trip import verify_round_trip
from remediation.domain.levers import (
    EDGE_BLOCK,
    AppliedChange,
    LeverChange,
    LeverState,
    apply_path,
    current_value,
    drifted,
    edge_address,
    plan_recover,
)
from remediation.flowkit.approve import Proposal, approve_until_stable
from remediation.flowkit.change_log import incident_changes, log_intent, log_outcome, undoable
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
from tasks.admin_api import apply_lever_change, get_lever_state
from tasks.database.ledger import reconcile_dry_run
from tasks.edge import check_edge_blocks
from tasks.wallet import check_lever_effect

RUNBOOK = "recover"


def _lifted_already(recorded: list[AppliedChange], state: LeverState) -> list[str]:
    """This incident's edge blocks no longer in place: their expiry lifted them (or someone did)."""
    latest = {r.change.resource: r for r in sorted(recorded, key=lambda r: r.at) if r.outcome == "applied"}
    return sorted(edge_address(r.change) for r in latest.values()
                  if r.change.lever == EDGE_BLOCK and current_value(r.change, state) == r.change.before)


def _effect(inv: Target, change: LeverChange, incident_id: str) -> dict[str, Any]:
    if change.lever == EDGE_BLOCK:
        return check_edge_blocks(inv, [change])
    return check_lever_effect(inv, change, incident_id)


def _summary(incident_id: str, target: str, undo: list[LeverChange], moved: list[AppliedChange],
             read_via: str, found: list[str], lifted: list[str]) -> str:
    lines = [f"### recover `{target}` for {incident_id}: undo in this order", ""]
    lines += [f"{i}. {c.description} — `{c.before}` → `{c.after}`\n   - path: {apply_path(c, read_via)}"
              for i, c in enumerate(undo, 1)]
    if moved:
        lines += ["", "**Left alone** (moved by someone else since we set them):"]
        lines += [f"- {m.change.resource}: we set `{m.change.after}`" for m in moved]
    if found:
        lines += ["", "**From runs that died mid-change** (the change log's intents without an outcome):"]
        lines += [f"- {note}" for note in found]
    if lifted:
        lines += ["", "**Blocked sources already lifted** (their expiry, or someone, lifted them): "
                  + ", ".join(f"`{a}`" for a in lifted)]
    lines += ["", "Then: a netted round trip on each brand's synthetic player, and ledger vs bucket clean."]
    return "\n".join(lines) + "\n"


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def recover(
    incident_id: IncidentId,
    initiated_by: Initiator,
    target: TargetName = "sandbox",
    dry_run: DryRunRisky = True,
    approval_timeout_s: ApprovalTimeout | None = None,
    lock_wait_s: LockWait = 60,
) -> State:
    """Reverse the incident's recorded lever changes (newest first) after approval; all-clear only
    when a round trip and the books are clean."""
    log = get_run_logger()
    inv = load_target(target)
    tag_current_run(incident_id, RUNBOOK, inv.name)

    def plan() -> Proposal[list[LeverChange]]:
        # The write-ahead log and every lever's live value: a change a dead run made is undone too.
        entries = incident_changes(inv, incident_id)
        edge = sorted({edge_address(e.change) for e in entries if e.change.lever == EDGE_BLOCK})
        state = get_lever_state(inv, edge_addresses=edge)
        recorded, found = undoable(entries, state)
        undo = plan_recover(recorded, state, note=f"recovered {incident_id}")
        moved = drifted(recorded, state)
        lifted = _lifted_already(recorded, state)
        view = {"incident_id": incident_id, "target": inv.name, "undo": [c.model_dump(mode="json") for c in undo],
                "left_alone": sorted(m.change.resource for m in moved), "found": found}
        return Proposal(undo, view, _summary(incident_id, inv.name, undo, moved, state.read_via, found, lifted))

    proposal = plan()
    undo, left_alone = proposal.plan, proposal.view["left_alone"]
    for note in proposal.view["found"]:
        log.warning("%s", note)
    if dry_run:
        create_markdown_artifact(key=f"recover-plan-{incident_id.lower()}",
                                 markdown=proposal.summary + "\n*dry run*\n")
        return Completed(message=f"dry run: would undo {len(undo)} change(s)",
                         data={"outcome": "dry-run", "would_change": [c.model_dump(mode="json") for c in undo],
                               "left_alone": left_alone})

    done: list[AppliedChange] = []
    approval = None
    effects: list[dict[str, Any]] = []
    initiator = verify_initiator(inv, initiated_by, timeout_s=approval_timeout_s or inv.policy.approval_timeout_s)
    if initiator is None:
        return not_confirmed(initiated_by, "not recovered")
    if undo:
        locked = {c.resource for c in undo}

        def outside_the_lock(p: Proposal[list[LeverChange]]) -> State | None:
            extra = sorted({c.resource for c in p.plan} - locked)
            return Failed(message=f"the recover plan now also touches {', '.join(extra)} (changed meanwhile); "
                                  "nothing undone — run recover again") if extra else None

        with target_lock(inv, sorted(locked), wait_s=lock_wait_s):
            verdict = approve_until_stable("recover", inv, proposal, plan, requested_by=initiated_by,
                                           timeout_s=approval_timeout_s, settled=outside_the_lock)
            if (stop := verdict.stopped("not recovered")) is not None:
                return stop
            approval = verdict.approval
            undo, left_alone = verdict.proposal.plan, verdict.proposal.view["left_alone"]
            for change in undo:
                intent = log_intent(inv, incident_id, change, verdict.proposal.hash,
                                    approval.approvers if approval else [])
                done.append(apply_lever_change(inv, change, verdict.proposal.hash))
                log_outcome(inv, incident_id, intent, done[-1])
            effects = [_effect(inv, c, incident_id) for c in undo]
    else:
        log.info("no recorded lever of %s is still in place: nothing to undo", incident_id)

    # Seed 000: a real round trip and a clean reconciliation before declaring all-clear.
    round_trip = _round_trip(inv, incident_id)
    books = reconcile_dry_run(inv)
    result = {
        "undone": [d.model_dump(mode="json") for d in done], "left_alone": left_alone,
        "effects": effects, "round_trip": round_trip, "books": books, "found": proposal.view["found"],
        "initiator": initiator.model_dump(mode="json"),
        "approval": approval.model_dump(mode="json") if approval else None,
    }
    problems = [why for why, ok in (
        ("lever verification failed", all(e["ok"] for e in effects)),
        (f"round trip failed ({round_trip.get('message') or 'see its run'})", round_trip["ok"]),
        (f"books not clean ({books.get('mismatched', '?')} mismatched player(s): run reconcile)", books["ok"]),
    ) if not ok]
    if problems:
        return Failed(message=f"levers undone ({len(done)}) but NOT all-clear: {'; '.join(problems)}",
                      data=result)
    return Completed(message=f"all-clear: {len(done)} change(s) undone, round trip and books clean", data=result)


def _round_trip(inv: Target, incident_id: str) -> dict[str, Any]:
    """The verify-round-trip runbook as a subflow: its step table is its own run's artifact."""
    state = verify_round_trip(incident_id=incident_id, target=inv.name, return_state=True)
    data = cast(dict[str, Any], state.result(raise_on_failure=False))
    if not isinstance(data, dict):  # the subflow crashed before it could say anything
        return {"ok": False, "message": state.message, "brands": []}
    return {**data, "ok": bool(data.get("ok")), "message": state.message}
