"""The stack's Prefect server, in Prefect's own high-availability shape.

On PostgreSQL (the default) it is what a production install runs, on loopback:

    UI, CLI, workers, flows ──> HAProxy :prefect_port ──> API server 1 (--no-services)
                                                     └──> API server 2 (--no-services)
                                 one services process (scheduler, late runs, pause expirations, ...)
                                 Redis: event messaging and ordering, concurrency leases, docket
                                 PostgreSQL: the database all of them share

Leases and events live in Redis, so a restart of any API server (or of all of them) keeps
every run paused for approval and every lock it holds. On SQLite (the zero-setup fallback)
it is one `prefect server start` with everything in memory, as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from sandbox.stack.balancer import LoadBalancer
from sandbox.stack.processes import is_running, start_detached, stop, wait_until
from sandbox.stack.redis import RedisServer

__all__ = ["PrefectServer", "prefect_client_env"]


def prefect_client_env(home: Path, api_url: str) -> dict[str, str]:
    """Settings for anything that talks to the local server: CLI, worker, flows, tests."""
    return {
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Crash-safety: results persisted so a re-run skips completed side effects.
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "prefect" / "results"),
        # An incident tool cannot wait 10-15 s per poll.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
    }


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class _ServerProcess:
    """One `prefect server ...` process: pid file, log, the environment it was started with."""

    def __init__(self, stack_home: Path, name: str, argv: Sequence[str], port: int | None = None) -> None:
        self.name, self.argv, self.port = name, list(argv), port
        self.pid_file = stack_home / "run" / f"{name}.pid"
        self.log_file = stack_home / "logs" / f"{name}.log"
        self.api_url = f"http://127.0.0.1:{port}/api" if port else ""

    def running(self) -> bool:
        return is_running(self.pid_file) and (not self.port or _healthy(self.api_url))

    def start(self, env: dict[str, str]) -> None:
        if not is_running(self.pid_file):
            start_detached(self.argv, pid_file=self.pid_file, log_file=self.log_file, env=env)

    def wait(self) -> None:
        wait_until(lambda: _healthy(self.api_url), timeout_s=180, what=f"Prefect {self.name}",
                   log_file=self.log_file)

    def stop(self) -> bool:
        return stop(self.pid_file, grace_s=15)


class PrefectServer:
    """All of the stack's Prefect server processes, started, awaited and stopped as one."""

    def __init__(self, prefect_home: Path, port: int, db_url: str | None, stack_home: Path, *,
                 api_ports: Sequence[int] = (), redis_port: int | None = None) -> None:
        self.prefect_home = prefect_home
        self.port = port
        #: None: Prefect's own SQLite file under prefect_home, one process, no Redis.
        self.db_url = db_url
        #: What every client talks to: the balancer in the HA shape, the one server otherwise.
        self.api_url = f"http://127.0.0.1:{port}/api"
        prefect = str(Path(sys.executable).with_name("prefect"))
        self.ha = bool(db_url and api_ports and redis_port)
        if self.ha:
            assert redis_port is not None
            self.redis: RedisServer | None = RedisServer(stack_home, redis_port)
            self.apis = [
                _ServerProcess(stack_home, f"prefect-api-{n}",
                               [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(p),
                                "--no-services"], p)
                for n, p in enumerate(api_ports, 1)
            ]
            self.services: _ServerProcess | None = _ServerProcess(
                stack_home, "prefect-services", [prefect, "server", "services", "start"])
            self.balancer: LoadBalancer | None = LoadBalancer(stack_home, port, list(api_ports))
        else:
            self.redis, self.services, self.balancer = None, None, None
            self.apis = [_ServerProcess(stack_home, "prefect-server",
                                        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                        port)]

    # --- environment --------------------------------------------------------------------------
    def server_env(self, *, migrate: bool = True) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PREFECT_API_URL", None)
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        if self.db_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.db_url
        env.update({
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            # The UI in the browser calls the API through the balancer, whichever server served the page.
            "PREFECT_UI_API_URL": self.api_url,
            # A run waiting for a target lock asks again at least every 2 s (the default lets the server
            # send it away for up to 30 s, so a slot freed by a crashed holder's lapsed lease sat unused).
            "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
        })
        if self.redis is not None:
            redis = f"redis://127.0.0.1:{self.redis.port}"
            env.update({
                # Migrations run once, by the first API server; the others would race it.
                "PREFECT_API_DATABASE_MIGRATE_ON_START": "true" if migrate else "false",
                "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
                "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
                "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
                "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
                "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
                "PREFECT_REDIS_MESSAGING_PORT": str(self.redis.port),
                "PREFECT_REDIS_MESSAGING_DB": "0",
                "PREFECT_SERVER_DOCKET_URL": f"{redis}/1",
            })
        return env

    # --- lifecycle ----------------------------------------------------------------------------
    def healthy(self) -> bool:
        return _healthy(self.api_url)

    def running(self) -> bool:
        return all(self.status().values())

    def status(self) -> dict[str, bool]:
        """Each process of the server, up or not (for `stack status`)."""
        parts: dict[str, bool] = {}
        if self.redis is not None:
            parts["redis"] = self.redis.running()
        for api in self.apis:
            parts[api.name] = api.running()
        if self.services is not None:
            parts["prefect-services"] = is_running(self.services.pid_file)
        if self.balancer is not None:
            parts["prefect-balancer"] = self.balancer.running() and self.healthy()
        return parts

    def start(self, *, wait: bool = True) -> None:
        """Start what can start now; `wait()` starts the rest once the schema is migrated."""
        if self.redis is not None:
            self.redis.start()
        self.apis[0].start(self.server_env(migrate=True))
        if self.balancer is not None:
            self.balancer.start()
        if wait:
            self.wait()

    def wait(self) -> None:
        self.apis[0].wait()
        for api in self.apis[1:]:
            api.start(self.server_env(migrate=False))
        if self.services is not None:
            # At INFO the triggers and actions services log each event an automation counted and each
            # action taken, so a fault drill that fails in CI can say why (tests/faults/timing.py).
            self.services.start({**self.server_env(migrate=False), "PREFECT_SERVER_LOGGING_LEVEL": "INFO"})
        for api in self.apis[1:]:
            api.wait()
        wait_until(self.healthy, timeout_s=60, what="Prefect API through the balancer",
                   log_file=self.balancer.log_file if self.balancer else None)

    def stop(self) -> bool:
        stopped = False
        for part in [*self.apis, self.services, self.balancer, self.redis]:
            if part is not None and part.stop():
                stopped = True
        return stopped
