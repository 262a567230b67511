"""How fast the stack's Prefect server creates deployment runs: the bound on the receiver's first answer.

    uv run python bench/prefect_create_rate.py [--runs 60] [--concurrency 1 8 50]

Creates runs (each with its own idempotency key, as the receiver does) on the parked
`capture-evidence/alert-storm-bench` deployment (pool `rp-bench-no-worker`, no worker),
prints per-request latency and throughput per concurrency, then deletes the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from uuid import uuid4

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def creates(deployment: str, n: int, concurrency: int) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentFlowRunCreate

    ids: list[str] = []
    lat: list[float] = []
    async with get_client() as client:
        dep = await client.read_deployment_by_name(deployment)
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            body = DeploymentFlowRunCreate(parameters={"incident_id": f"INC-C{uuid4().hex[:6]}"},
                                           idempotency_key=uuid4().hex).model_dump(mode="json", exclude_unset=True)
            async with sem:
                t0 = time.perf_counter()
                resp = await client.request("POST", "/deployments/{id}/create_flow_run", path_params={"id": dep.id},
                                            json=body)
                lat.append(time.perf_counter() - t0)
            ids.append(resp.json()["id"])

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
    lat.sort()
    print(f"  concurrency {concurrency:3d}: {n / wall:5.1f} creates/s; per request p50 {lat[n // 2] * 1000:.0f} ms "
          f"p99 {lat[max(0, round(n * 0.99) - 1)] * 1000:.0f} ms")
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 50])
    args = parser.parse_args()

    from bench.alert_storm import DEPLOYMENT_NAME, POOL, stack_env

    os.environ.update(stack_env())
    from tests.fixtures.alert_capture import delete_parked_runs, park_capture_deployment

    deployment = park_capture_deployment(DEPLOYMENT_NAME, POOL)
    print(f"create_flow_run on {deployment}, {args.runs} runs per concurrency")
    made: list[str] = []
    try:
        for conc in args.concurrency:
            made += asyncio.run(creates(deployment, args.runs, conc))
    finally:
        print(f"  deleted {delete_parked_runs(made, POOL)} bench runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
