"""reconcile: ledger vs bucket — dry-run, approve the exact plan, apply it once, prove clean (seeds 000, 002 §3.8)."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import Field

from remediation.approval import request_approval
from remediation.bundle import EvidenceFile
from remediation.inventory import Target, load_target
from remediation.locks import target_lock
from remediation.params import IncidentId, Initiator, TargetName
from remediation.reconcile import ApplyResult, ReconcilePlan, Scope
from remediation.run_context import tag_current_run
from remediation.runbook import runbook_text
from tasks.evidence import upload_evidence_bundle
from tasks.reconcile import (
    CSV_HEADER,
    apply_corrections,
    check_ledger_vs_bucket,
    mismatch_rows,
    write_csv,
    write_reconcile_evidence,
)

RUNBOOK = "reconcile"
#: A plan that keeps changing under the approver is a situation to look at, not to chase.
MAX_REPLANS = 3
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
        {"counter": "corrections planned", "value": len(plan.corrections)},
    ]
    if plan.scope.mode == "players":
        rows.append({"counter": "listed players not found", "value": c.not_found})
    return rows


def _summary(plan: ReconcilePlan, evidence: str | None) -> str:
    c = plan.counters
    lines = [
        f"### reconcile `{plan.target}` for {plan.incident_id}",
        "",
        f"- **scope**: {plan.scope.describe()}",
        f"- **source of truth**: the {plan.source_of_truth} (the bucket is corrected to the ledger sum)",
        f"- **players checked** {c.players_checked} · **mismatched** {c.mismatched} · "
        f"**missing buckets** {c.missing_buckets} · **orphan buckets** {c.orphan_buckets}",
        f"- **total drift** {c.total_drift} cents · **largest** {c.largest_drift} cents",
        f"- **corrections**: {len(plan.corrections)} bucket write(s), in one transaction; a bucket that moves "
        "before apply is skipped and reported",
    ]
    if evidence:
        lines.append(f"- **full mismatch list**: `{evidence}/reconcile-mismatches.csv`")
    if plan.corrections:
        lines += ["", "| player | kind | bucket | ledger sum | drift |", "|---|---|---:|---:|---:|"]
        lines += [f"| {x.player_id} | {x.kind} | {'—' if x.before is None else x.before} | {x.after} | {x.drift} |"
                  for x in sorted(plan.corrections, key=lambda x: -abs(x.drift))[:SHOWN]]
        if len(plan.corrections) > SHOWN:
            lines.append(f"\n…and {len(plan.corrections) - SHOWN} more in the CSV.")
    return "\n".join(lines) + "\n"


def _run_key() -> str:
    return str(flow_run.get_id() or "local")


def _plan_evidence(inv: Target, plan: ReconcilePlan, initiated_by: str, key: str) -> dict[str, Any]:
    """Evidence before mitigation: the full mismatch list and the counters, bundled, hashed, uploaded."""
    def mismatches(out: EvidenceFile) -> None:
        write_csv(out, CSV_HEADER, mismatch_rows(plan.corrections))

    def counters(out: EvidenceFile) -> None:
        out.write_json({"plan_hash": plan.hash, "scope": plan.scope.model_dump(mode="json"),
                        "checked_at": plan.checked_at.isoformat(), "counters": plan.counters.model_dump()})

    directory = write_reconcile_evidence(inv, plan.incident_id, key, initiated_by, str(flow_run.get_id() or ""), {
        "reconcile-mismatches.csv": (f"ledger vs bucket, {plan.scope.describe()}: every mismatch", mismatches),
        "reconcile-counters.json": ("summary counters and plan hash", counters),
    })
    return _upload(inv, directory)


def _upload(inv: Target, directory: str) -> dict[str, Any]:
    state = upload_evidence_bundle(inv, directory, return_state=True)
    if state.is_completed():
        record = state.result()
        return {"bundle": directory, "uploaded": True, "s3": f"s3://{record.bucket}/{record.prefix}/"}
    get_run_logger().warning("evidence bundle %s not uploaded yet (kept locally; `evidence sync` retries): %s",
                             directory, state.message)
    return {"bundle": directory, "uploaded": False, "s3": None}


def _apply_evidence(inv: Target, plan: ReconcilePlan, done: ApplyResult, after: ReconcilePlan,
                    initiated_by: str, key: str) -> dict[str, Any]:
    def applied(out: EvidenceFile) -> None:
        write_csv(out, ("player_id", "outcome", "before", "after", "balance_now", "ledger_sum_now", "reason"), [
            *((c.player_id, "applied", "" if c.before is None else c.before, c.after, "", "", "")
              for c in done.applied),
            *((p, "already-applied", "", "", "", "", "") for p in done.already_applied),
            *((s.player_id, "skipped", "" if s.planned_before is None else s.planned_before, s.planned_after,
               "" if s.balance_now is None else s.balance_now, s.ledger_sum_now, s.reason) for s in done.skipped),
        ])

    def remaining(out: EvidenceFile) -> None:
        write_csv(out, CSV_HEADER, mismatch_rows(after.corrections))

    directory = write_reconcile_evidence(inv, plan.incident_id, f"{key}-applied", initiated_by,
                                         str(flow_run.get_id() or ""), {
        "reconcile-applied.csv": (f"apply of plan {plan.hash}: every approved correction's outcome", applied),
        "reconcile-remaining.csv": ("ledger vs bucket after apply: every mismatch left", remaining),
    })
    return _upload(inv, directory)


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
def reconcile(
    incident_id: IncidentId,
    target: TargetName = "sandbox",
    scope: Scope = Scope(),  # noqa: B008 - a frozen pydantic model: the UI form's default
    initiated_by: Initiator = "unknown",
    dry_run: bool = True,
    max_corrections: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000,
    approval_timeout_s: Annotated[int, Field(ge=5, le=86400)] | None = None,
    lock_wait_s: Annotated[float, Field(ge=0, le=3600)] = 60,
) -> State:
    """Compare every in-scope player's ledger sum with the bucket; after approval of the exact plan, correct
    the buckets in one guarded transaction; then prove zero mismatches."""
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
        return Completed(message=f"dry run: {len(plan.corrections)} correction(s) would be made "
                                 f"({plan.counters.mismatched} mismatched, {plan.counters.missing_buckets} missing, "
                                 f"{plan.counters.orphan_buckets} orphan)",
                         data={"outcome": "dry-run", **base,
                               "corrections": [c.model_dump() for c in plan.corrections]})
    if not plan.corrections:
        return Completed(message=f"books clean: {plan.counters.players_checked} player(s) checked, nothing to apply",
                         data={"outcome": "clean", **base})
    if len(plan.corrections) > max_corrections:
        return Failed(message=f"{len(plan.corrections)} corrections exceed max_corrections={max_corrections}: "
                              "this is not drift to correct blindly — escalate; nothing applied", data=base)

    with target_lock(inv.name, "books", wait_s=lock_wait_s):
        approval = None
        for attempt in range(1, MAX_REPLANS + 1):
            approval = request_approval(
                step="reconcile", target=inv.name, plan=plan.shown(), summary_markdown=summary,
                requested_by=initiated_by, four_eyes=inv.policy.four_eyes,
                timeout_s=approval_timeout_s or inv.policy.approval_timeout_s,
            )
            if not approval.approved:
                return Completed(message=f"not applied: {approval.decision} by {approval.approver or 'nobody'} "
                                         f"({approval.reason}); nothing changed",
                                 data={"outcome": approval.decision, **base,
                                       "approval": approval.model_dump(mode="json")})
            # The approval counts only for the plan it saw: compare again, and ask again if it moved.
            again = check_ledger_vs_bucket(inv, incident_id, scope)
            if again.hash == plan.hash:
                break
            log.warning("plan changed since it was approved (%s → %s, %d → %d corrections); asking again",
                        plan.hash[:12], again.hash[:12], len(plan.corrections), len(again.corrections))
            plan = again
            evidence = _plan_evidence(inv, plan, initiated_by, f"{key}-replan-{attempt}")
            summary = _summary(plan, evidence["bundle"])
            base = {**base, "counters": plan.counters.model_dump(), "plan_hash": plan.hash, "evidence": evidence}
            if not plan.corrections:
                return Completed(message="books became clean meanwhile; nothing applied",
                                 data={"outcome": "clean", **base})
            if len(plan.corrections) > max_corrections:
                return Failed(message=f"{len(plan.corrections)} corrections exceed max_corrections; escalate; "
                                      "nothing applied", data=base)
        else:
            return Failed(message=f"plan kept changing across {MAX_REPLANS} approvals; nothing applied", data=base)
        assert approval is not None and approval.approver is not None
        done = apply_corrections(inv, plan, approval.approver, str(flow_run.get_id() or "") or None)
        after = check_ledger_vs_bucket(inv, incident_id, scope)
    applied_evidence = _apply_evidence(inv, plan, done, after, initiated_by, key)
    result = {"outcome": "applied", **base, "applied": [c.model_dump() for c in done.applied],
              "already_applied": done.already_applied, "skipped": [s.model_dump() for s in done.skipped],
              "apply_s": done.duration_s, "after": after.counters.model_dump(),
              "remaining": [c.model_dump() for c in after.corrections[:1000]],
              "applied_evidence": applied_evidence, "approval": approval.model_dump(mode="json")}
    create_table_artifact(key=f"reconcile-after-{incident_id.lower()}", table=_counters_table(after),
                          description=f"reconcile counters after apply of plan {plan.hash[:12]}")
    if not after.counters.clean:
        return Failed(message=f"{done.summary()}; NOT clean after apply: {len(after.corrections)} mismatch(es) "
                              f"remain ({after.counters.total_drift} cents) — see reconcile-remaining.csv",
                      data=result)
    return Completed(message=f"{done.summary()}; dry-run after apply: zero mismatches "
                             f"in {after.counters.players_checked} player(s)", data=result)
