"""Run created → flow Running, per runbook, and the SEV1 drill's wall time: warm runners against the
process worker every runbook but capture ran on before, side by side in one invocation.

    uv run python -m sandbox.stack up && RP_PROJECT_DIR=$PWD uv run prefect --no-prompt deploy --all
    uv run python bench/runbook_start.py [--runs 5] [--drills 1] [--no-drill]

Two modes, in this order, on the same stack:
* process worker — the runbook deployments are moved, for the bench only, to a pool
  `rp-bench-process` served by `prefect worker start --type process` (a fresh interpreter per run,
  the shape before warm runners); restored to pool `remediation` afterwards, whatever happens;
* warm runners — the stack as it ships: runner-a and runner-b on pool `remediation`.
Per runbook, `--runs` dry-run runs one at a time, timed from the run's creation to the server's
`start_time` (the flow function is running); each run is cancelled once Running, so nothing is
applied, then deleted. Then `python -m sandbox.drill` end to end in each mode, `--drills` times (`--no-drill`
skips it); the warm drills start once every replica is back to its full warm pool, as runners are
between incidents (a child still warming after the last measured run competes for the 2 cores).
The drill's wall time counts from its process's start, imports included; 56 s is the figure the
issue measured before warm runners.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH_POOL = "rp-bench-process"
#: What each runbook's required parameters get: dry runs, started by the sandbox's on-call.
FILL = {"incident_id": lambda: f"INC-B{uuid.uuid4().hex[:8]}", "initiated_by": lambda: "oncall-alice",
        "lever": lambda: "deposit-halt", "severity": lambda: "SEV2", "title": lambda: "bench",
        "impact": lambda: "none: a benchmark", "service": lambda: "wallet"}


def params_for(deployment: Any) -> dict[str, Any]:
    schema = deployment.parameter_openapi_schema or {}
    out: dict[str, Any] = {name: FILL[name]() for name in schema.get("required", []) if name in FILL}
    missing = [n for n in schema.get("required", []) if n not in out]
    if missing:
        raise SystemExit(f"{deployment.name}: no bench value for required parameter(s) {missing}")
    if "dry_run" in schema.get("properties", {}):
        out["dry_run"] = True
    return out


def time_to_running(client: Any, deployment: Any) -> float:
    from prefect.states import Cancelling

    run = client.create_flow_run_from_deployment(deployment.id, parameters=params_for(deployment))
    deadline = time.monotonic() + 120
    while True:
        current = client.read_flow_run(run.id)
        if current.start_time is not None:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{deployment.name}: run {run.id} not Running after 120 s")
        time.sleep(0.05)
    took = (current.start_time - current.created).total_seconds()
    if current.state is not None and not current.state.is_final():
        client.set_flow_run_state(run.id, Cancelling(message="benchmark: measured, not needed"), force=True)
    wait_final(client, run.id)
    # Deleted, not left Cancelled: Prefect's cancellation-cleanup service revisits every run cancelled
    # in the last day on each loop, and a few hundred bench runs kept it at a core, slowing what follows.
    client.delete_flow_run(run.id)
    return took


def wait_final(client: Any, run_id: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_final():
            return
        time.sleep(0.2)


def wait_warm(stack: Any) -> None:
    """Every runner replica back to its full warm pool (a cancelled run's child is replaced)."""
    import json

    deadline = time.monotonic() + 120
    for replica in stack.runners:
        while time.monotonic() < deadline:
            try:
                if json.loads(replica.status_file.read_text())["idle"] >= replica.warm:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)


def move(client: Any, deployments: list[Any], pool: str) -> None:
    from prefect.client.schemas.actions import DeploymentUpdate

    for dep in deployments:
        client.update_deployment(dep.id, DeploymentUpdate(work_pool_name=pool, work_queue_name="default"))


def measure(client: Any, stack: Any, deployments: list[Any], runs: int, label: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for dep in deployments:
        times = []
        for _ in range(runs):
            if label == "warm":
                wait_warm(stack)
            times.append(time_to_running(client, dep))
        out[dep.name] = times
        print(f"  [{label}] {dep.name:<18} created -> Running p50 {statistics.median(times):.2f} s  "
              f"({', '.join(f'{t:.2f}' for t in times)})", flush=True)
    return out


def drill(env: dict[str, str]) -> tuple[float, bool]:
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sandbox.drill"], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    took = time.monotonic() - began
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-2000:], file=sys.stderr)
    return took, proc.returncode == 0


def drill_times(env: dict[str, str], times: int, label: str) -> list[tuple[float, bool]]:
    out = []
    for _ in range(times):
        out.append(drill(env))
        print(f"  [{label}] SEV1 drill {out[-1][0]:.1f} s{'' if out[-1][1] else ' (FAILED)'}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--drills", type=int, default=1, help="SEV1 drills per mode (the median is compared)")
    parser.add_argument("--no-drill", action="store_true")
    args = parser.parse_args()

    from sandbox.stack.core import Stack
    from sandbox.stack.prefect_server import prefect_client_env
    from sandbox.stack.processes import start_detached, stop
    from sandbox.stack.runners import WORK_POOL

    stack = Stack()
    info = stack.loaded_info()
    if not (stack.prefect.running() and all(r.running() for r in stack.runners)):
        raise SystemExit("the stack is not up: uv run python -m sandbox.stack up")
    env = {**os.environ, **prefect_client_env(stack.home, info.prefect_api_url), **info.env()}
    os.environ.update(env)  # before Prefect is imported: it reads its settings once
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    worker_pid = stack.home / "run" / "bench-process-worker.pid"
    results: dict[str, dict[str, list[float]]] = {}
    drills: dict[str, list[tuple[float, bool]]] = {}
    with get_client(sync_client=True) as client:
        deployments = sorted(client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[WORK_POOL]))), key=lambda d: d.name)
        if not deployments:
            raise SystemExit("no deployments on pool remediation: RP_PROJECT_DIR=$PWD prefect deploy --all")
        prefect = str(Path(sys.executable).with_name("prefect"))
        if subprocess.run([prefect, "work-pool", "inspect", BENCH_POOL], env=env, capture_output=True).returncode:
            subprocess.run([prefect, "work-pool", "create", BENCH_POOL, "--type", "process"], env=env, check=True,
                           capture_output=True)
        try:
            start_detached([prefect, "worker", "start", "--pool", BENCH_POOL, "--type", "process"],
                           pid_file=worker_pid, log_file=stack.home / "logs" / "bench-process-worker.log",
                           env=env, cwd=ROOT)
            move(client, deployments, BENCH_POOL)
            print(f"process worker (pool {BENCH_POOL}), {args.runs} dry runs per runbook:", flush=True)
            results["process"] = measure(client, stack, deployments, args.runs, "process")
            if not args.no_drill:
                drills["process"] = drill_times(env, args.drills, "process")
        finally:
            move(client, deployments, WORK_POOL)
            stop(worker_pid, grace_s=15)
        print(f"warm runners (pool {WORK_POOL}, {len(stack.runners)} replicas), {args.runs} dry runs per runbook:",
              flush=True)
        results["warm"] = measure(client, stack, deployments, args.runs, "warm")
        if not args.no_drill:
            wait_warm(stack)
            drills["warm"] = drill_times(env, args.drills, "warm")

    print("\nrun created -> flow Running, p50 per runbook (same run, same stack, one invocation):")
    print(f"  {'runbook':<18} {'process worker':>15} {'warm runners':>13} {'ratio':>6}")
    for dep in deployments:
        p, w = statistics.median(results["process"][dep.name]), statistics.median(results["warm"][dep.name])
        print(f"  {dep.name:<18} {p:>13.2f} s {w:>11.2f} s {w / p:>6.2f}")
    every_warm = [t for times in results["warm"].values() for t in times]
    print(f"  all runbooks, warm: p50 {statistics.median(every_warm):.2f} s, max {max(every_warm):.2f} s")
    if drills:
        pt, wt = (statistics.median(t for t, _ in drills[mode]) for mode in ("process", "warm"))
        pok, wok = (all(ok for _, ok in drills[mode]) for mode in ("process", "warm"))
        print(f"SEV1 drill wall time, median of {args.drills}: process worker {pt:.1f} s "
              f"({'passed' if pok else 'FAILED'}), warm runners {wt:.1f} s ({'passed' if wok else 'FAILED'}), "
              f"ratio {wt / pt:.2f}; against the issue's 56 s: {wt / 56:.2f}")
        return 0 if pok and wok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
