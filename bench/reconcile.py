"""Reconcile at scale: prints figures, side by side. Needs the stack up (`python -m sandbox.stack up`).

    uv run python bench/reconcile.py                          # 1,000,000 players, 5,000,000 ledger rows
    uv run python bench/reconcile.py --players 20000 --ledger-rows 100000 --reps 3   # a quick run

Creates database `rp_bench` on the stack's PostgreSQL (schema from sandbox/schema.sql), seeds it
set-based (generate_series), drifts some buckets, measures, and drops the database at the end.

Measured (medians of --reps):
* the flow's dry-run code over everyone (one comparison statement, plan, plan hash, the mismatch
  CSV and counters written as an evidence bundle) vs the bare comparison SQL alone, and the flow's
  statement on its own (the rest is Python: ~0.03-0.07 s);
* a per-player Python loop (two lookups per player) over a sample, extrapolated to everyone;
* the affected-set dry-run over 10,000 listed players (SQL part and whole);
* apply of 1,000 corrections (one guarded transaction, audit rows included);
* peak RSS of this process.

Last full run (`uv run python bench/reconcile.py`, 2 cores at load average 2.0-2.7; README's table):
flow dry-run 3.865 s vs bare 3.727 s = 1.04x (target <= 1.1x), its statement alone 1.03x. Before each
row's kind was computed once (tasks/database/ledger.py `_ONCE`): 1.24-1.43x.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from remediation.clients.database import PsycopgDatabase  # noqa: E402
from remediation.domain.reconcile import MISMATCH_CSV_HEADER, ReconcilePlan, Scope, mismatch_rows  # noqa: E402
from remediation.evidence.writer import BundleWriter  # noqa: E402
from remediation.target.inventory import load_target  # noqa: E402
from sandbox.stack.core import Stack  # noqa: E402
from tasks.database.ledger import compare, plan_from  # noqa: E402
from tasks.database.ledger_apply import apply_plan  # noqa: E402

DB = "rp_bench"
BARE = """
SELECT coalesce(b.player_id, s.player_id) AS player_id, b.balance, s.ledger_sum
FROM bucket b FULL JOIN (SELECT player_id, sum(amount)::bigint AS ledger_sum FROM ledger GROUP BY player_id) s
  ON s.player_id = b.player_id
WHERE b.balance IS DISTINCT FROM s.ledger_sum AND NOT (s.player_id IS NULL AND b.balance = 0)
"""


def _pid(n: int) -> str:
    return f"p{n:07d}"


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def seed(dsn: str, players: int, rows: int, drift_every: int) -> int:
    schema = (ROOT / "sandbox" / "schema.sql").read_text()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema)
        conn.execute("SET session_replication_role = replica")  # bulk load: skip FK triggers (data is valid)
        conn.execute("INSERT INTO brand VALUES ('alpha', 'Alpha')")
        conn.execute("INSERT INTO player (player_id, brand_id) SELECT 'p' || lpad(g::text, 7, '0'), 'alpha'"
                     " FROM generate_series(1, %s) g", (players,))
        conn.execute(
            "INSERT INTO ledger (player_id, brand_id, kind, amount, ref, created_at)"
            " SELECT 'p' || lpad(((g - 1) %% %(p)s + 1)::text, 7, '0'), 'alpha', 'deposit', 100 + (g * 7919) %% 90000,"
            "        'r' || g, now() - make_interval(secs => (g %% 604800))"
            " FROM generate_series(1::bigint, %(r)s::bigint) g", {"p": players, "r": rows})
        conn.execute("INSERT INTO bucket (player_id, balance) SELECT player_id, sum(amount) FROM ledger"
                     " GROUP BY player_id")
        drifted = conn.execute(
            "UPDATE bucket SET balance = balance + 1500 WHERE substr(player_id, 2)::int %% %s = 0", (drift_every,)
        ).rowcount
        conn.execute("VACUUM ANALYZE")
    return drifted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--players", type=int, default=1_000_000)
    ap.add_argument("--ledger-rows", type=int, default=5_000_000)
    ap.add_argument("--drift-every", type=int, default=1_000, help="drift one player in this many")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sample", type=int, default=10_000, help="players in the Python-loop sample")
    ap.add_argument("--affected", type=int, default=10_000, help="players in the affected-set dry-run")
    ap.add_argument("--corrections", type=int, default=1_000)
    ap.add_argument("--keep", action="store_true", help="keep the rp_bench database")
    args = ap.parse_args(argv)

    stack = Stack()
    info = stack.loaded_info()
    os.environ.update(info.env())  # the sandbox inventory's secret references (for redaction)
    admin = info.superuser_dsn.get_secret_value()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    dsn = psycopg.conninfo.make_conninfo(admin, dbname=DB)
    tmp = Path(tempfile.mkdtemp(prefix="rp-bench-"))  # the dry-runs' evidence bundles
    try:
        t0 = time.perf_counter()
        drifted = seed(dsn, args.players, args.ledger_rows, args.drift_every)
        print(f"seeded {args.players:,} players, {args.ledger_rows:,} ledger rows, {drifted:,} drifted "
              f"in {time.perf_counter() - t0:.1f} s")
        db = PsycopgDatabase(SecretStr(dsn), statement_timeout_ms=3_600_000, application_name="rp-bench")
        inv = load_target("sandbox")

        def bare() -> None:
            with psycopg.connect(dsn) as conn:
                rows = conn.execute(BARE).fetchall()
            assert len(rows) == drifted, len(rows)

        run = [0]
        flow_sql_s: list[float] = []  # the comparison statement's part of each flow dry-run

        def flow_dry_run() -> None:
            run[0] += 1
            plan = plan_from(db, incident_id="INC-BENCH", target="sandbox", scope=Scope())
            flow_sql_s.append(plan.query_s)
            assert len(plan.corrections) == drifted
            _ = plan.hash
            bundle = BundleWriter(inv, "INC-BENCH", f"run{run[0]}", profile="reconcile", initiated_by="bench",
                                  flow_run_id=None, root=tmp)
            bundle.seal([
                bundle.add("reconcile-mismatches.csv", "bench", kind="reconcile", body=lambda out: out.write_csv(
                    MISMATCH_CSV_HEADER, mismatch_rows(plan.corrections))),
                bundle.add("reconcile-counters.json", "bench", kind="reconcile",
                           body=lambda out: out.write_json(plan.counters.model_dump())),
            ])

        bare()  # warm the cache for both
        bare_s: list[float] = []
        flow_s: list[float] = []
        for rep in range(args.reps):  # interleaved, first one then the other, so cache and load drift hit both alike
            if rep % 2:
                flow_s.append(_timed(flow_dry_run))
            bare_s.append(_timed(bare))
            if not rep % 2:
                flow_s.append(_timed(flow_dry_run))
        rss_after_everyone = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        sample = [_pid(n) for n in range(1, args.players + 1, max(1, args.players // args.sample))][:args.sample]

        def loop() -> None:
            found = 0
            with psycopg.connect(dsn) as conn:
                for pid in sample:
                    b = conn.execute("SELECT balance FROM bucket WHERE player_id = %s", (pid,)).fetchone()
                    s = conn.execute("SELECT coalesce(sum(amount), 0) FROM ledger WHERE player_id = %s",
                                     (pid,)).fetchone()
                    found += int((b[0] if b else 0) != (s[0] if s else 0))
        loop_s = [_timed(loop) for _ in range(max(1, min(3, args.reps)))]
        loop_everyone = _median(loop_s) * args.players / len(sample)

        affected = Scope(mode="players", players=[_pid(n) for n in range(1, min(args.affected, args.players) + 1)])
        aff_sql: list[float] = []
        aff_all: list[float] = []
        for _ in range(args.reps):
            started = time.perf_counter()
            _, _, took = compare(db, affected)
            aff_all.append(time.perf_counter() - started)
            aff_sql.append(took)

        apply_s: list[float] = []
        base = plan_from(db, incident_id="INC-BENCH", target="sandbox", scope=Scope())
        chosen = base.corrections[:args.corrections]
        ids = [c.player_id for c in chosen]
        for rep in range(args.reps):
            if rep:  # drift the same players again (the audit rows of earlier reps are for other plans)
                with psycopg.connect(dsn) as conn:
                    conn.execute("UPDATE bucket SET balance = balance + 1500 WHERE player_id = ANY(%s)", (ids,))
            plan = ReconcilePlan(incident_id=f"INC-BENCH-{rep}", target="sandbox", scope=Scope(),
                                 corrections=chosen, counters=base.counters, checked_at=base.checked_at)
            started = time.perf_counter()
            result = apply_plan(db, plan, approver="bench", flow_run_id=None)
            apply_s.append(time.perf_counter() - started)
            assert len(result.applied) == len(chosen) and not result.skipped, result.summary()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        b, f, fs = _median(bare_s), _median(flow_s), _median(flow_sql_s)
        print(f"\nreconcile bench: {args.players:,} players, {args.ledger_rows:,} ledger rows, {drifted:,} drifted; "
              f"medians of {args.reps} (PostgreSQL {db.server_version()}, {os.cpu_count()} CPUs)\n")
        rows = [
            ("bare comparison SQL (everyone)", f"{b:.3f} s", "", ""),
            ("flow dry-run code (everyone)", f"{f:.3f} s", f"{f / b:.2f}x bare", "target <= 1.1x"),
            ("  of which its comparison statement", f"{fs:.3f} s", f"{fs / b:.2f}x bare", ""),
            (f"python loop, {len(sample):,} sample", f"{_median(loop_s):.3f} s", "", ""),
            ("python loop, extrapolated to everyone", f"{loop_everyone:.1f} s", f"{loop_everyone / b:.0f}x bare",
             "issue measured ~77x"),
            (f"affected-set dry-run, {len(affected.players):,} players: SQL", f"{_median(aff_sql):.3f} s", "",
             "target <= 0.2 s"),
            (f"affected-set dry-run, {len(affected.players):,} players: whole", f"{_median(aff_all):.3f} s", "", ""),
            (f"apply {len(chosen):,} corrections (one transaction)", f"{_median(apply_s):.3f} s", "",
             "target <= 0.5 s"),
            ("peak RSS after everyone dry-runs", f"{rss_after_everyone:.0f} MiB", "", ""),
            ("peak RSS of the process", f"{peak:.0f} MiB", "", ""),
        ]
        width = max(len(r[0]) for r in rows)
        for name, value, ratio, target in rows:
            print(f"  {name:<{width}}  {value:>10}  {ratio:>12}  {target}")
        print("\n  all runs (s): bare " + " ".join(f"{x:.3f}" for x in bare_s)
              + " | flow " + " ".join(f"{x:.3f}" for x in flow_s)
              + " | flow's statement " + " ".join(f"{x:.3f}" for x in flow_sql_s)
              + " | affected sql " + " ".join(f"{x:.3f}" for x in aff_sql)
              + " | apply " + " ".join(f"{x:.3f}" for x in apply_s))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
