"""The sandbox's own services (admin, two wallet instances, gateway) as tracked background processes.

Each service reads the deploy host's env file (`host/<service>.env`, seed 002's `/opt/backend/.env`)
as compose's `env_file` would: the crashloop fault removes a setting the wallet needs at start.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx

from sandbox.config import ROLES, SandboxSettings
from sandbox.stack.info import StackInfo
from sandbox.stack.processes import is_running, start_detached, stop, wait_until

__all__ = ["SERVICES", "ServiceRunner"]

SERVICES = ("admin", "wallet", "wallet-2", "gateway")
#: Instances of one service run the same module on their own port.
MODULES = {"wallet-2": "wallet"}


def env_file(home: Path, name: str) -> Path:
    return home / "host" / f"{MODULES.get(name, name)}.env"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as compose's env_file reads them (no quoting, no expansion)."""
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def runner_from_home(settings: SandboxSettings | None = None) -> ServiceRunner:
    """The runner of a stack that is up, from its state files alone: the deploy host's service script
    needs no import of the whole stack (its start-up is on restart-service's clock)."""
    s = settings or SandboxSettings()
    stored = json.loads((s.home / "secrets.json").read_text())
    info = StackInfo.load(s.home / "stack.json")
    tokens = {role: stored[f"token_{role}"] for role in ROLES}
    return ServiceRunner(s, info.platform_dsn.get_secret_value(), tokens, s.home / "host" / "servers_v2")


class ServiceRunner:
    def __init__(self, settings: SandboxSettings, dsn: str, tokens: dict[str, str], release_dir: Path) -> None:
        self.settings = settings
        self.dsn = dsn
        self.tokens = tokens
        self.release_dir = release_dir
        self.run = settings.home / "run"
        self.logs = settings.home / "logs"

    def port(self, name: str) -> int:
        return int(getattr(self.settings, f"{name.replace('-', '_')}_port"))

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def env(self, name: str | None = None) -> dict[str, str]:
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
        if name is not None:
            env.update(read_env_file(env_file(self.settings.home, name)))
            if MODULES.get(name) == "wallet":
                env["SANDBOX_WALLET_PORT"] = str(self.port(name))
        return env

    def healthy(self, name: str) -> bool:
        path = "/internal/health" if MODULES.get(name, name) == "wallet" else "/health"
        try:
            # Any HTTP answer means the process serves; a bad release's 500 is still "up".
            httpx.get(f"{self.settings.url(self.port(name))}{path}", timeout=1.0)
            return True
        except httpx.HTTPError:
            return False

    def running(self, name: str) -> bool:
        return is_running(self.pid_file(name))

    def start(self, name: str, *, wait: bool = True) -> None:
        if self.running(name) and self.healthy(name):
            return
        stop(self.pid_file(name))
        log = self.logs / f"{name}.log"
        start_detached(
            [sys.executable, "-m", f"sandbox.{MODULES.get(name, name)}"],
            pid_file=self.pid_file(name), log_file=log, env=self.env(name),
            cwd=self.release_dir if name == "gateway" else None,
        )
        if wait:
            wait_until(lambda: self.healthy(name), timeout_s=30, what=f"sandbox {name}", log_file=log)

    def stop(self, name: str, grace_s: float = 10.0) -> bool:
        return stop(self.pid_file(name), grace_s=grace_s)

    def restart(self, name: str, *, wait: bool = True) -> None:
        self.stop(name)
        self.start(name, wait=wait)
