"""verify-round-trip: seed 000's recovery check — does real money move end to end through the gateway?"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.states import Completed, Failed, State
from pydantic import Field

from remediation.errors import BadInputError
from remediation.flowkit.params import DryRunRead, IncidentId, Initiator, TargetName, described
from remediation.flowkit.run_context import tag_current_run
from remediation.flowkit.runbook import runbook_text
from remediation.target.inventory import load_target
from tasks.wallet import ROUND_TRIP, check_round_trip

RUNBOOK = "verify-round-trip"
BrandId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


def _rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        for s in r["steps"]:
            ledger = s.get("ledger") or {}
            rows.append({
                "brand": r["brand"], "step": s["step"], "ok": s["ok"], "answer": f"{s['status']} {s['msg']}",
                "balance": s["balance"], "expected": s["expected_balance"],
                "ledger": f"{ledger.get('amount')} → {ledger.get('balance_after')}" if ledger else "—",
                "latency_ms": s["latency_ms"],
            })
        if r.get("compensation"):
            c = r["compensation"]
            rows.append({"brand": r["brand"], "step": f"net out: {c['kind']} {c['amount']}", "ok": c["ok"],
                         "answer": c["msg"], "balance": None, "expected": None, "ledger": "—", "latency_ms": None})
    return rows


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def verify_round_trip(
    incident_id: IncidentId,
    target: TargetName = "sandbox",
    brands: Annotated[list[BrandId], Field(description="Brands to check (e.g. `alpha`); empty: every brand "
                                                       "of the target")] | None = None,
    initiated_by: Initiator = "unknown",
    dry_run: DryRunRead = False,
) -> State:
    """A netted deposit → withdraw → provider bet → settle on each brand's synthetic player; balances
    and ledger rows checked at every step. Read-only in effect: the test money nets to zero."""
    log = get_run_logger()
    inv = load_target(target)
    chosen = brands or [b for b in inv.brands if b in inv.synthetic_players]
    unknown = [b for b in chosen if b not in inv.synthetic_players]
    if unknown or not chosen:
        raise BadInputError(f"brands {unknown or chosen} have no synthetic player on {inv.name}; "
                            f"choose from {sorted(inv.synthetic_players)}")
    tag_current_run(incident_id, RUNBOOK, inv.name)
    if dry_run:
        steps = [f"{kind} {abs(delta)}" for kind, delta in ROUND_TRIP]
        return Completed(message=f"dry run: would run {', '.join(steps)} on {len(chosen)} synthetic player(s)",
                         data={"outcome": "dry-run", "players": {b: inv.synthetic_players[b] for b in chosen},
                               "steps": steps})
    log.info("round trip on %s for %s, requested by %s", ", ".join(chosen), incident_id, initiated_by)
    results = [check_round_trip(inv, brand, incident_id) for brand in chosen]
    create_table_artifact(
        key=f"verify-round-trip-{incident_id.lower()}", table=_rows(results),
        description=f"verify-round-trip on {inv.name} for {incident_id}: each step, its answer, balance, "
                    "ledger row and latency",
    )
    passed = [r["brand"] for r in results if r["outcome"] == "passed"]
    blocked = [r for r in results if r["outcome"] == "blocked"]
    failed = [r for r in results if r["outcome"] == "failed"]
    data = {"ok": len(passed) == len(results), "passed": passed, "results": results,
            "blocked": [r["brand"] for r in blocked], "failed": [r["brand"] for r in failed]}
    if failed:
        what = "; ".join(f"{r['brand']}: {r.get('failed_step') or 'start'} — "
                         f"{r.get('error') or r['steps'][-1]['msg']}" for r in failed)
        return Failed(message=f"round trip FAILED on {len(failed)} of {len(results)} brand(s): {what}", data=data)
    if blocked:
        # A lever still in place is the incident's own doing, not the platform failing.
        what = "; ".join(f"{r['brand']}: {r['failed_step']} answered {r['blocked_by']!r}" for r in blocked)
        return Completed(message=f"round trip blocked by a maintenance lever still in place ({what}); "
                                 "not a platform failure — recover, then verify again", data=data)
    return Completed(message=f"round trip passed on {', '.join(passed)}; test money netted to zero", data=data)
