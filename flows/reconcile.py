"""reconcile: ledger vs bucket — dry-run, approve the exact plan, apply it once, prove clean (seeds 000, 002 §3.8)."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import Field

from remediation.domain.reconcile import (
    APPLIED_CSV_HEADER,
    MISMATCH_CSV_HEADER,
    ApplyResult,
    ReconcilePlan,
    Scope,
    applied_rows,
    mismatch_rows,
)
from remediation.evidence.writer import BundleWriter, FileBody
from remediation.flowkit.approve import Proposal, approve_until_stable
from remediation.flowkit.initiator import not_confirmed, verify_initiator
from remediation.flowkit.locks import target_lock
from remediation.flowkit.params import (
    ApprovalTimeout,
    DryRunRisky,
    IncidentId,
    Initiator,
    LockWait,
    ReconcileScope,
    TargetName,
    described,
)
from remediation.flowkit.run_context import tag_current_run
from remediation.flowkit.runbook import runbook_text
from remediation.target.inventory import Target, load_target
from tasks.database.ledger import check_ledger_vs_bucket
from tasks.database.ledger_apply import append_ledger_adjustments, apply_corrections
from tasks.evidence_store import upload_evidence_bundle

RUNBOOK = "reconcile"
#: Mismatches listed in the approval form and the artifact; the evidence CSV has all of them.
SHOWN = 20


def _counters_table(plan: ReconcilePlan) -> list[dict[str, Any]]:
    c = plan.counters
    rows: list[dict[str, Any]] = [
        {"counter": "players checked", "value": c.players_checked},
        {"counter": "mismatched", "value": c.mismatched},
        {"counter": "total drift (cents)", "value": c.total_drift},
        {"counter": "largest drift (cents)", "value": c.largest_drift},
        {"counter": "missing buckets", "value": c.missing_buckets},
        {"counter": "orphan buckets", "value": c.orphan_buckets},
        {"counter": f"corrections planned ({plan.corrected_side} side)", "value": len(plan.corrections)},
    ]
    if plan.source_of_truth == "bucket":
        rows.append({"counter": "left for a person (not corrected)", "value": len(plan.needs_human)})
    if plan.scope.mode == "players":
        rows.append({"counter": "listed players not found", "value": c.not_found})
    return rows


_TRUTH = {
    "ledger": ("the ledger (each bucket is set to its ledger sum; the ledger is not touched)", "bucket write(s)"),
    "bucket": ("the bucket (the ledger gets one `adjustment` row per player, up to the bucket balance; "
               "no bucket is touched)", "ledger adjustment row(s)"),
}


def _summary(plan: ReconcilePlan, evidence: str | None) -> str:
    c = plan.counters
    truth, writes = _TRUTH[plan.source_of_truth]
    lines = [
        f"### reconcile `{plan.target}` for {plan.incident_id}",
        "",
        f"- **scope**: {plan.scope.describe()}",
        f"- **source of truth**: {truth}",
        f"- **players checked** {c.players_checked} · **mismatched** {c.mismatched} · "
        f"**missing buckets** {c.missing_buckets} · **orphan buckets** {c.orphan_buckets}",
        f"- **total drift** {c.total_drift} cents · **largest** {c.largest_drift} cents",
        f"- **corrections**: {len(plan.corrections)} {writes}, in one transaction; a player whose bucket or "
        "ledger moves before apply is skipped and reported",
    ]
    if plan.needs_human:
        lines.append(f"- **left for a person**: {len(plan.needs_human)} player(s) this plan does NOT correct "
                     f"(listed below); the run cannot end clean while they remain")
    if evidence:
        lines.append(f"- **full mismatch list**: `{evidence}/reconcile-mismatches.csv`")
    if plan.corrections:
        lines += ["", "| player | kind | bucket | ledger sum | drift | correction |", "|---|---|---:|---:|---:|---|"]
        lines += [f"| {x.player_id} | {x.kind} | {'—' if x.bucket_balance is None else x.bucket_balance} | "
                  f"{x.ledger_sum} | {x.drift} | {x.describe()} |"
                  for x in sorted(plan.corrections, key=lambda x: -abs(x.drift))[:SHOWN]]
        if len(plan.corrections) > SHOWN:
            lines.append(f"\n…and {len(plan.corrections) - SHOWN} more in the CSV.")
    if plan.needs_human:
        lines += ["", "**Left for a person** (not in what apply writes):", "",
                  "| player | kind | bucket | ledger sum | why |", "|---|---|---:|---:|---|"]
        lines += [f"| {u.player_id} | {u.kind} | {'—' if u.bucket_balance is None else u.bucket_balance} | "
                  f"{u.ledger_sum} | {u.why} |" for u in plan.needs_human[:SHOWN]]
        if len(plan.needs_human) > SHOWN:
            lines.append(f"\n…and {len(plan.needs_human) - SHOWN} more in the CSV.")
    return "\n".join(lines) + "\n"


def _for_a_person(plan: ReconcilePlan) -> str:
    names = ", ".join(u.player_id for u in plan.needs_human[:10])
    more = f" and {len(plan.needs_human) - 10} more" if len(plan.needs_human) > 10 else ""
    return (f"{len(plan.needs_human)} player(s) left for a person, not corrected ({names}{more}): "
            f"{plan.needs_human[0].why}")


def _run_key() -> str:
    return str(flow_run.get_id() or "local")


def _bundle(inv: Target, plan: ReconcilePlan, initiated_by: str, key: str,
            files: dict[str, tuple[str, FileBody]]) -> dict[str, Any]:
    """Evidence of this reconcile (the full lists, which no form can show), bundled, hashed, uploaded."""
    bundle = BundleWriter(inv, plan.incident_id, key, profile="reconcile", initiated_by=initiated_by,
                          flow_run_id=str(flow_run.get_id() or "") or None)
    bundle.seal([bundle.add(name, what, body, kind="reconcile") for name, (what, body) in files.items()])
    directory = str(bundle.directory)
    state = upload_evidence_bundle(inv, directory, return_state=True)
    if state.is_completed():
        record = state.result()
        return {"bundle": directory, "uploaded": True, "s3": f"s3://{record.bucket}/{record.prefix}/"}
    get_run_logger().warning("evidence bundle %s not uploaded yet (kept locally; `evidence sync` retries): %s",
                             directory, state.message)
    return {"bundle": directory, "uploaded": False, "s3": None}


def _plan_evidence(inv: Target, plan: ReconcilePlan, initiated_by: str, key: str) -> dict[str, Any]:
    """Evidence before mitigation: the full mismatch list and the counters."""
    return _bundle(inv, plan, initiated_by, key, {
        "reconcile-mismatches.csv": (
            f"ledger vs bucket, {plan.scope.describe()}: every mismatch",
            lambda out: out.write_csv(MISMATCH_CSV_HEADER, mismatch_rows(plan.corrections, plan.needs_human))),
        "reconcile-counters.json": (
            "summary counters and plan hash",
            lambda out: out.write_json({"plan_hash": plan.hash, "scope": plan.scope.model_dump(mode="json"),
                                        "source_of_truth": plan.source_of_truth,
                                        "checked_at": plan.checked_at.isoformat(),
                                        "counters": plan.counters.model_dump()})),
    })


def _apply_evidence(inv: Target, plan: ReconcilePlan, done: ApplyResult, after: ReconcilePlan,
                    initiated_by: str, key: str) -> dict[str, Any]:
    return _bundle(inv, plan, initiated_by, f"{key}-applied", {
        "reconcile-applied.csv": (f"apply of plan {plan.hash}: every approved correction's outcome",
                                  lambda out: out.write_csv(APPLIED_CSV_HEADER, applied_rows(plan, done))),
        "reconcile-remaining.csv": ("ledger vs bucket after apply: every mismatch left",
                                    lambda out: out.write_csv(MISMATCH_CSV_HEADER,
                                                              mismatch_rows(after.corrections, after.needs_human))),
    })


def _nothing_to_apply(plan: ReconcilePlan, base: dict[str, Any], when: str) -> State:
    if not plan.needs_human:
        return Completed(message=f"books {'became ' if when else ''}clean{when}: "
                                 f"{plan.counters.players_checked} player(s) checked, nothing to apply",
                         data={"outcome": "clean", **base})
    # Nothing this tool may write, yet the books are not clean: say so, loudly, rather than "clean".
    return Failed(message=f"nothing applied: {_for_a_person(plan)}",
                  data={"outcome": "needs-human", **base, "needs_human": [u.model_dump() for u in plan.needs_human]})


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def reconcile(
    incident_id: IncidentId,
    initiated_by: Initiator,
    target: TargetName = "sandbox",
    scope: ReconcileScope = Scope(),  # noqa: B008 - a frozen pydantic model: the UI form's default
    dry_run: DryRunRisky = True,
    max_corrections: Annotated[int, Field(ge=1, le=1_000_000, description="Refuse to apply a plan with more "
                                          "corrections than this (1-1,000,000); the dry run still lists them "
                                          "all, so a person can look")] = 10_000,
    approval_timeout_s: ApprovalTimeout | None = None,
    lock_wait_s: LockWait = 60,
) -> State:
    """Compare every in-scope player's ledger sum with the bucket; after approval of the exact plan, correct
    the side that is not the target's source of truth in one guarded transaction; then prove zero mismatches."""
    log = get_run_logger()
    inv = load_target(target)
    tag_current_run(incident_id, RUNBOOK, inv.name)
    key = _run_key()
    plan = check_ledger_vs_bucket(inv, incident_id, scope)
    evidence = _plan_evidence(inv, plan, initiated_by, key)
    create_table_artifact(key=f"reconcile-counters-{incident_id.lower()}", table=_counters_table(plan),
                          description=f"reconcile counters for {incident_id} ({plan.scope.describe()})")
    summary = _summary(plan, evidence["bundle"])
    base = {"counters": plan.counters.model_dump(), "plan_hash": plan.hash, "evidence": evidence,
            "scope": plan.scope.model_dump(mode="json")}
    log.info("checked %d player(s) in %.3f s: %d correction(s) planned, plan %s", plan.counters.players_checked,
             plan.query_s, len(plan.corrections), plan.hash[:12])
    if dry_run:
        create_markdown_artifact(key=f"reconcile-plan-{incident_id.lower()}", markdown=summary + "\n*dry run*\n")
        person = f"; {_for_a_person(plan)}" if plan.needs_human else ""
        return Completed(message=f"dry run: {len(plan.corrections)} {plan.corrected_side} correction(s) would be made "
                                 f"({plan.counters.mismatched} mismatched, {plan.counters.missing_buckets} missing, "
                                 f"{plan.counters.orphan_buckets} orphan){person}",
                         data={"outcome": "dry-run", **base,
                               "corrections": [c.model_dump() for c in plan.corrections],
                               "needs_human": [u.model_dump() for u in plan.needs_human]})
    if not plan.corrections:
        return _nothing_to_apply(plan, base, "")
    if len(plan.corrections) > max_corrections:
        return Failed(message=f"{len(plan.corrections)} corrections exceed max_corrections={max_corrections}: "
                              "this is not drift to correct blindly — escalate; nothing applied", data=base)

    initiator = verify_initiator(inv, initiated_by, timeout_s=approval_timeout_s or inv.policy.approval_timeout_s)
    if initiator is None:
        return not_confirmed(initiated_by, "not applied", **base)
    replans = 0
    latest = Proposal((plan, evidence), plan.shown(), summary)

    def replan() -> Proposal[tuple[ReconcilePlan, dict[str, Any]]]:
        nonlocal replans, latest
        again = check_ledger_vs_bucket(inv, incident_id, scope)
        if again.hash != latest.plan[0].hash:  # moved: its own evidence, kept beside the first
            replans += 1
            moved = _plan_evidence(inv, again, initiated_by, f"{key}-replan-{replans}")
            latest = Proposal((again, moved), again.shown(), _summary(again, moved["bundle"]))
        return latest

    def settled(p: Proposal[tuple[ReconcilePlan, dict[str, Any]]]) -> State | None:
        now_plan, now_evidence = p.plan
        now_base = {**base, "counters": now_plan.counters.model_dump(), "plan_hash": now_plan.hash,
                    "evidence": now_evidence}
        if not now_plan.corrections:
            return _nothing_to_apply(now_plan, now_base, " meanwhile")
        if len(now_plan.corrections) > max_corrections:
            return Failed(message=f"{len(now_plan.corrections)} corrections exceed max_corrections; escalate; "
                                  "nothing applied", data=now_base)
        return None

    with target_lock(inv, "books", wait_s=lock_wait_s):
        verdict = approve_until_stable(
            "reconcile", inv, latest, replan,
            requested_by=initiated_by, timeout_s=approval_timeout_s, settled=settled, data=lambda _: base)
        if (stop := verdict.stopped(data=base)) is not None:
            return stop
        approval = verdict.approval
        assert approval is not None
        plan, evidence = verdict.proposal.plan
        base = {**base, "counters": plan.counters.model_dump(), "plan_hash": plan.hash, "evidence": evidence}
        assert approval.approver is not None
        apply = apply_corrections if plan.source_of_truth == "ledger" else append_ledger_adjustments
        done = apply(inv, plan, approval.approver, str(flow_run.get_id() or "") or None)
        after = check_ledger_vs_bucket(inv, incident_id, scope)
    applied_evidence = _apply_evidence(inv, plan, done, after, initiated_by, key)
    result = {"outcome": "applied", **base, "applied": [c.model_dump() for c in done.applied],
              "already_applied": done.already_applied, "skipped": [s.model_dump() for s in done.skipped],
              "apply_s": done.duration_s, "after": after.counters.model_dump(),
              "remaining": [c.model_dump() for c in after.corrections[:1000]],
              "applied_evidence": applied_evidence, "approval": approval.model_dump(mode="json")}
    create_table_artifact(key=f"reconcile-after-{incident_id.lower()}", table=_counters_table(after),
                          description=f"reconcile counters after apply of plan {plan.hash[:12]}")
    if after.needs_human and not after.corrections:
        # Bucket truth only: everything the plan could correct is corrected; the rest is a person's call.
        left = [u.model_dump() for u in after.needs_human]
        return Failed(message=f"{done.summary()}; NOT clean after apply: {_for_a_person(after)} — "
                              "see reconcile-remaining.csv",
                      data={**result, "outcome": "applied-needs-human", "needs_human": left})
    if not after.counters.clean:
        person = f"; and {_for_a_person(after)}" if after.needs_human else ""
        return Failed(message=f"{done.summary()}; NOT clean after apply: {len(after.corrections)} mismatch(es) "
                              f"remain ({after.counters.total_drift} cents){person} — see reconcile-remaining.csv",
                      data=result)
    return Completed(message=f"{done.summary()}; dry-run after apply: zero mismatches "
                             f"in {after.counters.players_checked} player(s)", data=result)
