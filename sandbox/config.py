"""Settings shared by the sandbox services and the stack that starts them.

Every sandbox process reads these from `SANDBOX_*` environment variables, which
the stack sets when it launches them. Defaults are the fixed loopback ports the
committed `runbooks/targets/sandbox.toml` inventory points at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Where the stack keeps its state (databases, keys, git repos, pid files, logs).
#: A fixed absolute path so the committed sandbox inventory can name the deploy
#: host's checkout the way a real inventory names `/srv/...` on a real host.
DEFAULT_HOME = Path("/tmp/rp-sandbox")  # noqa: S108 - the stack refuses a home another user owns

ROLES = ("super_admin", "brand_admin", "viewer")
#: Fault `admin-slow-write` (python -m sandbox.stack fault admin-slow-write on): the admin service
#: commits the change, then holds its answer back as long as this file says — a caller killed or
#: timing out meanwhile never learns it landed. Here, not in sandbox/admin.py: the stack's callers
#: need the name without importing the service's web framework.
SLOW_WRITE_FILE = "faults/admin-slow-write"


#: A setting the wallet cannot start without, from the deploy host's env file (`host/wallet.env`).
WALLET_REQUIRED_SETTING = "WALLET_SETTLEMENT_CURRENCY"


class SandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANDBOX_", extra="ignore")

    home: Path = DEFAULT_HOME
    host: str = "127.0.0.1"

    pg_port: int = 15433
    sshd_port: int = 12222
    s3_port: int = 15000
    #: What every Prefect client talks to: HAProxy in front of the API servers below.
    prefect_port: int = 14200
    prefect_api_ports: tuple[int, ...] = (14201, 14202)
    redis_port: int = 16379
    gateway_port: int = 18080
    admin_port: int = 18081
    wallet_port: int = 18082
    #: The wallet's second instance (blue/green): the gateway spreads requests over both.
    wallet_2_port: int = 18083
    alert_receiver_port: int = 18090
    #: The target's own Redis (seed 003's `redis-cli --bigkeys`): not Prefect's above; password, maxmemory.
    target_redis_port: int = 16380
    target_redis_maxmemory_mb: int = Field(default=16, ge=4)
    #: The target's RabbitMQ, a private node: AMQP, the management API (`/api/queues`), Erlang
    #: distribution, and its own epmd (never the machine's 4369).
    rabbitmq_port: int = 15681
    rabbitmq_management_port: int = 15680
    rabbitmq_dist_port: int = 15682
    rabbitmq_epmd_port: int = 15683

    #: The Prefect server's database. PostgreSQL by default (SQLite locks under concurrent flows);
    #: `sqlite` is the zero-setup fallback, kept under a project-local PREFECT_HOME.
    prefect_db: Literal["postgresql", "sqlite"] = "postgresql"

    #: psycopg conninfo of the platform database (`wallet`), password included.
    dsn: SecretStr = SecretStr("")
    #: JSON object token -> role, e.g. {"abc...": "super_admin"}.
    admin_tokens: SecretStr = SecretStr("{}")
    #: The deploy host's checkout the gateway runs from (servers_v2).
    release_dir: Path | None = None
    #: Seconds a wallet request may wait on a row lock before answering 503.
    wallet_lock_timeout_s: float = Field(default=5.0, gt=0)

    def token_roles(self) -> dict[str, str]:
        raw = json.loads(self.admin_tokens.get_secret_value() or "{}")
        return {str(k): str(v) for k, v in raw.items()}

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    @property
    def wallet_url(self) -> str:
        return self.url(self.wallet_port)

    @property
    def wallet_urls(self) -> tuple[str, ...]:
        """Every wallet instance, in the order the gateway tries them."""
        return self.url(self.wallet_port), self.url(self.wallet_2_port)

    @property
    def admin_url(self) -> str:
        return self.url(self.admin_port)

    @property
    def gateway_url(self) -> str:
        return self.url(self.gateway_port)

    @property
    def rabbitmq_management_url(self) -> str:
        return self.url(self.rabbitmq_management_port)
