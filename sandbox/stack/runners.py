"""The project's own long-running processes on the stack: warm-runner replicas and the alert receiver."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from sandbox.stack.prefect_server import prefect_client_env
from sandbox.stack.processes import is_running, port_open, read_pid, start_detached, stop, wait_until

__all__ = ["FAST_POOL", "WORK_POOL", "AlertReceiver", "WarmRunnerProcess"]

#: Every runbook but capture-evidence: served by warm-runner replicas (`remediation.runner`).
WORK_POOL = "remediation"
#: capture-evidence alone, started by alerts: its own replica, so a storm of captures never queues
#: behind runs paused for approval.
FAST_POOL = "remediation-fast"
#: Modules every warm child imports before its run (the capture collectors' client libraries).
#: The last ones are what Prefect's engine imports lazily during a first run (found by diffing
#: sys.modules around one capture run).
WARM_PRELOAD = ("boto3", "botocore.session", "boto3.s3.transfer", "paramiko", "psycopg", "httpx",
                "prefect.task_engine", "prefect.task_runners", "prefect.artifacts", "prefect.results",
                "fastapi", "fastapi.encoders", "graphviz", "opentelemetry.metrics", "anyio", "encodings.idna",
                "prefect_aws.s3")
WARM_CALLS = ("remediation.clients.evidence_store:warm_up", "remediation.target.connect:warm_up",
              "flows.capture_evidence:prepare_collector_tasks", "remediation.flowkit.engine:warm_result_storage")


class _ProjectProcess:
    """A long-running process of this project talking to the stack's Prefect server: pid-tracked, logged."""

    def __init__(self, home: Path, api_url: str, project_dir: Path, name: str) -> None:
        self.home, self.api_url, self.project_dir = home, api_url, project_dir
        self.pid_file = home / "run" / f"{name}.pid"
        self.log_file = home / "logs" / f"{name}.log"

    def running(self) -> bool:
        return is_running(self.pid_file)

    def _launch(self, argv: list[str], extra_env: Mapping[str, str]) -> bool:
        """Start `argv` unless already running; False when it was."""
        if self.running():
            return False
        env = {**os.environ, **prefect_client_env(self.home, self.api_url), **extra_env}
        start_detached(argv, pid_file=self.pid_file, log_file=self.log_file, env=env, cwd=self.project_dir)
        return True

    def stop(self) -> bool:
        return stop(self.pid_file, grace_s=15)


class WarmRunnerProcess(_ProjectProcess):
    """`python -m remediation.runner serve` on one pool: warm interpreters, runs found via events.

    Replicas of one pool are separate processes with their own names (and, on real hosts, their own
    machines); the server's Pending arbitration makes each run execute once among them.
    """

    def __init__(self, home: Path, api_url: str, project_dir: Path, *, warm: int = 2, pool: str = FAST_POOL,
                 name: str = "warm-runner", limit: int = 8) -> None:
        super().__init__(home, api_url, project_dir, name)
        self.warm, self.pool, self.name, self.limit = warm, pool, name, limit
        #: {"idle", "warming", "running", "pids"}: tests and benches wait for idle >= 1.
        self.status_file = home / f"{name}.json"

    def start(self, extra_env: Mapping[str, str]) -> None:
        # Its own PREFECT_HOME, as on its own host: nothing but the API and S3 is shared.
        host_home = self.home / "hosts" / self.name / "prefect"
        host_home.mkdir(parents=True, exist_ok=True)  # Prefect makes only the last level
        extra_env = {**extra_env, "PREFECT_HOME": str(host_home),
                     "PREFECT_LOCAL_STORAGE_PATH": str(host_home / "results")}
        self._launch(
            [sys.executable, "-m", "remediation.runner", "serve", "--pool", self.pool, "--warm", str(self.warm),
             "--limit", str(self.limit), "--poll-s", "10", "--name", f"rp-local-{self.name}",
             "--status-file", str(self.status_file), "--preload", *WARM_PRELOAD, "--warm-call", *WARM_CALLS],
            extra_env,
        )

    def pid_of(self, flow_run_id: object) -> int | None:
        """The warm child executing this run, if this replica runs it."""
        import json

        try:
            return json.loads(self.status_file.read_text()).get("pids", {}).get(str(flow_run_id))
        except (OSError, ValueError):
            return None

    def wait_warm(self, timeout_s: float = 120) -> None:
        """Block until the runner has a warm interpreter idle (after `up`, children take a few seconds)."""
        import json

        def warm() -> bool:
            try:
                data = json.loads(self.status_file.read_text())
                return bool(data["idle"] >= 1 and data["pid"] == read_pid(self.pid_file)) and self.running()
            except (OSError, ValueError, KeyError):
                return False

        wait_until(warm, timeout_s=timeout_s, what="warm runner idle interpreter", log_file=self.log_file)

    def stop(self) -> bool:
        """Stop the runner and its warm children (they share its process group); verify the group is gone."""
        pgid = read_pid(self.pid_file)
        stopped = stop(self.pid_file, grace_s=15)
        if pgid is not None and _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            wait_until(lambda: not _group_alive(pgid), timeout_s=5, what=f"warm runner children (group {pgid}) gone")
        return stopped


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the process group?"""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pgid, os.WNOHANG)  # the leader may be our own unreaped child
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # /proc/<pid>/stat: pid (comm) state ppid pgrp ... ; comm may hold spaces, so split after ')'.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class AlertReceiver(_ProjectProcess):
    """`python -m remediation.alerts serve` against the stack's Prefect server."""

    def __init__(self, home: Path, api_url: str, project_dir: Path, port: int) -> None:
        super().__init__(home, api_url, project_dir, "alert-receiver")
        self.port = port

    def start(self, extra_env: Mapping[str, str]) -> None:
        journal = self.home / "alerts" / "intake.sqlite"
        if self._launch([sys.executable, "-m", "remediation.alerts", "serve", "--port", str(self.port),
                         "--journal", str(journal)], extra_env):
            wait_until(lambda: port_open("127.0.0.1", self.port), timeout_s=60, what="alert receiver",
                       log_file=self.log_file)
