"""Which run holds which target lock: the Prefect concurrency lease each run took, by holder.

Prefect's v2 API does not list a global limit's leases, so a run killed while holding one
leaves a slot nobody can name until the lease lapses (60 s, plus the server's revocation
pass). Recording the lease with its holder lets the next run release a lease whose holder is
known to be gone (a final state, or an earlier attempt of itself) instead of waiting it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from remediation.clients.database import Database
from remediation.records.schema import with_schema

__all__ = ["HeldLease", "LockLeases"]


@dataclass(frozen=True)
class HeldLease:
    lease_id: UUID
    names: list[str]
    flow_run_id: str
    run_attempt: int


class LockLeases:
    def __init__(self, db: Database) -> None:
        self.db = db

    def held(self, lease_id: UUID, names: list[str], flow_run_id: str, run_attempt: int) -> None:
        with with_schema(self.db) as tx:
            tx.execute(
                "INSERT INTO rp_lock_leases (lease_id, names, flow_run_id, run_attempt) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (lease_id) DO NOTHING", (lease_id, names, flow_run_id, run_attempt))

    def released(self, lease_id: UUID, why: str) -> None:
        self.db.execute("UPDATE rp_lock_leases SET released_at = clock_timestamp(), released_why = %s"
                        " WHERE lease_id = %s AND released_at IS NULL", (why, lease_id))

    def holders(self, names: list[str]) -> list[HeldLease]:
        """Leases on any of `names` not known to be released."""
        with with_schema(self.db) as tx:
            rows = tx.fetch_all(
                "SELECT lease_id, names, flow_run_id, run_attempt FROM rp_lock_leases"
                " WHERE released_at IS NULL AND names && %s::text[] ORDER BY acquired_at", (names,))
        return [HeldLease(UUID(str(r["lease_id"])), list(r["names"]), r["flow_run_id"], r["run_attempt"])
                for r in rows]
