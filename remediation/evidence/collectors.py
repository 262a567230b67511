"""The collectors kit: what capture-evidence plans from the inventory, and the wrapper each collector runs in.

Every collector writes one bundle file through redaction (`EvidenceFile`) and returns
its manifest record. On failure it still closes (and hashes) what it wrote, then raises
an error whose message is already redacted — Prefect logs exception messages, so an
unredacted stderr tail must never reach `raise` — carrying the record for the manifest.
The collectors themselves are tasks, grouped by the system they read (tasks/host.py,
tasks/database/activity.py, tasks/gateway.py, tasks/prometheus.py, tasks/redis.py,
tasks/rabbitmq.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from remediation.errors import BadInputError, CommandFailedError, PermanentError, RetryableError
from remediation.evidence.bundle import CollectorRecord, EvidenceFile, now
from remediation.evidence.pg_queries import PG_QUERIES
from remediation.evidence.scrub import for_target
from remediation.target.evidence_profile import EvidenceProfile
from remediation.target.inventory import Target

__all__ = [
    "GRACE_S",
    "CollectorFailedError",
    "CollectorRetryableError",
    "CollectorSpec",
    "collect",
    "plan_collectors",
    "service_log_argv",
]

_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
#: The task's own timeout backs up the client-level one (SSH, statement, HTTP), which fires first.
GRACE_S = 15.0


class _BackstopTimeoutNotice(logging.Filter):
    """Drop Prefect's per-task warning that a threaded task's timeout cannot interrupt blocking I/O.

    True, and why every collector enforces its deadline in its client (SSH command timeout,
    statement_timeout, HTTP timeout); the task timeout is only a backstop. Twelve copies of
    the warning per run would bury the lines the on-call needs.
    """

    # Prefect's run-logger adapter hands the logger a message already formatted ("Timeout of 45.0 ...").
    _NOTICE = re.compile(r"Timeout of (%s|[0-9.]+) seconds configured for this task, but the task is running "
                         r"in a worker thread")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._NOTICE.match(str(record.msg))


logging.getLogger("prefect.task_runs").addFilter(_BackstopTimeoutNotice())


class CollectorSpec(BaseModel):
    """One planned collector: what it reads and where it writes. Built from the inventory only."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    file: str | None
    what: str
    timeout_s: float
    configured: bool = True
    host: str | None = None
    argv: list[str] = []
    params: dict[str, Any] = {}


class _CollectorError(Exception):
    def __init__(self, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.record = record

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.record))


class CollectorFailedError(_CollectorError, PermanentError):
    """The collector ran and failed in a way a retry cannot fix; `record` is its manifest entry."""


class CollectorRetryableError(_CollectorError, RetryableError):
    """A timeout or dropped connection: worth another try."""


def collect(
    spec: CollectorSpec, out_dir: str, target: Target, profile: EvidenceProfile,
    body: Callable[[EvidenceFile], int | None],
) -> CollectorRecord:
    """Run `body` against the collector's file; return its record, or raise with a redacted message."""
    assert spec.file is not None
    redactor = for_target(target, profile)
    started = now()
    out = EvidenceFile(Path(out_dir) / spec.file, redactor)
    exit_status: int | None = None
    failure: Exception | None = None
    try:
        exit_status = body(out)
    except Exception as exc:  # recorded in the bundle; never loses what was already written
        failure = exc
    finally:
        size, sha, counts = out.close()
    if failure is None and exit_status not in (None, 0):
        failure = CommandFailedError(f"command exited {exit_status}", exit_status)
    record = CollectorRecord(
        collector=spec.name, kind=spec.kind, file=spec.file, what=redactor.text(spec.what), status="ok",
        started_at=started, ended_at=now(), exit_status=exit_status, bytes=size, sha256=sha,
        redactions=sum(counts.values()), redactions_by_rule=counts,
    )
    if failure is None:
        return record
    message = redactor.text(f"{type(failure).__name__}: {failure}")
    if len(message) > 2000:
        message = message[:2000] + "…"
    failed = record.model_copy(update={"status": "failed", "error": message}).model_dump(mode="json")
    kind = CollectorRetryableError if isinstance(failure, RetryableError) else CollectorFailedError
    raise kind(message, failed) from None


def _host_name(target: Target, name: str | None, what: str) -> str:
    host = name or target.git.deploy_host
    if host not in target.hosts:
        raise BadInputError(f"{what} names host {host!r}, not one of {sorted(target.hosts)}")
    return host


def service_log_argv(target: Target, host: str, service: str, lines: int) -> list[str]:
    cfg = target.hosts[host]
    if not _SERVICE.fullmatch(service):
        raise BadInputError(f"service name {service!r} is not plain (letters, digits, _ . @ -)")
    if cfg.log_command == "docker":
        return ["docker", "logs", *(["--tail", str(lines)] if lines else []), service]
    if cfg.log_command == "journalctl":
        return ["journalctl", "-u", service, *(["-n", str(lines)] if lines else []), "--no-pager"]
    if cfg.log_dir is None:
        raise BadInputError(f"host {host!r} reads log files but names no log_dir")
    path = f"{cfg.log_dir.rstrip('/')}/{service}.log"
    return ["tail", "-n", str(lines), path] if lines else ["cat", path]


def plan_collectors(target: Target, profile: EvidenceProfile) -> list[CollectorSpec]:
    """Every collector the profile asks for, in bundle order; unconfigured systems are listed too."""
    specs: list[CollectorSpec] = []
    p = profile
    gw = str(target.gateway.url).rstrip("/")
    if p.health.enabled:
        specs.append(CollectorSpec(name="gateway-health", kind="health", file="gateway-health.json",
                                   what=" ; ".join(f"GET {gw}{path}" for path in p.health.paths),
                                   timeout_s=p.health.timeout_s, params={"paths": p.health.paths}))
    if p.prometheus.enabled:
        prom = target.prometheus
        query = p.prometheus.query or (prom.error_rate_query if prom else "")
        specs.append(CollectorSpec(
            name="prometheus-error-rate", kind="error-rate", file="prometheus-error-rate.json" if prom else None,
            what=f"GET {prom.url}api/v1/query query={query}" if prom else "target names no Prometheus",
            timeout_s=p.prometheus.timeout_s, configured=prom is not None, params={"query": query}))
    deploy = target.deploy_host
    if p.git.enabled:
        specs.append(CollectorSpec(
            name="host-git", kind="git", file="host-git.txt", host=target.git.deploy_host,
            what=f"ssh {deploy.user}@{deploy.address}: git -C {deploy.checkout_dir} log -1 ; "
                 f"git reflog show -n {p.git.reflog_limit}",
            timeout_s=p.git.timeout_s, params={"limit": p.git.reflog_limit}))
    if p.service_logs.enabled:
        host = _host_name(target, p.service_logs.host, "service_logs")
        cfg = target.hosts[host]
        for service in p.service_logs.services or cfg.services:
            argv = service_log_argv(target, host, service, p.service_logs.tail_lines)
            specs.append(CollectorSpec(
                name=f"logs-{service.lower()}", kind="service-log", file=f"logs-{service.lower()}.log", host=host,
                argv=argv, what=f"ssh {cfg.user}@{cfg.address}: {' '.join(argv)}",
                timeout_s=p.service_logs.timeout_s))
    if p.postgres.enabled:
        for key, (summary, _sql) in PG_QUERIES.items():
            specs.append(CollectorSpec(
                name=f"pg-{key}", kind="postgres", file=f"pg-{key}.json", what=f"SQL ({target.database.dsn!r}): "
                f"{summary}", timeout_s=p.postgres.timeout_s,
                params={"query": key, "threshold_s": p.postgres.long_query_threshold_s,
                        "limit": p.postgres.max_rows}))
    for kind, cfg_r in (("redis-info", p.redis), ("redis-bigkeys", p.redis)):
        specs.append(CollectorSpec(
            name=kind, kind=kind, file=f"{kind}.txt" if cfg_r else None, configured=cfg_r is not None,
            what=(f"redis {cfg_r.address}:{cfg_r.port} " + ("INFO everything" if kind == "redis-info" else
                  f"--bigkeys: SCAN (up to {cfg_r.scan_limit} keys), TYPE, length, MEMORY USAGE"))
            if cfg_r else "not configured",
            timeout_s=cfg_r.timeout_s if cfg_r else 1.0))
    rmq = p.rabbitmq
    specs.append(CollectorSpec(
        name="rabbitmq-queues", kind="rabbitmq", file="rabbitmq-queues.json" if rmq else None,
        configured=rmq is not None, timeout_s=rmq.timeout_s if rmq else 1.0,
        what=f"GET {str(rmq.url).rstrip('/')}/api/queues as {rmq.user}" if rmq else "not configured"))
    if p.disk.enabled:
        for host in p.disk.hosts or [target.git.deploy_host]:
            _host_name(target, host, "disk")
            h = target.hosts[host]
            specs.append(CollectorSpec(name=f"disk-{host}", kind="command", file=f"disk-{host}.txt", host=host,
                                       argv=["df", "-P"], what=f"ssh {h.user}@{h.address}: df -P",
                                       timeout_s=p.disk.timeout_s))
    for extra in p.extra_commands:
        host = _host_name(target, extra.host, f"extra command {extra.name}")
        h = target.hosts[host]
        specs.append(CollectorSpec(name=f"cmd-{extra.name}", kind="command", file=f"cmd-{extra.name}.txt",
                                   host=host, argv=extra.argv, what=f"ssh {h.user}@{h.address}: {' '.join(extra.argv)}",
                                   timeout_s=extra.timeout_s))
    names = [s.name for s in specs]
    if len(names) != len(set(names)):
        raise BadInputError(f"collector names collide in this profile: {sorted(names)}")
    return specs
