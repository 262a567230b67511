"""restart-service against the same steps as a shell script, side by side in one invocation.

    uv run python -m sandbox.stack up && RP_PROJECT_DIR=$PWD uv run prefect --no-prompt deploy --all
    uv run python bench/restart_service.py [--runs 3]

Each round restarts both sandbox wallet instances, one at a time, each healthy (its health check
answering for 2 s in a row, the inventory's `healthy_for_s`) before the next — once each way, alternating:
* runbook: `restart-service` (service `wallet`) through its deployment (warm runner); its initiator
  confirmed and its approval given by signed answers the moment each is asked (a person's reading time
  is not the tool's). Includes capturing the default evidence profile to S3 before the restart is
  offered, the plan read twice (before and after the approval), the status checks around each restart.
* shell: what an on-call would type — each instance's last 500 log lines saved over ssh to a local
  directory, then per instance `ssh … sandbox-service restart <i>` and a `curl` loop on its health URL
  until it has answered for 2 s. No evidence in S3, no approval, no record.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEPLOYMENT = "restart-service/restart-service"
ONCALL, LEAD = "oncall-alice", "lead-bob"

SCRIPT = r"""
set -euo pipefail
ssh_host() { ssh -p "$PORT" -i "$KEY" -o UserKnownHostsFile="$KNOWN" -o BatchMode=yes root@127.0.0.1 "$@"; }
out=$(mktemp -d)
for i in wallet wallet-2; do ssh_host "$CTL" logs "$i" --lines 500 > "$out/$i.log"; done
healthy_for() {  # url, seconds in a row
  local since=""
  for _ in $(seq 1 600); do
    if curl -fs -m 2 -o /dev/null "$1"; then
      now=$(date +%s.%N); since=${since:-$now}
      if awk -v a="$now" -v b="$since" -v c="$2" 'BEGIN { exit !(a - b >= c) }'; then return 0; fi
    else since=""; fi
    sleep 0.5
  done
  return 1
}
ssh_host "$CTL" restart wallet >/dev/null; healthy_for http://127.0.0.1:18082/internal/health 2
ssh_host "$CTL" restart wallet-2 >/dev/null; healthy_for http://127.0.0.1:18083/internal/health 2
rm -rf "$out"
"""


def by_runbook(home: Path) -> dict[str, Any]:
    from prefect.deployments import run_deployment

    from remediation.flowkit import resume
    from sandbox.stack import people

    t0 = time.monotonic()
    run = run_deployment(DEPLOYMENT, timeout=0, parameters={
        "incident_id": f"INC-B{time.time_ns() % 10**8}", "initiated_by": ONCALL, "service": "wallet",
        "dry_run": False})
    resume.wait_for_pause(run.id, timeout_s=120, poll_s=0.05)
    asked_who = time.monotonic() - t0
    resume.confirm_initiator(run.id, handle=ONCALL, sign_key=people.key_path(home, ONCALL))
    resume.wait_for_pause(run.id, timeout_s=120, poll_s=0.05)
    asked_ok = time.monotonic() - t0
    resume.answer(run.id, decision="approve", approver=LEAD, reason="bench", sign_key=people.key_path(home, LEAD))
    final = resume.wait_for_final(run.id, timeout_s=300, poll_s=0.05)
    if final.state is None or not final.state.is_completed():
        raise SystemExit(f"run {run.id} ended {final.state}")
    total = time.monotonic() - t0
    return {"total": total, "who": asked_who, "ok": asked_ok, "after_ok": total - asked_ok}


def by_shell(home: Path) -> float:
    env = {**os.environ, "PORT": "12222", "KEY": str(home / "ssh" / "id_ed25519"),
           "KNOWN": str(home / "ssh" / "known_hosts"), "CTL": str(home / "host" / "bin" / "sandbox-service")}
    t0 = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".sh") as script:
        script.write(SCRIPT)
        script.flush()
        subprocess.run(["bash", script.name], env=env, check=True)
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from sandbox.stack.core import Stack
    from sandbox.stack.prefect_server import prefect_client_env

    stack = Stack()
    if not stack.prefect.running():
        raise SystemExit("the stack is not up: uv run python -m sandbox.stack up")
    home, info = stack.home, stack.loaded_info()
    # Prefect reads its settings when first imported: the stack's server, before anything imports it.
    os.environ.update({**prefect_client_env(home, info.prefect_api_url), **info.env()})

    rows: dict[str, list[float]] = {"runbook": [], "shell": [], "who": [], "ok": [], "after_ok": []}
    for _ in range(args.runs):
        timed = by_runbook(home)
        rows["runbook"].append(timed["total"])
        for key in ("who", "ok", "after_ok"):
            rows[key].append(timed[key])
        rows["shell"].append(by_shell(home))

    def med(key: str) -> float:
        return statistics.median(rows[key])

    print(f"restart-service wallet (2 instances, one at a time, 2 s healthy each), {args.runs} round(s), medians")
    print(f"  runbook (deployment, warm runner), run created → Completed   {med('runbook'):6.2f} s")
    print(f"    → asks who started it                                       {med('who'):6.2f} s")
    print(f"    → asks for approval (initiator checked, evidence in S3)     {med('ok') - med('who'):6.2f} s")
    print(f"    approval given → both restarted, healthy, verified          {med('after_ok'):6.2f} s")
    print(f"  shell script (logs saved locally, no S3, approval or record)  {med('shell'):6.2f} s")
    print(f"  ratio runbook / shell                                         {med('runbook') / med('shell'):6.2f}x")
    print(f"  ratio runbook after approval / shell                          {med('after_ok') / med('shell'):6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
