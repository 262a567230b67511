"""The sandbox's own services (admin, wallet, gateway) as tracked background processes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx

from sandbox.config import SandboxSettings
from sandbox.stack.processes import is_running, start_detached, stop, wait_until

__all__ = ["SERVICES", "ServiceRunner"]

SERVICES = ("admin", "wallet", "gateway")


class ServiceRunner:
    def __init__(self, settings: SandboxSettings, dsn: str, tokens: dict[str, str], release_dir: Path) -> None:
        self.settings = settings
        self.dsn = dsn
        self.tokens = tokens
        self.release_dir = release_dir
        self.run = settings.home / "run"
        self.logs = settings.home / "logs"

    def port(self, name: str) -> int:
        return int(getattr(self.settings, f"{name}_port"))

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        s = self.settings
        env.update({
            "SANDBOX_HOME": str(s.home),
            "SANDBOX_HOST": s.host,
            "SANDBOX_DSN": self.dsn,
            "SANDBOX_ADMIN_TOKENS": json.dumps({tok: role for role, tok in self.tokens.items()}),
            "SANDBOX_RELEASE_DIR": str(self.release_dir),
            "SANDBOX_PG_PORT": str(s.pg_port),
            "SANDBOX_GATEWAY_PORT": str(s.gateway_port),
            "SANDBOX_ADMIN_PORT": str(s.admin_port),
            "SANDBOX_WALLET_PORT": str(s.wallet_port),
            "SANDBOX_WALLET_LOCK_TIMEOUT_S": str(s.wallet_lock_timeout_s),
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def healthy(self, name: str) -> bool:
        path = "/internal/health" if name == "wallet" else "/health"
        try:
            # Any HTTP answer means the process serves; a bad release's 500 is still "up".
            httpx.get(f"{self.settings.url(self.port(name))}{path}", timeout=1.0)
            return True
        except httpx.HTTPError:
            return False

    def running(self, name: str) -> bool:
        return is_running(self.pid_file(name))

    def start(self, name: str) -> None:
        if self.running(name) and self.healthy(name):
            return
        stop(self.pid_file(name))
        log = self.logs / f"{name}.log"
        start_detached(
            [sys.executable, "-m", f"sandbox.{name}"],
            pid_file=self.pid_file(name), log_file=log, env=self.env(),
            cwd=self.release_dir if name == "gateway" else None,
        )
        wait_until(lambda: self.healthy(name), timeout_s=30, what=f"sandbox {name}", log_file=log)

    def stop(self, name: str) -> bool:
        return stop(self.pid_file(name))

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)
