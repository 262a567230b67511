"""Alert storm: 1,000 Alertmanager POSTs over 100 distinct groups → exactly 100 capture runs?

    uv run python -m sandbox.stack up          # once; the bench uses the stack's Prefect server
    uv run python bench/alert_storm.py [--posts 1000] [--groups 100] [--concurrency 50] [--replicas 1]
                                       [--rate 0 200 500]

One storm per rate, side by side: unpaced (50 connections, each posting as soon as its last
answer came: a throughput test) and open-loop at 200 and 500 posts/s. Starts the receiver
(`python -m remediation.alerts serve`, one process per replica, as in production) against the
stack's Prefect server, fires the storm with every group's notifications shuffled together, then
prints how many flow runs the server holds for the
storm's groups (must equal --groups), the receiver's latency as the sender saw it, and how long
after the first POST the last accepted alert's run existed (the receivers' /healthz backlog at 0).

So the 100 runs do not execute capture flows on the shared worker, they are created on a
*parked* deployment, `capture-evidence/alert-storm-bench`: the same `capture-evidence` flow
(Prefect idempotency keys are per flow, so dedup behaves exactly as for the real
deployment) on the work pool `rp-bench-no-worker`, which no worker polls. Afterwards the
bench deletes the runs it created (pass --keep-runs to look at them in the UI first).
Group keys carry a per-invocation nonce, so every invocation starts from fresh keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEPLOYMENT_NAME, POOL = "alert-storm-bench", "rp-bench-no-worker"


def stack_env() -> dict[str, str]:
    from sandbox.stack.core import Stack
    from sandbox.stack.prefect_server import prefect_client_env

    stack = Stack()
    info = stack.loaded_info()
    if not stack.prefect.running():
        raise SystemExit("the stack's Prefect server is not running: uv run python -m sandbox.stack up")
    return {**prefect_client_env(stack.home, info.prefect_api_url), **info.env()}


def payload(nonce: str, group: int, start: datetime, instance: int) -> dict[str, Any]:
    labels = {"alertname": "WalletDepositErrors", "env": "sandbox", "service": "wallet", "bench": nonce,
              "shard": f"s{group:03d}"}
    return {
        "version": "4", "groupKey": f'{{}}:{{bench="{nonce}", shard="s{group:03d}"}}', "truncatedAlerts": 0,
        "status": "firing", "receiver": "remediation", "groupLabels": {"shard": labels["shard"]},
        "commonLabels": labels, "commonAnnotations": {"summary": "storm"}, "externalURL": "http://am.bench",
        "alerts": [{
            "status": "firing", "labels": {**labels, "instance": f"i{instance}"}, "annotations": {},
            "startsAt": (start + timedelta(seconds=group)).isoformat().replace("+00:00", "Z"),
            "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"{group:08x}{instance:08x}",
        }],
    }


async def storm(
    urls: list[str], token: str, bodies: list[bytes], concurrency: int, rate: float
) -> list[tuple[float, int, Any]]:
    """POST every body over `concurrency` keep-alive connections; (latency s, status, JSON answer) each.

    A bare asyncio HTTP/1.1 client, not httpx: at 50 connections httpx spent more CPU per request
    than the receiver did (profiled), so on 2 cores it measured itself. With `rate`, request i is
    due at i/rate and its latency counts from then, so a client that falls behind cannot hide it.
    """
    head = (f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n").encode()
    results: list[tuple[float, int, Any]] = [(0.0, 0, None)] * len(bodies)
    todo = iter(range(len(bodies)))
    t_start = time.perf_counter()

    async def worker(n: int) -> None:
        host, port = urls[n % len(urls)].removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for i in todo:
                due = t_start + i / rate if rate > 0 else None
                if due is not None:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                body = bodies[i]
                t0 = due if due is not None else time.perf_counter()
                writer.write(b"POST /alerts/alertmanager HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n%s"
                             % (host.encode(), head, len(body), body))
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                answer = await reader.readexactly(length)
                status = int(status_line.split()[1])
                results[i] = (time.perf_counter() - t0, status, json.loads(answer) if status == 202 else answer)
        finally:
            writer.close()

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return results


def wait_for_intake(urls: list[str], timeout_s: float) -> int:
    """Poll each receiver's /healthz until nothing is queued, starting or journaled-unstarted."""
    import httpx

    deadline = time.monotonic() + timeout_s
    left = -1
    while time.monotonic() < deadline:
        left = 0
        for url in urls:
            intake = httpx.get(f"{url}/healthz", timeout=5).json()["intake"]
            left += intake["queued"] + intake["starting"] + intake["waiting"] + intake["pending"]
        if left == 0:
            return 0
        time.sleep(0.05)
    return left


def parked_runs(deployment: str, *, only_open: bool = False) -> list[Any]:
    """Every run of the parked deployment (paged: the API returns at most 200 at a time)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    open_states = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
    state = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=open_states)))
    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        dep_id = client.read_deployment_by_name(deployment).id
        while True:
            page = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep_id])),
                flow_run_filter=state if only_open else None, limit=200, offset=len(runs))
            runs += page
            if len(page) < 200:
                return runs


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def one_storm(args: argparse.Namespace, deployment: str, token: str, rate: float,
              start_concurrency: int | None = None) -> dict[str, Any]:
    from tests.fixtures.alert_receiver_proc import ReceiverProcess, write_routes

    nonce = secrets.token_hex(4)
    start = datetime.now(UTC).replace(microsecond=0)
    bodies = [json.dumps(payload(nonce, i % args.groups, start, i)).encode() for i in range(args.posts)]
    random.Random(nonce).shuffle(bodies)
    tmp = Path(tempfile.mkdtemp(prefix="alert-storm-"))
    routes = write_routes(tmp / "routes.toml", deployment, **(
        {} if start_concurrency is None else {"start_concurrency": str(start_concurrency)}))
    receivers = [ReceiverProcess(routes, {}, tmp / f"receiver-{i}.log").start() for i in range(args.replicas)]
    try:
        t0 = time.perf_counter()
        results = asyncio.run(storm([r.url for r in receivers], token, bodies, args.concurrency, rate))
        wall = time.perf_counter() - t0
        backlog = wait_for_intake([r.url for r in receivers], timeout_s=300)
        all_started = time.perf_counter() - t0
    finally:
        for r in receivers:
            r.stop()

    ok = [r for r in results if r[1] == 202]
    codes: dict[int, int] = {}
    statuses: dict[str, int] = {}
    for _, code, out in results:
        codes[code] = codes.get(code, 0) + 1
        if code == 202:
            statuses[out["status"]] = statuses.get(out["status"], 0) + 1
    server_runs = [r for r in parked_runs(deployment)
                   if (r.parameters.get("alert") or {}).get("labels", {}).get("bench") == nonce]
    lat = [r[0] * 1000 for r in results]
    print(f"\nrate {rate or 'unpaced'}/s, {args.concurrency} connections, start_concurrency "
          f"{start_concurrency or 'as configured'}: "
          f"answers {dict(sorted(codes.items()))}, by status {dict(sorted(statuses.items()))}")
    verdict = "OK" if len(server_runs) == args.groups else "MISMATCH"
    print(f"  flow runs on the server for this storm: {len(server_runs)} (expected {args.groups}) {verdict}; "
          f"the last created {all_started:.2f} s after the first POST (backlog left: {backlog})")
    print(f"  receiver latency ms: p50 {pct(lat, 50):.1f}  p95 {pct(lat, 95):.1f}  p99 {pct(lat, 99):.1f}  "
          f"max {max(lat):.1f}; wall {wall:.2f} s, {args.posts / wall:.0f} req/s")
    waited = [r[0] * 1000 for r in ok if r[2]["status"] == "started"]
    at_once = [r[0] * 1000 for r in ok if r[2]["status"] == "accepted" and not r[2]["deduplicated"]]
    dupes = [r[0] * 1000 for r in ok if r[2]["deduplicated"]]
    for what, xs in (("first of a group, waited for its run id", waited),
                     ("first of a group, journaled and accepted", at_once), ("repeat", dupes)):
        if xs:
            print(f"    {what}: n={len(xs)} p50 {pct(xs, 50):.1f}  p95 {pct(xs, 95):.1f}  p99 {pct(xs, 99):.1f}")
    print(f"  receiver logs: {tmp}")
    return {"rate": rate, "starts": start_concurrency or "routes", "p50": pct(lat, 50), "p99": pct(lat, 99),
            "max": max(lat),
            "runs": len(server_runs), "created_s": all_started,
            "ok": len(server_runs) == args.groups and codes == {202: args.posts}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50, help="connections, each one request at a time")
    parser.add_argument("--rate", type=float, nargs="+", default=[0, 200, 500],
                        help="posts per second, one storm each (0: as fast as the connections allow)")
    parser.add_argument("--replicas", type=int, default=1, help="receiver processes (requests round-robin)")
    parser.add_argument("--start-concurrency", type=int, nargs="+", default=None,
                        help="receiver creates in flight (the routes file's start_concurrency); several values "
                             "alternate storm by storm, each rate once per value, for side-by-side figures")
    parser.add_argument("--repeat", type=int, default=1, help="run the whole set of storms this many times")
    parser.add_argument("--keep-runs", action="store_true", help="leave the created runs Scheduled (else deleted)")
    args = parser.parse_args()

    os.environ.update(stack_env())
    token = secrets.token_urlsafe(24)
    os.environ.update({"RP_ALERT_TOKEN": token, "RP_GRAFANA_ALERT_TOKEN": secrets.token_urlsafe(24),
                       "RP_GENERIC_ALERT_TOKEN": secrets.token_urlsafe(24),
                       "RP_SENTRY_CLIENT_SECRET": secrets.token_urlsafe(24)})

    from tests.fixtures.alert_capture import delete_parked_runs, park_capture_deployment, real_flow_exists

    deployment = park_capture_deployment(DEPLOYMENT_NAME, POOL)
    print(f"alert storm: {args.posts} POSTs over {args.groups} groups per storm, {args.replicas} receiver "
          f"process(es); flow: {'real' if real_flow_exists() else 'stand-in'} capture-evidence schema, "
          f"parked deployment {deployment} (pool {POOL}, no worker)")
    rows = [one_storm(args, deployment, token, rate, starts)
            for _ in range(args.repeat) for rate in args.rate for starts in (args.start_concurrency or [None])]
    print("\n| posts/s | start_concurrency | p50 ms | p99 ms | max ms | runs | last run created |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rate'] or 'unpaced'} | {r['starts']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.0f} | "
              f"{r['runs']}/{args.groups} | {r['created_s']:.1f} s |")
    if not args.keep_runs:
        # Every run of the parked deployment is a bench run (ours or an earlier bench's).
        print(f"deleted {delete_parked_runs((r.id for r in parked_runs(deployment)), POOL)} bench runs")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
