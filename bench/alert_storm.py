"""Alert storm: 1,000 Alertmanager POSTs over 100 distinct groups → exactly 100 capture runs?

    uv run python -m sandbox.stack up          # once; the bench uses the stack's Prefect server
    uv run python bench/alert_storm.py [--posts 1000] [--groups 100] [--concurrency 50] [--replicas 1]

Starts the receiver (`python -m remediation.alerts serve`, one process per replica, as in
production) against the stack's Prefect server, fires the storm with every group's
notifications shuffled together, then prints how many flow runs the server holds for the
storm's groups (must equal --groups) and the receiver's latency as the sender saw it.

So the 100 runs do not execute capture flows on the shared worker, they are created on a
*parked* deployment, `capture-evidence/alert-storm-bench`: the same `capture-evidence` flow
(Prefect idempotency keys are per flow, so dedup behaves exactly as for the real
deployment) on the work pool `rp-bench-no-worker`, which no worker polls. Afterwards the
bench cancels the runs it created (pass --keep-runs to look at them in the UI first).
Group keys carry a per-invocation nonce, so every invocation starts from fresh keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
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
    import httpx

    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        for url in urls:  # open connections and warm nothing else: the cache starts cold
            await client.get(f"{url}/healthz")

        t_start = time.perf_counter()

        async def one(i: int, body: bytes) -> tuple[float, int, Any]:
            if rate > 0:  # open-loop arrivals at `rate` per second, as a sender fleet would post
                await asyncio.sleep(max(0.0, t_start + i / rate - time.perf_counter()))
            async with sem:
                t0 = time.perf_counter()
                resp = await client.post(f"{urls[i % len(urls)]}/alerts/alertmanager", content=body, headers=headers)
                dt = time.perf_counter() - t0
            return dt, resp.status_code, resp.json() if resp.status_code == 202 else resp.text

        return await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight at once")
    parser.add_argument("--rate", type=float, default=0, help="posts per second (0: as fast as allowed)")
    parser.add_argument("--replicas", type=int, default=1, help="receiver processes (requests round-robin)")
    parser.add_argument("--keep-runs", action="store_true", help="leave the created runs Scheduled")
    args = parser.parse_args()

    os.environ.update(stack_env())
    token = secrets.token_urlsafe(24)
    os.environ.update({"RP_ALERT_TOKEN": token, "RP_SENTRY_CLIENT_SECRET": secrets.token_urlsafe(24)})

    from tests.fixtures.alert_capture import cancel_runs, park_capture_deployment, real_flow_exists
    from tests.fixtures.alert_receiver_proc import ReceiverProcess, write_routes

    deployment = park_capture_deployment(DEPLOYMENT_NAME, POOL)
    nonce = secrets.token_hex(4)
    start = datetime.now(UTC).replace(microsecond=0)
    bodies = [json.dumps(payload(nonce, i % args.groups, start, i)).encode() for i in range(args.posts)]
    random.Random(nonce).shuffle(bodies)

    tmp = Path(tempfile.mkdtemp(prefix="alert-storm-"))
    routes = write_routes(tmp / "routes.toml", deployment)
    receivers = [ReceiverProcess(routes, {}, tmp / f"receiver-{i}.log").start() for i in range(args.replicas)]
    try:
        t0 = time.perf_counter()
        results = asyncio.run(storm([r.url for r in receivers], token, bodies, args.concurrency, args.rate))
        wall = time.perf_counter() - t0
    finally:
        for r in receivers:
            r.stop()

    ok = [r for r in results if r[1] == 202]
    codes: dict[int, int] = {}
    for _, code, _ in results:
        codes[code] = codes.get(code, 0) + 1
    run_ids = {rid for _, _, out in ok for rid in out["flow_run_ids"]}
    started = sum(1 for _, _, out in ok if not out["deduplicated"])
    server_runs = [r for r in parked_runs(deployment)
                   if (r.parameters.get("alert") or {}).get("labels", {}).get("bench") == nonce]
    lat = [r[0] * 1000 for r in results]
    print(f"alert storm: {args.posts} POSTs over {args.groups} groups, {args.concurrency} in flight, "
          f"rate {args.rate or 'unpaced'}/s, "
          f"{args.replicas} receiver process(es); flow: {'real' if real_flow_exists() else 'stand-in'} "
          f"capture-evidence schema, parked deployment {deployment} (pool {POOL}, no worker)")
    print(f"  answers: {dict(sorted(codes.items()))}; 'started' answers: {started}; distinct run ids: {len(run_ids)}")
    verdict = "OK" if len(server_runs) == args.groups else "MISMATCH"
    print(f"  flow runs on the server for this storm: {len(server_runs)} (expected {args.groups}) {verdict}")
    print(f"  receiver latency ms: p50 {pct(lat, 50):.1f}  p95 {pct(lat, 95):.1f}  p99 {pct(lat, 99):.1f}  "
          f"max {max(lat):.1f}  mean {statistics.fmean(lat):.1f}")
    first = [r[0] * 1000 for r in ok if not r[2]["deduplicated"]]
    dupes = [r[0] * 1000 for r in ok if r[2]["deduplicated"]]
    for what, xs in (("first of a group (run created)", first), ("repeat (deduplicated)", dupes)):
        if xs:
            print(f"    {what}: n={len(xs)} p50 {pct(xs, 50):.1f}  p95 {pct(xs, 95):.1f}  p99 {pct(xs, 99):.1f}")
    print(f"  wall {wall:.2f} s, {args.posts / wall:.0f} req/s")
    if not args.keep_runs:
        # Every open run of the parked deployment is a bench run (ours or a crashed earlier bench's).
        print(f"  cancelled {cancel_runs(r.id for r in parked_runs(deployment, only_open=True))} bench runs")
    print(f"  receiver logs: {tmp}")
    return 0 if len(server_runs) == args.groups and codes == {202: args.posts} else 1


if __name__ == "__main__":
    sys.exit(main())
