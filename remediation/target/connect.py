"""Build each client from a target's inventory, resolving secrets at the last moment."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from remediation.clients._http import make_http_client
from remediation.clients.admin_api import HttpxAdminApi
from remediation.clients.database import PsycopgDatabase
from remediation.clients.evidence_store import S3EvidenceStore, make_s3_client
from remediation.clients.gateway import HttpxGateway
from remediation.clients.git_repo import CliGitRepo
from remediation.clients.remote_host import ParamikoHost
from remediation.target.inventory import Target

__all__ = ["admin_api", "database", "evidence_store", "gateway", "git_repo", "remote_host"]


def _http(base_url: str, timeout_s: float) -> httpx.Client:
    return make_http_client(base_url, timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)))


@contextmanager
def admin_api(target: Target) -> Iterator[HttpxAdminApi]:
    with _http(str(target.admin_api.url), target.admin_api.timeout_s) as client:
        yield HttpxAdminApi(client, target.admin_api.token.resolve())


@contextmanager
def gateway(target: Target) -> Iterator[HttpxGateway]:
    token = target.gateway.token.resolve() if target.gateway.token else None
    with _http(str(target.gateway.url), target.gateway.timeout_s) as client:
        yield HttpxGateway(client, token)


def database(target: Target, application_name: str = "remediation-pipelines") -> PsycopgDatabase:
    cfg = target.database
    return PsycopgDatabase(
        cfg.dsn.resolve(),
        connect_timeout=cfg.connect_timeout_s,
        statement_timeout_ms=cfg.statement_timeout_ms,
        application_name=application_name,
    )


def evidence_store(target: Target) -> S3EvidenceStore:
    cfg = target.evidence
    client = make_s3_client(
        endpoint_url=str(cfg.endpoint_url) if cfg.endpoint_url else None,
        region=cfg.region,
        access_key=cfg.access_key.resolve() if cfg.access_key else None,
        secret_key=cfg.secret_key.resolve() if cfg.secret_key else None,
    )
    return S3EvidenceStore(client, cfg.bucket, object_lock_days=cfg.object_lock_days,
                           object_lock_mode=cfg.object_lock_mode)


def remote_host(target: Target, name: str | None = None) -> ParamikoHost:
    host = target.hosts[name] if name else target.deploy_host
    return ParamikoHost(
        host.address, host.port, host.user,
        key_path=host.key.resolve().get_secret_value(),
        known_hosts_path=str(host.known_hosts),
        connect_timeout=host.connect_timeout_s,
        command_timeout=host.command_timeout_s,
    )


def git_repo(workdir: str | Path) -> CliGitRepo:
    return CliGitRepo(Path(workdir))
