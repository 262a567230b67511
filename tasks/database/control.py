"""The admin service's state, straight from the platform database: the seed's SQL fallback.

Seed 000 step 3b: "SQL fallback if admin_service is down (run on the platform Postgres):
UPDATE global_var SET value='1', updated_at=NOW() WHERE code='DEPOSIT_MAINTENANCE_STATUS'".
Plain functions, called by the lever tasks (tasks/admin_api.py) when the admin API fails.
"""

from __future__ import annotations

from typing import Any

from remediation.errors import ConflictError
from remediation.target import connect
from remediation.target.inventory import Target

__all__ = ["DEPOSIT_MAINTENANCE_STATUS", "read_admin_state", "set_deposit_halt"]

DEPOSIT_MAINTENANCE_STATUS = "DEPOSIT_MAINTENANCE_STATUS"


def read_admin_state(target: Target) -> tuple[dict[str, Any] | None, str | None, dict[str, dict[str, Any]]]:
    """The admin service's state read straight from the platform database (its backing store)."""
    db = connect.database(target)
    m = db.fetch_one("SELECT is_active, message FROM maintenance ORDER BY id LIMIT 1")
    var = db.fetch_one("SELECT value FROM global_var WHERE code = %s", (DEPOSIT_MAINTENANCE_STATUS,))
    rows = db.fetch_all(
        "SELECT brand_id, value FROM brand_config WHERE key = 'payment_policy' AND brand_id = ANY(%s)",
        (list(target.brands),),
    )
    maintenance = None if m is None else {"is_active": bool(m["is_active"]), "message": str(m["message"] or "")}
    return maintenance, None if var is None else str(var["value"]), {r["brand_id"]: dict(r["value"]) for r in rows}


def set_deposit_halt(target: Target, value: str) -> None:
    rows = connect.database(target).execute(
        "UPDATE global_var SET value = %s, updated_at = NOW() WHERE code = %s",
        (value, DEPOSIT_MAINTENANCE_STATUS),
    )
    if rows != 1:
        raise ConflictError(f"SQL fallback updated {rows} rows of global_var, expected 1")
