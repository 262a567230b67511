"""Build each client from a target's inventory, resolving secrets at the last moment.

The one place clients are built: tasks and flows ask here, never construct their own.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from pydantic import SecretStr

from remediation.clients._http import make_http_client, tls_context
from remediation.clients.admin_api import HttpxAdminApi
from remediation.clients.database import PsycopgDatabase
from remediation.clients.evidence_store import S3Client, S3EvidenceStore, make_s3_client
from remediation.clients.gateway import HttpxGateway
from remediation.clients.git_repo import CliGitRepo
from remediation.clients.prometheus import HttpxPrometheus
from remediation.clients.rabbitmq import HttpxRabbitMq
from remediation.clients.redis import RespRedis
from remediation.clients.remote_host import OutputRedactor, ParamikoHost
from remediation.clients.status_webhook import NoChannel, StatusSender, StatusWebhook
from remediation.target.escalation import Contact
from remediation.target.evidence_profile import RabbitMqCollector, RedisCollector
from remediation.target.inventory import Target, list_targets, load_target

__all__ = [
    "admin_api", "close_shared_hosts", "contact_channel", "database", "evidence_store", "gateway", "git_repo",
    "platform_redis", "prometheus", "rabbitmq", "redis", "remote_host", "shared_remote_host", "status_channel",
]


def _http(base_url: str, timeout_s: float) -> httpx.Client:
    return make_http_client(base_url, timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)))


@contextmanager
def admin_api(target: Target) -> Iterator[HttpxAdminApi]:
    with _http(str(target.admin_api.url), target.admin_api.timeout_s) as client:
        yield HttpxAdminApi(client, target.admin_api.token.resolve())


@contextmanager
def gateway(target: Target, timeout_s: float | None = None) -> Iterator[HttpxGateway]:
    token = target.gateway.token.resolve() if target.gateway.token else None
    with _http(str(target.gateway.url), timeout_s or target.gateway.timeout_s) as client:
        yield HttpxGateway(client, token)


def database(
    target: Target, application_name: str = "remediation-pipelines", *, timeout_s: float | None = None,
    read_only: bool = False,
) -> PsycopgDatabase:
    """The platform database; `timeout_s` caps connecting and each statement (an evidence collector's
    deadline), `read_only` opens read-only transactions."""
    cfg = target.database
    return PsycopgDatabase(
        cfg.dsn.resolve(),
        connect_timeout=min(cfg.connect_timeout_s, max(1, int(timeout_s))) if timeout_s else cfg.connect_timeout_s,
        statement_timeout_ms=int(timeout_s * 1000) if timeout_s else cfg.statement_timeout_ms,
        application_name=application_name,
        read_only=read_only,
    )


@contextmanager
def prometheus(target: Target, timeout_s: float = 10.0) -> Iterator[HttpxPrometheus]:
    assert target.prometheus is not None, "the target names no Prometheus"
    with _http(str(target.prometheus.url), timeout_s) as client:
        yield HttpxPrometheus(client)


@contextmanager
def rabbitmq(cfg: RabbitMqCollector, transport: httpx.BaseTransport | None = None) -> Iterator[HttpxRabbitMq]:
    with make_http_client(str(cfg.url), timeout=httpx.Timeout(cfg.timeout_s), transport=transport) as client:
        yield HttpxRabbitMq(client, cfg.user, cfg.password.resolve())


def evidence_store(target: Target, *, best_effort: bool = False) -> S3EvidenceStore:
    """The target's evidence bucket. `best_effort`: one attempt per request, for work that something
    else redoes when it fails (early upload): S3 down then costs nothing, not botocore's backoff."""
    cfg = target.evidence
    access = cfg.access_key.resolve().get_secret_value() if cfg.access_key else None
    secret = cfg.secret_key.resolve().get_secret_value() if cfg.secret_key else None
    client = _s3_client(str(cfg.endpoint_url) if cfg.endpoint_url else None, cfg.region, access, secret,
                        1 if best_effort else 5)
    return S3EvidenceStore(client, cfg.bucket, object_lock_days=cfg.object_lock_days,
                           object_lock_mode=cfg.object_lock_mode)


log = logging.getLogger(__name__)


def warm_up() -> None:
    """Build the S3 clients for each declared target's evidence and the HTTP clients' TLS context (a
    warm runner's child calls this before its run comes), so the run does not wait for them."""
    tls_context()
    for name in list_targets():
        try:
            target = load_target(name)
            evidence_store(target)
            evidence_store(target, best_effort=True)
        except Exception as exc:  # a target this replica cannot reach is its run's to report
            log.debug("warm-up: no evidence store for %s: %s", name, exc)


@functools.lru_cache(maxsize=8)
def _s3_client(endpoint_url: str | None, region: str, access: str | None, secret: str | None,
               max_attempts: int) -> S3Client:
    # One client per endpoint and credentials, per process: building one costs 0.1 s of CPU (a capture
    # built two), and boto3 clients are safe to share between threads. Rotated keys make a new one.
    return make_s3_client(endpoint_url=endpoint_url, region=region,
                          access_key=SecretStr(access) if access is not None else None,
                          secret_key=SecretStr(secret) if secret is not None else None, max_attempts=max_attempts)


def remote_host(target: Target, name: str | None = None, *, redactor: OutputRedactor | None = None) -> ParamikoHost:
    """`redactor` (the target's, `for_target`) redacts what commands print before anyone sees it:
    the stored output, the exception a failed command raises, the lines streamed to a log."""
    host = target.hosts[name] if name else target.deploy_host
    return ParamikoHost(
        host.address, host.port, host.user,
        key_path=host.key.resolve().get_secret_value(),
        known_hosts_path=str(host.known_hosts),
        connect_timeout=host.connect_timeout_s,
        command_timeout=host.command_timeout_s,
        redactor=redactor,
    )


def git_repo(workdir: str | Path, redact: Callable[[str], str] | None = None) -> CliGitRepo:
    return CliGitRepo(Path(workdir), redact=redact)


def redis(cfg: RedisCollector) -> RespRedis:
    return RespRedis(cfg.address, cfg.port, cfg.timeout_s)


def platform_redis(target: Target) -> RespRedis:
    """The target's cache (`[redis]`), authenticated."""
    cfg = target.redis
    assert cfg is not None, "the target names no Redis"
    client = RespRedis(cfg.address, cfg.port, cfg.timeout_s)
    if cfg.password is not None:
        try:
            client.call("AUTH", cfg.password.resolve().get_secret_value())
        except Exception:
            client.close()
            raise
    return client


def contact_channel(contact: Contact) -> StatusSender:
    """An escalation contact's webhook (Slack incoming-webhook shape, as the status channel)."""
    return StatusWebhook(contact.webhook.resolve(), httpx.Client(timeout=10.0, verify=tls_context()))


def status_channel(target: Target) -> StatusSender:
    cfg = target.notifications
    if cfg is None:
        return NoChannel()
    return StatusWebhook(cfg.status_webhook.resolve(), httpx.Client(timeout=cfg.timeout_s, verify=tls_context()))


# --- one SSH connection per host, shared by a capture's concurrent collectors ----------------------

#: Keep little of each stream in memory: evidence goes to disk line by line, not via CommandResult.
_SHARED_OUTPUT_CAP = 64 * 1024
#: Channels one shared connection carries at once (OpenSSH's MaxSessions defaults to 10).
_CHANNELS_PER_HOST = 8


class _SharedHost:
    def __init__(self, host: ParamikoHost) -> None:
        self.host = host
        self.connecting = threading.Lock()
        self.channels = threading.BoundedSemaphore(_CHANNELS_PER_HOST)


_shared: dict[tuple[str, int, str, str, str], _SharedHost] = {}
_shared_lock = threading.Lock()


@contextmanager
def shared_remote_host(target: Target, name: str) -> Iterator[ParamikoHost]:
    """The host's one SSH connection for this process's collectors, opened by the first to need it.

    A capture runs its host collectors concurrently; each would pay its own handshake (key
    exchange and auth are CPU-heavy in paramiko). They share one connection, one channel
    each. A connection found dead is reopened; `close_shared_hosts()` ends them all.

    No redactor here: collectors stream output into an `EvidenceFile`, whose own redaction stream
    sees the command's whole output (redacting twice would halve a large log's throughput), and
    `collect` redacts a failure's message.
    """
    cfg = target.hosts[name]
    key_path = cfg.key.resolve().get_secret_value()
    ident = (cfg.address, cfg.port, cfg.user, key_path, str(cfg.known_hosts))
    with _shared_lock:
        shared = _shared.get(ident)
        if shared is None:
            shared = _shared[ident] = _SharedHost(ParamikoHost(
                cfg.address, cfg.port, cfg.user, key_path=key_path, known_hosts_path=str(cfg.known_hosts),
                connect_timeout=cfg.connect_timeout_s, command_timeout=cfg.command_timeout_s,
                output_cap_bytes=_SHARED_OUTPUT_CAP,
            ))
    with shared.channels:
        with shared.connecting:
            shared.host.connect()  # no-op while the connection is up
        yield shared.host


def close_shared_hosts() -> None:
    """Close every shared SSH connection (end of a capture run)."""
    with _shared_lock:
        hosts = list(_shared.values())
        _shared.clear()
    for shared in hosts:
        shared.host.close()
