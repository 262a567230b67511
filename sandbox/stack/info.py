"""What a running stack tells its users: addresses, credentials, file paths.

Written by `python -m sandbox.stack up` to `<home>/stack.json` (mode 0600) and
read back by tests, the demo and benchmarks. Credentials here are throwaway
sandbox values generated on first start; a real target's never pass through here.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from sandbox.stack import people


class StackInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    home: Path
    host: str = "127.0.0.1"

    # PostgreSQL: one cluster, databases `wallet` (the platform) and `prefect`.
    pg_port: int
    platform_dsn: SecretStr   # role `wallet_app`, owner of the platform schema
    superuser_dsn: SecretStr  # for tests that reset state or kill backends
    prefect_db_url: SecretStr  # postgresql+asyncpg://… for the Prefect server

    # Sandbox services
    gateway_url: str
    admin_url: str
    wallet_url: str
    admin_tokens: dict[str, SecretStr]  # role -> bearer token

    # Deploy host over OpenSSH
    ssh_port: int
    ssh_user: str
    ssh_client_key: Path      # private key the runbooks use
    ssh_known_hosts: Path     # holds the sandbox sshd's host key only
    host_checkout: Path       # servers_v2 on the deploy host
    git_remote: Path          # bare repo, the checkout's `origin`

    # S3 (moto server)
    s3_endpoint: str
    s3_bucket: str
    s3_region: str
    s3_access_key: SecretStr
    s3_secret_key: SecretStr

    # Prefect
    prefect_api_url: str

    # People's authenticator secrets (handle -> TOTP base32), as the inventory's references name them
    totp_secrets: dict[str, SecretStr] = {}
    # Signs audit exports' chain heads (the inventory's audit.signing_key)
    audit_signing_key: SecretStr | None = None

    # The target's Redis (its `requirepass`) and RabbitMQ (management API; the inventory's read-only
    # `monitoring` user, and the administrator the stack seeds queues with)
    target_redis_url: str = ""  # redis://127.0.0.1:16380/0, no password in it
    target_redis_password: SecretStr | None = None
    rabbitmq_url: str = ""
    rabbitmq_user: str = ""
    rabbitmq_password: SecretStr | None = None
    rabbitmq_admin_password: SecretStr | None = None

    def env(self) -> dict[str, str]:
        """Environment variables the committed sandbox inventory's secret references name."""
        return {
            "RP_SANDBOX_ADMIN_TOKEN": self.admin_tokens["super_admin"].get_secret_value(),
            "RP_SANDBOX_DB_DSN": self.platform_dsn.get_secret_value(),
            "RP_SANDBOX_S3_ACCESS_KEY": self.s3_access_key.get_secret_value(),
            "RP_SANDBOX_S3_SECRET_KEY": self.s3_secret_key.get_secret_value(),
            "RP_SANDBOX_STATUS_WEBHOOK": f"{self.admin_url}/hooks/status",
            **{people.env_name(h): v.get_secret_value() for h, v in self.totp_secrets.items()},
            **({"RP_SANDBOX_AUDIT_SIGNING_KEY": self.audit_signing_key.get_secret_value()}
               if self.audit_signing_key else {}),
            **({"RP_SANDBOX_REDIS_PASSWORD": self.target_redis_password.get_secret_value()}
               if self.target_redis_password else {}),
            **({"RP_SANDBOX_RABBITMQ_PASSWORD": self.rabbitmq_password.get_secret_value()}
               if self.rabbitmq_password else {}),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def dump(self, path: Path) -> None:
        data = json.loads(self.model_dump_json())
        for name in ("platform_dsn", "superuser_dsn", "prefect_db_url", "s3_access_key", "s3_secret_key"):
            data[name] = getattr(self, name).get_secret_value()
        data["admin_tokens"] = {k: v.get_secret_value() for k, v in self.admin_tokens.items()}
        data["totp_secrets"] = {k: v.get_secret_value() for k, v in self.totp_secrets.items()}
        for name in ("audit_signing_key", "target_redis_password", "rabbitmq_password", "rabbitmq_admin_password"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value.get_secret_value()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> StackInfo:
        return cls.model_validate_json(path.read_text())
