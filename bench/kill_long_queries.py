"""kill-long-queries: from the alert to the lock queue drained, through the stack as deployed; and the
bare `psql` floor, side by side in one invocation.

    uv run python -m sandbox.stack up && RP_PROJECT_DIR=$PWD uv run prefect --no-prompt deploy --all
    uv run python bench/kill_long_queries.py [--runs 3]

Each round: the sandbox's `wallet-wedged --mode hang` fault (a session holding `bucket` EXCLUSIVE under
`pg_sleep`) and a wallet write (`UPDATE bucket`) queued behind it; once the holder's query is past the
1 s threshold, the clock starts — the moment an on-call acts on "DB connections timing out".
* runbook: `kill-long-queries` started through its deployment (warm runner), its initiator confirmed
  and its approval given by signed answers the moment each is asked (a person's reading time is not
  the tool's); timed to the queued write finishing. Phases from the run's own pauses: to the
  initiator question, to the approval question (includes the evidence capture to S3), to drained.
* psql: the seed's query and `pg_cancel_backend` in one `psql -c`, as an on-call would type it; timed
  to the same write finishing. No evidence, no approval, no record.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEPLOYMENT = "kill-long-queries/kill-long-queries"
ONCALL, LEAD = "oncall-alice", "lead-bob"


def wedge(dsn: str, home: Path) -> tuple[threading.Thread, dict[str, float]]:
    """The fault on, a write queued behind it, and the holder past the 1 s threshold."""
    import psycopg

    from sandbox import faults

    faults.wedge_on(dsn, "hang", home=home)
    done: dict[str, float] = {}

    def write() -> None:
        with psycopg.connect(dsn, application_name="bench-wallet-writer") as conn:
            conn.execute("SET lock_timeout = '120s'")
            conn.execute("UPDATE bucket SET updated_at = updated_at WHERE player_id = 'alpha-0003'")
            done["at"] = time.monotonic()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    time.sleep(1.5)
    return thread, done


def by_runbook(home: Path) -> dict[str, float]:
    from prefect.deployments import run_deployment

    from remediation.flowkit import resume
    from sandbox.stack import people

    t0 = time.monotonic()
    run = run_deployment(DEPLOYMENT, timeout=0, parameters={
        "incident_id": f"INC-B{time.time_ns() % 10**8}", "initiated_by": ONCALL, "threshold_s": 1,
        "grace_s": 2, "dry_run": False})
    resume.wait_for_pause(run.id, timeout_s=120, poll_s=0.05)
    asked_who = time.monotonic()
    resume.confirm_initiator(run.id, handle=ONCALL, sign_key=people.key_path(home, ONCALL))
    resume.wait_for_pause(run.id, timeout_s=120, poll_s=0.05)
    asked_ok = time.monotonic()
    resume.answer(run.id, decision="approve", approver=LEAD, reason="bench", sign_key=people.key_path(home, LEAD))
    return {"run": run.id, "t0": t0, "asked_who": asked_who - t0, "asked_ok": asked_ok - t0, "answered": asked_ok}


def by_psql(dsn: str) -> float:
    import glob

    psql = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1:] or ["psql"]
    t0 = time.monotonic()
    subprocess.run([psql[0], dsn, "-Atc",
                    "SELECT pid, pg_cancel_backend(pid) FROM pg_stat_activity"
                    " WHERE now() - query_start > interval '1 second' AND state <> 'idle'"
                    " AND wait_event_type IS DISTINCT FROM 'Lock' AND pid <> pg_backend_pid()"
                    " AND datname = current_database()"], check=True, capture_output=True)
    return t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from sandbox import faults
    from sandbox.stack.core import Stack
    from sandbox.stack.prefect_server import prefect_client_env

    stack = Stack()
    if not stack.prefect.running():
        raise SystemExit("the stack is not up: uv run python -m sandbox.stack up")
    home, info = stack.home, stack.loaded_info()
    # Prefect reads its settings when first imported: the stack's server, before anything imports it.
    os.environ.update({**prefect_client_env(home, info.prefect_api_url), **info.env()})
    from remediation.flowkit import resume

    dsn = info.platform_dsn.get_secret_value()
    rows: dict[str, list[float]] = {"runbook": [], "psql": [], "who": [], "ok": [], "after_ok": []}
    for _ in range(args.runs):
        for mode in ("runbook", "psql"):
            thread, done = wedge(dsn, home)
            try:
                if mode == "runbook":
                    timed: dict[str, Any] = by_runbook(home)
                    t0 = timed["t0"]
                else:
                    t0 = by_psql(dsn)
                thread.join(timeout=120)
                if "at" not in done:
                    raise SystemExit(f"{mode}: the queued write never went through")
                rows[mode].append(done["at"] - t0)
                if mode == "runbook":
                    rows["who"].append(timed["asked_who"])
                    rows["ok"].append(timed["asked_ok"])
                    rows["after_ok"].append(done["at"] - timed["answered"])
                    final = resume.wait_for_final(timed["run"], timeout_s=120)
                    if final.state is None or not final.state.is_completed():
                        raise SystemExit(f"run {timed['run']} ended {final.state}")
            finally:
                faults.wedge_off(dsn, home=home)

    def med(key: str) -> float:
        return statistics.median(rows[key])

    print(f"kill-long-queries, {args.runs} round(s), medians; clock starts with the holder past 1 s")
    print(f"  runbook (deployment, warm runner)  alert → queue drained  {med('runbook'):6.2f} s")
    print(f"    run created → asks who started it                      {med('who'):6.2f} s")
    print(f"    → asks for approval (initiator checked, evidence in S3) {med('ok') - med('who'):6.2f} s")
    print(f"    approval given → queued write done                     {med('after_ok'):6.2f} s")
    print(f"  psql one-liner (no evidence, approval or record)          {med('psql'):6.2f} s")
    print(f"  ratio runbook / psql                                      {med('runbook') / med('psql'):6.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
