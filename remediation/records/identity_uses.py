"""Each use of a person's second factor, so that a code counts once.

A TOTP code is identified by its time step, a signature by its hash: the primary key
(handle, method, token) refuses a second use. A verified initiator is a use with the
purpose `initiator`, tied to the flow run it verified (subflows of that run trust it).
"""

from __future__ import annotations

from remediation.clients.database import Database
from remediation.records.schema import IDENTITY_USES, table_exists, with_schema

__all__ = ["IdentityUses"]


class IdentityUses:
    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, handle: str, method: str, token: str, purpose: str, flow_run_id: str | None) -> bool:
        """Record the use; False when this handle already used this code or signature."""
        with with_schema(self.db) as tx:
            row = tx.fetch_one(
                "INSERT INTO rp_identity_uses (handle, method, token, purpose, flow_run_id) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (handle, method, token) DO NOTHING RETURNING handle",
                (handle, method, token, purpose, flow_run_id),
            )
        return row is not None

    def verified_initiator(self, flow_run_id: str) -> str | None:
        """Who proved they started this run (None if nobody did)."""
        with self.db.transaction() as tx:
            if not table_exists(tx, IDENTITY_USES):
                return None
            row = tx.fetch_one(
                "SELECT handle FROM rp_identity_uses WHERE flow_run_id = %s AND purpose = 'initiator'"
                " ORDER BY at DESC LIMIT 1", (flow_run_id,))
        return str(row["handle"]) if row else None
