"""What a run costs its runner in CPU: warm children spawned as fresh interpreters against children forked
from the runner's zygote, side by side in one invocation on the same stack.

    uv run python -m sandbox.stack up && RP_PROJECT_DIR=$PWD uv run prefect --no-prompt deploy --all
    uv run python bench/warm_child_cpu.py [--runs 8]

For each mode (`RP_RUNNER_SPAWN=1`, then the default, forking) the stack's three runner replicas are
restarted in that mode and waited for until every warm pool is full. Then `--runs` runs of
snapshot-context (pool `remediation`) and of capture-evidence (pool `remediation-fast`) go one at a
time, each from creation to its final state; after the last, the pools are waited for again (the
children that replace the used ones are part of each run's cost). Printed per run: wall time
(created → final), CPU of the runner replicas' process groups (runner, zygote, children, reaped
ones included), and CPU of the whole machine (/proc/stat: the API servers, services and targets too).
The runs are deleted afterwards; the runners are left forking, as the stack ships.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEPLOYMENTS = ("snapshot-context/snapshot-context", "capture-evidence/capture-evidence")
TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / TICK


def group_cpu_s(pgids: set[int]) -> float:
    """utime+stime of every process in the groups, plus what each has reaped (cutime+cstime)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        if int(rest[2]) in pgids:
            total += sum(int(x) for x in rest[11:15])
    return total / TICK


def replicas(stack: Any) -> list[Any]:
    return [*stack.runners, stack.warm_runner]


def restart_runners(stack: Any, spawn: bool) -> set[int]:
    if spawn:
        os.environ["RP_RUNNER_SPAWN"] = "1"
    else:
        os.environ.pop("RP_RUNNER_SPAWN", None)
    info = stack.loaded_info()
    for replica in replicas(stack):
        replica.stop()
    for replica in stack.runners:
        stack.start_runner(replica, info)
    stack.warm_runner.start(info.env())
    wait_full(stack)
    time.sleep(5)  # the replicas' own start-up settles
    return {int(Path(f"/proc/{r.pid_file.read_text().strip()}/stat").read_text().rsplit(")", 1)[1].split()[2])
            for r in replicas(stack)}


def wait_full(stack: Any, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    for replica in replicas(stack):
        while time.monotonic() < deadline:
            try:
                status = json.loads(replica.status_file.read_text())
                if status["idle"] >= replica.warm and not status["running"] and not status["warming"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        else:
            raise SystemExit(f"{replica.name} did not fill its warm pool within {timeout_s:.0f} s")


def one_run(client: Any, deployment: Any) -> tuple[Any, float]:
    from prefect.client.schemas.objects import StateType

    params: dict[str, Any] = {"incident_id": f"INC-B{uuid.uuid4().hex[:8]}", "initiated_by": "oncall-alice"}
    started = time.monotonic()
    run = client.create_flow_run_from_deployment(deployment.id, parameters=params)
    deadline = started + 180
    while time.monotonic() < deadline:
        state = client.read_flow_run(run.id).state
        if state is not None and state.is_final():
            if state.type != StateType.COMPLETED:
                raise SystemExit(f"{deployment.name} run {run.id} ended {state.name}: {state.message}")
            return run.id, time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit(f"{deployment.name} run {run.id} not final within 180 s")


def measure(client: Any, stack: Any, deployment: Any, runs: int, pgids: set[int]) -> dict[str, Any]:
    wait_full(stack)
    group0, machine0 = group_cpu_s(pgids), machine_cpu_s()
    walls, ids = [], []
    for _ in range(runs):
        run_id, wall = one_run(client, deployment)
        walls.append(wall)
        ids.append(run_id)
    wait_full(stack)
    group, machine = group_cpu_s(pgids) - group0, machine_cpu_s() - machine0
    for run_id in ids:
        client.delete_flow_run(run_id)
    return {"wall": statistics.median(walls), "group": group / runs, "machine": machine / runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()

    from sandbox.stack.core import Stack
    from sandbox.stack.prefect_server import prefect_client_env

    stack = Stack()
    for key, value in prefect_client_env(stack.home, stack.prefect.api_url).items():
        os.environ.setdefault(key, value)
    from prefect.client.orchestration import get_client

    results: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        with get_client(sync_client=True) as client:
            deployments = [client.read_deployment_by_name(name) for name in DEPLOYMENTS]
            for mode in ("spawn", "fork"):
                pgids = restart_runners(stack, spawn=mode == "spawn")
                for deployment in deployments:
                    results[(mode, deployment.name)] = figures = measure(client, stack, deployment, args.runs, pgids)
                    print(f"{mode:5}  {deployment.name:17}  wall p50 {figures['wall']:5.2f} s  "
                          f"runner CPU {figures['group']:5.2f} s/run  machine CPU {figures['machine']:5.2f} s/run",
                          flush=True)
    finally:
        if os.environ.get("RP_RUNNER_SPAWN"):
            restart_runners(stack, spawn=False)
    print(f"\n{args.runs} runs each, one at a time; load average now {os.getloadavg()[0]:.1f}")
    for name in (d.split("/")[0] for d in DEPLOYMENTS):
        spawn, fork = results[("spawn", name)], results[("fork", name)]
        print(f"{name:17}  runner CPU per run: spawned {spawn['group']:.2f} s, forked {fork['group']:.2f} s "
              f"({fork['group'] / spawn['group']:.2f}x); machine CPU {spawn['machine']:.2f} -> "
              f"{fork['machine']:.2f} s; wall p50 {spawn['wall']:.2f} -> {fork['wall']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
