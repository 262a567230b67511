"""The gates recover must pass before all-clear (seed 000): a clean round trip and clean books.

Behind an interface so the order is fixed now: the verify-round-trip and reconcile flows
replace the task-level checks here without recover changing.
"""

from __future__ import annotations

from typing import Any, Protocol

from remediation.inventory import Target

__all__ = ["AllClearGates", "TaskGates"]


class AllClearGates(Protocol):
    def round_trip(self, target: Target, incident_id: str) -> dict[str, Any]: ...
    def books(self, target: Target, incident_id: str) -> dict[str, Any]: ...


class TaskGates:
    """Runs the read-only tasks: a netted round trip per brand, and the set-based books check."""

    def round_trip(self, target: Target, incident_id: str) -> dict[str, Any]:
        from tasks.wallet import check_round_trip

        results = [check_round_trip(target, brand, incident_id) for brand in target.synthetic_players]
        return {"ok": bool(results) and all(r["ok"] for r in results), "brands": results}

    def books(self, target: Target, incident_id: str) -> dict[str, Any]:
        from tasks.ledger import check_books_balanced

        result = check_books_balanced(target)
        return {"ok": bool(result["clean"]), **result}
