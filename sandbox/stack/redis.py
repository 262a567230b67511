"""Redis on loopback for Prefect's HA shape: messaging, event ordering, concurrency leases, docket.

Append-only file on (fsync every second), so leases and queued events survive a Redis restart as
they would on a managed Redis with persistence.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sandbox.stack.processes import is_running, port_open, start_detached, stop, wait_until

__all__ = ["RedisServer"]


class RedisServer:
    def __init__(self, home: Path, port: int) -> None:
        self.port = port
        self.data_dir = home / "redis"
        self.pid_file = home / "run" / "redis.pid"
        self.log_file = home / "logs" / "redis.log"
        self.url = f"redis://127.0.0.1:{port}/0"

    def running(self) -> bool:
        return is_running(self.pid_file) and port_open("127.0.0.1", self.port)

    def start(self) -> None:
        if self.running():
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server; scripts/bootstrap)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        start_detached(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--protected-mode", "yes"],
            pid_file=self.pid_file, log_file=self.log_file,
        )
        wait_until(lambda: port_open("127.0.0.1", self.port), timeout_s=30, what="redis", log_file=self.log_file)

    def stop(self) -> bool:
        return stop(self.pid_file)
