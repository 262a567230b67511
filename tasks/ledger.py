"""Read-only checks of the platform's books: ledger (append-only) against bucket balances."""

from __future__ import annotations

from typing import Any

from prefect import task

from remediation import connect
from remediation.inventory import Target
from remediation.policy import READ_ONLY

__all__ = ["check_books_balanced"]

# Set-based: one pass over the ledger grouped by player, joined to buckets; no per-player loop.
_MISMATCHES = """
WITH sums AS (SELECT player_id, sum(amount) AS ledger_sum FROM ledger GROUP BY player_id)
SELECT count(*) FILTER (WHERE b.player_id IS NOT NULL AND s.player_id IS NOT NULL
                         AND b.balance <> s.ledger_sum)                         AS mismatched,
       count(*) FILTER (WHERE b.player_id IS NULL)                              AS missing_buckets,
       count(*) FILTER (WHERE s.player_id IS NULL AND b.balance <> 0)           AS orphan_buckets,
       coalesce(sum(abs(coalesce(b.balance, 0) - coalesce(s.ledger_sum, 0))), 0) AS total_drift,
       count(*)                                                                  AS players
FROM bucket b FULL JOIN sums s ON s.player_id = b.player_id
"""


@task(name="check-books-balanced", **READ_ONLY)
def check_books_balanced(target: Target) -> dict[str, Any]:
    """Seed 000's all-clear gate: ledger vs bucket is clean for every player."""
    row = connect.database(target).fetch_one(_MISMATCHES) or {}
    counters = {k: int(v) for k, v in row.items()}
    clean = counters.get("mismatched", 1) == 0 and counters.get("missing_buckets", 1) == 0 \
        and counters.get("orphan_buckets", 1) == 0
    return {"clean": clean, **counters}
