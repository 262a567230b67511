-- Sandbox wallet platform schema (seed 000). Safe to apply again: every object is
-- created only if missing, functions and triggers are replaced in place.
-- Money is integer minor units (cents). Ledger amounts are signed: credit +, debit -.

CREATE TABLE IF NOT EXISTS brand (
    brand_id   text PRIMARY KEY CHECK (brand_id ~ '^[a-z][a-z0-9_-]{0,31}$'),
    name       text NOT NULL
);

CREATE TABLE IF NOT EXISTS brand_config (
    brand_id   text NOT NULL REFERENCES brand (brand_id),
    key        text NOT NULL CHECK (key IN ('feature_policy', 'payment_policy')),
    value      jsonb NOT NULL CHECK (jsonb_typeof(value) = 'object'),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (brand_id, key)
);

CREATE TABLE IF NOT EXISTS global_var (
    code       text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row only: the platform-wide maintenance record every brand observes.
CREATE TABLE IF NOT EXISTS maintenance (
    id         smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    is_active  boolean NOT NULL DEFAULT false,
    message    text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT 'system'
);

CREATE TABLE IF NOT EXISTS player (
    player_id    text PRIMARY KEY,
    brand_id     text NOT NULL REFERENCES brand (brand_id),
    is_synthetic boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Lets the ledger prove a row's brand is the player's brand.
    CONSTRAINT player_brand_key UNIQUE (player_id, brand_id)
);

CREATE TABLE IF NOT EXISTS ledger (
    ledger_id     bigserial PRIMARY KEY,
    player_id     text NOT NULL,
    brand_id      text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('deposit', 'withdraw', 'bet', 'settle', 'adjustment')),
    amount        bigint NOT NULL,
    ref           text,
    round_id      text,
    -- The bucket balance this write produced: an idempotent repeat answers with it.
    balance_after bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_player_brand FOREIGN KEY (player_id, brand_id) REFERENCES player (player_id, brand_id),
    CONSTRAINT ledger_amount_sign CHECK (
        (kind = 'deposit' AND amount > 0)
        OR (kind IN ('withdraw', 'bet') AND amount < 0)
        OR (kind = 'settle' AND amount >= 0)
        OR (kind = 'adjustment' AND amount <> 0)
    ),
    -- Every row carries its idempotency key: corrections too, so a re-run cannot double-apply.
    CONSTRAINT ledger_has_key CHECK (
        (kind IN ('deposit', 'withdraw', 'adjustment') AND ref IS NOT NULL)
        OR (kind IN ('bet', 'settle') AND round_id IS NOT NULL)
    ),
    CONSTRAINT ledger_ref_once UNIQUE (kind, ref),
    CONSTRAINT ledger_round_once UNIQUE (kind, round_id)
);

-- Covering: a player's ledger sum is read from the index alone (reconcile over a list of players).
DROP INDEX IF EXISTS ledger_player_idx;
CREATE INDEX IF NOT EXISTS ledger_player_amount_idx ON ledger (player_id) INCLUDE (amount);
CREATE INDEX IF NOT EXISTS ledger_created_at_idx ON ledger (created_at);

-- Append-only: corrections are new `adjustment` rows. Statement-level so even a
-- zero-row UPDATE/DELETE is refused. TRUNCATE is allowed only to `sandbox.db reset`,
-- which sets the session flag inside its own transaction.
CREATE OR REPLACE FUNCTION ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('sandbox.allow_ledger_reset', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'ledger is append-only: % refused', TG_OP
        USING HINT = 'record a correction as a new ledger row of kind ''adjustment''';
END;
$$;

CREATE OR REPLACE TRIGGER ledger_append_only
    BEFORE UPDATE OR DELETE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

CREATE OR REPLACE TRIGGER ledger_no_truncate
    BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- The wallet's running balance per player; must equal the player's ledger sum.
CREATE TABLE IF NOT EXISTS bucket (
    player_id  text PRIMARY KEY REFERENCES player (player_id),
    balance    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS gateway_ingress (
    route      text PRIMARY KEY CHECK (route IN ('provider')),
    blocked    boolean NOT NULL DEFAULT false,
    reason     text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Drill switches read by the services (wallet-wedged) or kept as a record (bucket-drift).
CREATE TABLE IF NOT EXISTS sandbox_fault (
    name   text PRIMARY KEY CHECK (name IN ('wallet-wedged', 'bucket-drift')),
    params jsonb NOT NULL DEFAULT '{}'::jsonb,
    set_at timestamptz NOT NULL DEFAULT now()
);

-- The wallet's write probe (/internal/health) updates this row under the writer's locks.
CREATE TABLE IF NOT EXISTS wallet_heartbeat (
    id      smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    beat_at timestamptz NOT NULL DEFAULT now(),
    beats   bigint NOT NULL DEFAULT 0
);
