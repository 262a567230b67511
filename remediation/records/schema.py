"""DDL for the records tables, applied once per database under an advisory lock (two first writers
racing on CREATE TABLE would otherwise collide)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import LiteralString

from remediation.clients.database import Database, Transaction

__all__ = ["ANCHORS", "CHANGE_LOG", "IDENTITY_USES", "LOCK_LEASES", "table_exists", "with_schema"]

ANCHORS = "rp_evidence_anchors"
CHANGE_LOG = "rp_change_log"
IDENTITY_USES = "rp_identity_uses"
LOCK_LEASES = "rp_lock_leases"
_TABLES = (ANCHORS, CHANGE_LOG, IDENTITY_USES, LOCK_LEASES)

_DDL: LiteralString = """
SELECT pg_advisory_xact_lock(hashtext('rp_records_schema'));
CREATE OR REPLACE FUNCTION rp_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END $$;

CREATE TABLE IF NOT EXISTS rp_change_log (
    id           bigserial   PRIMARY KEY,
    incident_id  text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('intent', 'outcome')),
    intent_id    bigint      REFERENCES rp_change_log (id),
    lever        text        NOT NULL,
    resource     text        NOT NULL,
    change       jsonb       NOT NULL,
    outcome      text,
    path         text,
    note         text        NOT NULL DEFAULT '',
    plan_hash    text        NOT NULL,
    flow_run_id  text,
    approvers    text[]      NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((kind = 'intent') = (intent_id IS NULL)),
    CHECK ((kind = 'outcome') = (outcome IS NOT NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS rp_change_log_one_outcome ON rp_change_log (intent_id) WHERE kind = 'outcome';
CREATE INDEX IF NOT EXISTS rp_change_log_incident ON rp_change_log (incident_id, id);
CREATE OR REPLACE TRIGGER rp_change_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON rp_change_log
    FOR EACH STATEMENT EXECUTE FUNCTION rp_append_only();

CREATE TABLE IF NOT EXISTS rp_identity_uses (
    handle       text        NOT NULL,
    method       text        NOT NULL,
    token        text        NOT NULL,
    purpose      text        NOT NULL,
    flow_run_id  text,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (handle, method, token)
);
CREATE INDEX IF NOT EXISTS rp_identity_uses_run ON rp_identity_uses (flow_run_id, purpose);
CREATE OR REPLACE TRIGGER rp_identity_uses_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON rp_identity_uses
    FOR EACH STATEMENT EXECUTE FUNCTION rp_append_only();

-- What was stored in S3, as it was when it was verified: each object's version and hash, the
-- manifest's hash, an audit export's chain head. Verification compares S3 with this, not with itself.
CREATE TABLE IF NOT EXISTS rp_evidence_anchors (
    prefix       text        PRIMARY KEY,
    bucket       text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('bundle', 'audit-export')),
    incident_id  text        NOT NULL,
    sha256       text        NOT NULL,
    objects      jsonb       NOT NULL,
    chain_head   jsonb,
    flow_run_id  text,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS rp_evidence_anchors_incident ON rp_evidence_anchors (incident_id, at);
CREATE OR REPLACE TRIGGER rp_evidence_anchors_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON rp_evidence_anchors FOR EACH STATEMENT EXECUTE FUNCTION rp_append_only();

-- Who holds which target lock (a Prefect concurrency lease): operational state, not an audit record.
CREATE TABLE IF NOT EXISTS rp_lock_leases (
    lease_id     uuid        PRIMARY KEY,
    names        text[]      NOT NULL,
    flow_run_id  text        NOT NULL,
    run_attempt  int         NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    released_at  timestamptz,
    released_why text
);
CREATE INDEX IF NOT EXISTS rp_lock_leases_held ON rp_lock_leases USING gin (names) WHERE released_at IS NULL;
"""


def _ensure_schema(tx: Transaction) -> None:
    """Create the tables if they are missing (idempotent), inside the caller's transaction: a record and
    its schema check share one connection (each connection is a TCP and authentication handshake,
    tens of ms on a busy host)."""
    row = tx.fetch_one("SELECT count(*) AS present FROM unnest(%s::text[]) AS t(name)"
                       " WHERE to_regclass(name) IS NOT NULL", (list(_TABLES),))
    if not row or row["present"] != len(_TABLES):
        tx.execute(_DDL)


@contextmanager
def with_schema(db: Database) -> Iterator[Transaction]:
    """One transaction on `db`, its tables created first if missing."""
    with db.transaction() as tx:
        _ensure_schema(tx)
        yield tx


def table_exists(tx: Transaction, name: str) -> bool:
    row = tx.fetch_one("SELECT to_regclass(%s) IS NOT NULL AS present", (name,))
    return bool(row and row["present"])
