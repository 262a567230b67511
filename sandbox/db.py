"""Platform database: schema, seed data, the reseed tests and drills start from, and the services' pool.

`python -m sandbox.db init` applies `schema.sql` and the seed (idempotent: a second run
changes nothing, and never repairs drift it finds). `reseed(dsn)` restores the seeded state
exactly; `python -m sandbox.faults reset` switches every fault off and then reseeds.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from sandbox.config import SandboxSettings

__all__ = [
    "BRANDS",
    "PLAYERS_PER_BRAND",
    "SEED_CONFIG",
    "connect",
    "init",
    "make_pool",
    "player_id",
    "reseed",
    "seed_deposit",
    "synthetic_player_id",
]

log = logging.getLogger("sandbox.db")

SCHEMA_PATH = Path(__file__).with_name("schema.sql")
BRANDS: tuple[tuple[str, str], ...] = (
    ("alpha", "Alpha Casino"),
    ("beta", "Beta Casino"),
    ("gamma", "Gamma Casino"),
)
PLAYERS_PER_BRAND = 50
SEED_CONFIG: dict[str, dict[str, bool]] = {
    "payment_policy": {"deposit_enabled": True, "withdraw_enabled": True},
    "feature_policy": {"bets_enabled": True},
}
SEED_GLOBAL_VARS: dict[str, str] = {"DEPOSIT_MAINTENANCE_STATUS": "0"}
# Seeded money predates any drill, so "what happened during the incident" queries by
# created_at never confuse the opening balances with incident traffic.
SEED_AGE = "7 days"
# Serialises concurrent init/reset runs on one database.
_ADVISORY_KEY = 0x5A4D_B0B0

# Tables reset() empties; the ledger's append-only trigger lets this through only
# with the session flag reset() sets.
_TABLES = (
    "ledger", "bucket", "player", "brand_config", "brand", "global_var",
    "maintenance", "gateway_ingress", "sandbox_fault", "wallet_heartbeat",
)


def player_id(brand_id: str, n: int) -> str:
    return f"{brand_id}-{n:04d}"


def synthetic_player_id(brand_id: str) -> str:
    return f"synthetic-{brand_id}"


def seed_deposit(brand_index: int, n: int) -> int:
    """Opening deposit in cents: deterministic, varied, between 50.00 and 999.99."""
    return 5_000 + ((brand_index * PLAYERS_PER_BRAND + n) * 7_919) % 95_000


def _require_dsn(dsn: str) -> str:
    if not dsn:
        raise RuntimeError("no platform database: set SANDBOX_DSN (a psycopg conninfo)")
    return dsn


def connect(dsn: str, *, application_name: str = "sandbox", autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(_require_dsn(dsn), application_name=application_name, autocommit=autocommit)


def make_pool(dsn: str, *, name: str, max_size: int = 10, timeout_s: float = 5.0) -> ConnectionPool:
    """A pool for one service; opened without waiting so a service starts even while the database is down.

    `check` validates a connection on checkout, so a PostgreSQL restart costs one
    reconnect instead of a burst of errors from stale connections.
    """
    pool = ConnectionPool(
        _require_dsn(dsn),
        min_size=1,
        max_size=max_size,
        timeout=timeout_s,
        name=name,
        kwargs={"application_name": name},
        check=ConnectionPool.check_connection,
        open=False,
    )
    pool.open(wait=False)
    return pool


def apply_schema(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA_PATH.read_text())


def seed(conn: psycopg.Connection) -> None:
    """Insert whatever seed rows are missing; existing rows (and their drift) are left alone."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO brand (brand_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", BRANDS
        )
        cur.executemany(
            "INSERT INTO brand_config (brand_id, key, value) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            [(b, key, Jsonb(value)) for b, _ in BRANDS for key, value in SEED_CONFIG.items()],
        )
        cur.executemany(
            "INSERT INTO global_var (code, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            list(SEED_GLOBAL_VARS.items()),
        )
        cur.execute("INSERT INTO maintenance (id) VALUES (1) ON CONFLICT DO NOTHING")
        cur.execute("INSERT INTO gateway_ingress (route) VALUES ('provider') ON CONFLICT DO NOTHING")
        cur.execute("INSERT INTO wallet_heartbeat (id) VALUES (1) ON CONFLICT DO NOTHING")

        players: list[tuple[str, str, bool]] = []
        deposits: list[tuple[str, str, int, str, int]] = []
        for bi, (brand, _) in enumerate(BRANDS):
            players.append((synthetic_player_id(brand), brand, True))
            for n in range(1, PLAYERS_PER_BRAND + 1):
                pid = player_id(brand, n)
                amount = seed_deposit(bi, n)
                players.append((pid, brand, False))
                deposits.append((pid, brand, amount, f"seed-{pid}", amount))
        cur.executemany(
            "INSERT INTO player (player_id, brand_id, is_synthetic, created_at)"
            " VALUES (%s, %s, %s, now() - %s::interval) ON CONFLICT DO NOTHING",
            [(*p, SEED_AGE) for p in players],
        )
        cur.executemany(
            "INSERT INTO ledger (player_id, brand_id, kind, amount, ref, balance_after, created_at)"
            " VALUES (%s, %s, 'deposit', %s, %s, %s, now() - %s::interval) ON CONFLICT DO NOTHING",
            [(*d, SEED_AGE) for d in deposits],
        )
        # A bucket is created once, from the ledger; an existing one is never "repaired" here.
        cur.execute(
            "INSERT INTO bucket (player_id, balance, updated_at)"
            " SELECT p.player_id, COALESCE(SUM(l.amount), 0), now() - %s::interval"
            " FROM player p LEFT JOIN ledger l ON l.player_id = p.player_id"
            " GROUP BY p.player_id ON CONFLICT DO NOTHING",
            (SEED_AGE,),
        )


def init(dsn: str) -> None:
    with connect(dsn, application_name="sandbox-db-init") as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))
        apply_schema(conn)
        seed(conn)
    log.info("platform schema and seed applied")


def reseed(dsn: str) -> None:
    """Seeded state again: levers off, ingress open, drift and test money gone.

    The ledger is append-only, so drift cannot be "fixed" by rewriting rows; the whole
    platform is emptied and reseeded in one transaction instead. A wedged writer's table lock
    would block it: `sandbox.faults.reset` switches the faults off first, then calls this.
    """
    with connect(dsn, application_name="sandbox-db-reset") as conn, conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', '15s', true)")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))
        apply_schema(conn)
        conn.execute("SELECT set_config('sandbox.allow_ledger_reset', 'on', true)")
        conn.execute("TRUNCATE " + ", ".join(_TABLES) + " RESTART IDENTITY")
        seed(conn)
    log.info("platform reset to seeded state")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.db", description=__doc__)
    parser.add_argument("command", choices=("init",))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    dsn = SandboxSettings().dsn.get_secret_value()
    try:
        init(dsn)
    except (RuntimeError, psycopg.Error) as exc:
        print(f"sandbox.db {args.command} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
