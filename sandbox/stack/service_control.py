"""The deploy host's service manager for the sandbox's processes: `restart`, `status`, `logs` one instance.

`python -m sandbox.stack.service_control restart wallet-2` is what `docker compose restart <svc>`,
`systemctl restart <unit>` or `kubectl rollout restart` is on a real host: it returns once the
process is started, not once it is healthy (restart-service waits for the health check itself).
`status` prints one line that changes when, and only when, the instance restarts (its pid and start
time), as `systemctl show -p MainPID,ExecMainStartTimestamp` would.

The two process faults restart-service is drilled on live here too:
- crashloop: the wallet's required setting is taken out of its env file and the instance restarted;
  it exits at every start until the setting is restored (seed 002 §3.1, "Missing env var");
- hung: the instance is stopped with SIGSTOP; its port still accepts, nothing answers.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sandbox.stack.processes import process_start, read_pid, wait_until
from sandbox.stack.services import SERVICES, ServiceRunner, runner_from_home

if TYPE_CHECKING:
    from sandbox.stack.core import Stack

__all__ = ["crashloop", "hang", "main", "status_line"]

#: A wedged process ignores SIGTERM; as docker and systemd do, it is killed after this grace.
STOP_GRACE_S = 5.0


def _runner(stack: Stack) -> ServiceRunner:
    return runner_from_home(stack.settings)


def status_line(runner: ServiceRunner, name: str) -> str:
    pid = read_pid(runner.pid_file(name))
    started = process_start(pid) if pid is not None and runner.running(name) else None
    if pid is None or started is None:
        return f"{name} stopped"
    return f"{name} running pid={pid} started={datetime.fromtimestamp(started, UTC).isoformat(timespec='milliseconds')}"


def restart(runner: ServiceRunner, name: str, *, wait: bool = False) -> str:
    # A hung process never acts on its SIGTERM: it is killed when the grace runs out.
    runner.stop(name, grace_s=STOP_GRACE_S)
    runner.start(name, wait=wait)
    return status_line(runner, name)


def crashloop(stack: Stack, name: str, on: bool) -> str:
    """Take the wallet's required setting out of its env file and restart `name` (on); put it back (off).

    Off restores the setting only: the instance stays down until someone restarts it.
    """
    stack.host.break_wallet_env(on)
    runner = _runner(stack)
    if on:
        restart(runner, name)
        wait_until(lambda: status_line(runner, name).endswith("stopped"), timeout_s=20,
                   what=f"{name} exiting at start", log_file=runner.logs / f"{name}.log")
    return status_line(runner, name)


def hang(stack: Stack, name: str, on: bool) -> str:
    """SIGSTOP (on) or SIGCONT (off) the instance's process group."""
    runner = _runner(stack)
    pid = read_pid(runner.pid_file(name))
    if pid is None or not runner.running(name):
        raise SystemExit(f"{name} is not running")
    os.killpg(pid, signal.SIGSTOP if on else signal.SIGCONT)
    return status_line(runner, name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.stack.service_control", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("restart", "status", "logs"))
    parser.add_argument("instance", choices=SERVICES)
    parser.add_argument("--lines", type=int, default=200, help="logs: how many of the last lines")
    parser.add_argument("--wait", action="store_true",
                        help="restart: return once the instance answers HTTP (a rebuild's `up --wait`)")
    args = parser.parse_args(argv)
    runner = runner_from_home()
    if args.action == "restart":
        print(restart(runner, args.instance, wait=args.wait))
    elif args.action == "status":
        print(status_line(runner, args.instance))
    else:
        log = runner.logs / f"{args.instance}.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        print("\n".join(lines[-args.lines:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
