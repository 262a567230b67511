"""Apply for a target whose BUCKET is the source of truth: the ledger gets `adjustment` rows.

The ledger is append-only (a trigger refuses UPDATE and DELETE), so a correction is a new row of
kind `adjustment` whose amount is the bucket balance minus the ledger sum, under the player's
brand, with a `ref` made from the plan hash and the player (`remediation.domain.reconcile.adjustment_ref`).
The guard is the one `tasks.database.ledger_apply.apply_plan` runs for a ledger-truth plan; it runs these
statements after it has locked the chunk's bucket rows: a row is appended only where the bucket
still holds the planned balance AND the ledger sum is still the planned one; anything that moved is
skipped and reported (the reason, in bucket-balance and ledger-sum terms, is shared too).

Idempotent twice over: the audit row (plan_hash, player_id) is found before writing, and should
the audit table have lost it, UNIQUE (kind, ref) still makes the second insert a no-op — the
"already" query reads both, so that player is reported as already applied, not as moved.

A player with ledger rows and no bucket is never in such a plan (`plan_corrections` leaves it for a
person): there is no bucket balance to take as truth.
"""

from __future__ import annotations

from typing import LiteralString

__all__ = ["ALREADY", "APPEND", "WIDEN_AUDIT"]

#: Tables made before bucket truth existed check `action IN ('set-balance', 'create-bucket')`. Widen that
#: CHECK once, only when it lacks 'ledger-adjustment', so a routine apply takes no ACCESS EXCLUSIVE lock.
WIDEN_AUDIT: LiteralString = """
DO $$
DECLARE c record;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'rp_reconcile_audit'::regclass AND contype = 'c'
                 AND position('ledger-adjustment' IN pg_get_constraintdef(oid)) > 0) THEN
    FOR c IN SELECT conname FROM pg_constraint WHERE conrelid = 'rp_reconcile_audit'::regclass AND contype = 'c'
             AND position('set-balance' IN pg_get_constraintdef(oid)) > 0 LOOP
      EXECUTE 'ALTER TABLE rp_reconcile_audit DROP CONSTRAINT ' || quote_ident(c.conname);
    END LOOP;
    ALTER TABLE rp_reconcile_audit ADD CONSTRAINT rp_reconcile_audit_action_check
      CHECK (action IN ('set-balance', 'create-bucket', 'ledger-adjustment'));
  END IF;
END $$"""

ALREADY: LiteralString = """
SELECT player_id FROM rp_reconcile_audit WHERE plan_hash = %(hash)s AND player_id = ANY(%(ids)s::text[])
UNION
SELECT player_id FROM ledger WHERE kind = 'adjustment' AND ref = ANY(%(refs)s::text[])
"""

# Runs after the bucket rows are locked: a new statement, so its snapshot holds every ledger row committed
# before the locks were granted. `before` is the planned ledger sum, `after` the planned bucket balance.
APPEND: LiteralString = """
WITH plan AS (
  SELECT * FROM unnest(%(ids)s::text[], %(before)s::bigint[], %(after)s::bigint[], %(refs)s::text[])
    AS p(player_id, before, after, ref)),
sums AS (
  SELECT l.player_id, sum(l.amount)::bigint AS total FROM ledger l
  WHERE l.player_id = ANY(%(ids)s::text[]) GROUP BY l.player_id),
guarded AS (
  SELECT p.*, pl.brand_id FROM plan p
  JOIN bucket b ON b.player_id = p.player_id AND b.balance = p.after
  JOIN player pl ON pl.player_id = p.player_id
  LEFT JOIN sums s ON s.player_id = p.player_id
  WHERE coalesce(s.total, 0) = p.before AND p.after <> p.before),
appended AS (
  INSERT INTO ledger (player_id, brand_id, kind, amount, ref, balance_after)
  SELECT g.player_id, g.brand_id, 'adjustment', g.after - g.before, g.ref, g.after FROM guarded g
  ON CONFLICT (kind, ref) DO NOTHING
  RETURNING player_id)
INSERT INTO rp_reconcile_audit (plan_hash, player_id, action, before, after, incident_id, flow_run_id, approver)
SELECT %(hash)s, g.player_id, 'ledger-adjustment', g.before, g.after, %(incident)s, %(run)s, %(approver)s
FROM appended a JOIN guarded g ON g.player_id = a.player_id
RETURNING player_id
"""

