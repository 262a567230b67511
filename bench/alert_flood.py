"""Alert flood: 10,000 distinct Alertmanager groups within a minute → at most the cap of runs?

    uv run python -m sandbox.stack up          # once; the bench uses the stack's Prefect server
    uv run python bench/alert_flood.py [--groups 10000] [--seconds 60] [--concurrency 50]

Every POST is a new group (no repeats): the worst case for the receiver, whose bounds
(`[limits]` in `runbooks/alert-routes.toml`, shipped defaults) must hold it to the per-target run
cap, answer every POST (202 `started`/`accepted`/`capped`, 429 + Retry-After past a rate limit,
503 + Retry-After past the start queue), and keep its memory, queue and journal bounded.
Like `bench/alert_storm.py` it starts the receiver as a real process (`python -m remediation.alerts
serve`, the shipped routes with the deployment swapped) against the stack's Prefect server, on a
*parked* deployment, `capture-evidence/alert-flood-bench` (pool `rp-bench-no-worker`, no worker),
posts open-loop at groups/seconds per second with the storm bench's bare HTTP/1.1 client, samples
the receiver's `/healthz` and `/proc/<pid>/status` while it runs, and prints: answers by HTTP code
and by status, runs on the server for the flood (must be ≤ `runs_per_target`), peak RSS, peak
queue, journal rows, and the refusals the receiver counted (sent as `remediation.alert.throttled`
events). The runs it created are deleted afterwards (`--keep-runs` to look at them first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.alert_storm import parked_runs, payload, stack_env, storm  # noqa: E402

DEPLOYMENT_NAME, POOL = "alert-flood-bench", "rp-bench-no-worker"


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set of a process, KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class Sampler(threading.Thread):
    """Polls the receiver's /healthz and RSS every 0.25 s while the flood runs."""

    def __init__(self, url: str, pid: int) -> None:
        super().__init__(daemon=True)
        self.url, self.pid = url, pid
        self.stop = threading.Event()
        self.peak_queue = self.peak_waiting = self.samples = 0
        self.last: dict[str, Any] = {}

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    health = client.get(f"{self.url}/healthz").json()
                except httpx.HTTPError:
                    continue
                intake = health["intake"]
                self.peak_queue = max(self.peak_queue, intake["queued"])
                self.peak_waiting = max(self.peak_waiting, intake["waiting"])
                self.samples += 1
                self.last = health
                self.stop.wait(0.25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=10_000, help="distinct groups, one POST each")
    parser.add_argument("--seconds", type=float, default=60, help="spread over this long (open loop)")
    parser.add_argument("--concurrency", type=int, default=50, help="connections, each one request at a time")
    parser.add_argument("--keep-runs", action="store_true", help="leave the created runs Scheduled (else deleted)")
    args = parser.parse_args()

    os.environ.update(stack_env())
    token = secrets.token_urlsafe(24)
    os.environ.update({"RP_ALERT_TOKEN": token, "RP_GRAFANA_ALERT_TOKEN": secrets.token_urlsafe(24),
                       "RP_GENERIC_ALERT_TOKEN": secrets.token_urlsafe(24),
                       "RP_SENTRY_CLIENT_SECRET": secrets.token_urlsafe(24)})

    from remediation.alerts.routing import load_config
    from tests.fixtures.alert_capture import delete_parked_runs, park_capture_deployment
    from tests.fixtures.alert_receiver_proc import ReceiverProcess, write_routes

    limits = load_config().limits
    deployment = park_capture_deployment(DEPLOYMENT_NAME, POOL)
    nonce = secrets.token_hex(4)
    start = datetime.now(UTC).replace(microsecond=0)
    bodies = [json.dumps(payload(nonce, i, start, i)).encode() for i in range(args.groups)]
    tmp = Path(tempfile.mkdtemp(prefix="alert-flood-"))
    receiver = ReceiverProcess(write_routes(tmp / "routes.toml", deployment), {}, tmp / "receiver.log").start()
    assert receiver.proc is not None
    rate = args.groups / args.seconds
    print(f"alert flood: {args.groups} distinct groups in {args.seconds:g} s ({rate:.0f} posts/s open loop, "
          f"{args.concurrency} connections), one receiver process, parked deployment {deployment}")
    print(f"limits: source {limits.source_rate.rate_per_s:g}/s burst {limits.source_rate.burst}, route "
          f"{limits.route_rate.rate_per_s:g}/s burst {limits.route_rate.burst}, {limits.runs_per_target} runs per "
          f"target per {limits.runs_window_s} s, queue {limits.max_queue}")
    rss_before, _ = rss_kib(receiver.proc.pid)
    sampler = Sampler(receiver.url, receiver.proc.pid)
    sampler.start()
    try:
        t0 = time.perf_counter()
        results = asyncio.run(storm([receiver.url], token, bodies, args.concurrency, rate))
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        from bench.alert_storm import wait_for_intake

        backlog = wait_for_intake([receiver.url], timeout_s=300)
        rss_now, rss_peak = rss_kib(receiver.proc.pid)
        time.sleep(1)  # the last batch of events
        import httpx

        health = httpx.get(f"{receiver.url}/healthz", timeout=5).json()
    finally:
        receiver.stop()

    codes: dict[int, int] = {}
    statuses: dict[str, int] = {}
    for _, code, out in results:
        codes[code] = codes.get(code, 0) + 1
        if code == 202:
            statuses[out["status"]] = statuses.get(out["status"], 0) + 1
    answered = sum(codes.values()) - codes.get(0, 0)
    runs = [r for r in parked_runs(deployment)
            if (r.parameters.get("alert") or {}).get("labels", {}).get("bench") == nonce]
    with sqlite3.connect(receiver.journal) as db:
        rows = db.execute("SELECT count(*) FROM intake").fetchone()[0]
        episodes = db.execute("SELECT count(*) FROM episode").fetchone()[0]
    lat = sorted(r[0] * 1000 for r in results)
    ok = answered == args.groups and len(runs) <= limits.runs_per_target and backlog == 0
    print(f"  posts answered: {answered}/{args.groups} in {wall:.1f} s; by HTTP code {dict(sorted(codes.items()))}; "
          f"202 by status {dict(sorted(statuses.items()))}")
    print(f"  runs on the server for this flood: {len(runs)} (cap {limits.runs_per_target}) "
          f"{'OK' if len(runs) <= limits.runs_per_target else 'OVER THE CAP'}")
    print(f"  receiver latency ms: p50 {lat[len(lat) // 2]:.1f}  p99 {lat[int(len(lat) * 0.99)]:.1f}  "
          f"max {lat[-1]:.1f}")
    print(f"  receiver RSS: {rss_before / 1024:.0f} MiB before, peak {rss_peak / 1024:.0f} MiB, "
          f"{rss_now / 1024:.0f} MiB after; start queue peak {sampler.peak_queue} queued / {sampler.peak_waiting} "
          f"waiting ({sampler.samples} samples; bound {limits.max_queue}); backlog left {backlog}")
    print(f"  journal: {rows} intake rows, {episodes} episodes; refusals counted: {health['limits']['refused']}")
    print(f"  receiver log: {tmp / 'receiver.log'}")
    if not args.keep_runs:
        print(f"deleted {delete_parked_runs((r.id for r in parked_runs(deployment)), POOL)} bench runs")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
