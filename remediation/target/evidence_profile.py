"""Which evidence collectors run for a target, with their settings and timeouts.

A profile lives in the target's inventory (`[evidence_profiles.<name>]`), so what is
captured is reviewed like any other inventory change. Every collector has its own
timeout; a collector whose system the target does not have (no Prometheus, no Redis,
no RabbitMQ) is recorded in the bundle as "not configured", never silently skipped.

Redis and RabbitMQ connection settings sit in their collector section: they are read
by evidence capture only, and absent means "this target has none".
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from remediation.target.secrets import SecretRef

__all__ = [
    "PROFILE_NAME",
    "DiskCollector",
    "EvidenceProfile",
    "ExtraCommand",
    "GitCollector",
    "HealthCollector",
    "PostgresCollector",
    "PrometheusCollector",
    "RabbitMqCollector",
    "RedisCollector",
    "ServiceLogsCollector",
]

PROFILE_NAME = r"^[a-z][a-z0-9-]{0,62}$"
_SLUG = r"^[a-z][a-z0-9-]{0,62}$"
Timeout = Annotated[float, Field(gt=0, le=3600)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Collector(_Strict):
    enabled: bool = True
    timeout_s: Timeout = 30.0


class HealthCollector(_Collector):
    """`GET <gateway>/health` and `/health/deep`: a 5xx is a finding, recorded with its body."""

    paths: list[str] = ["/health", "/health/deep"]
    timeout_s: Timeout = 15.0

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not re.fullmatch(r"/[A-Za-z0-9_./-]*", p) or ".." in p]
        if bad:
            raise ValueError(f"health paths are absolute paths on the gateway without query or '..': {bad}")
        return v


class PrometheusCollector(_Collector):
    """The error-rate query; None uses the target's `prometheus.error_rate_query`."""

    query: str | None = None
    timeout_s: Timeout = 15.0


class GitCollector(_Collector):
    """`git log -1` and the checkout's reflog (each pull on the host is a deploy)."""

    reflog_limit: int = Field(default=20, ge=1, le=1000)


class ServiceLogsCollector(_Collector):
    """One collector per service, using the host's `log_command` (docker, journalctl, file)."""

    #: Lines from the end of each log; 0 collects the whole log (streamed to disk, never held in memory).
    tail_lines: int = Field(default=500, ge=0)
    #: None: every service the host lists.
    services: list[str] | None = None
    #: A key of the target's `hosts`; None: the deploy host.
    host: str | None = None
    timeout_s: Timeout = 120.0

    @field_validator("services")
    @classmethod
    def _services(cls, v: list[str] | None) -> list[str] | None:
        bad = [s for s in v or [] if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}", s)]
        if bad:
            raise ValueError(f"service names are letters, digits, _ . @ -: {bad}")
        return v


class PostgresCollector(_Collector):
    """Seed 001's investigation SQL, each query its own collector and file."""

    #: "Long-running" means running longer than this (seed 001: 5 minutes).
    long_query_threshold_s: float = Field(default=300.0, ge=0)
    max_rows: int = Field(default=1000, ge=1, le=100_000)


class RedisCollector(_Collector):
    """`INFO` and a `--bigkeys`-style scan over the Redis protocol."""

    address: str
    port: int = Field(default=6379, gt=0, lt=65536)
    password: SecretRef | None = None
    #: Keys sampled by SCAN for the big-keys report (a bound, so a huge keyspace stays cheap).
    scan_limit: int = Field(default=10_000, ge=1)
    top: int = Field(default=10, ge=1, le=1000)


class RabbitMqCollector(_Collector):
    """Queue depths from the management API (`GET /api/queues`)."""

    url: HttpUrl
    user: str
    password: SecretRef
    timeout_s: Timeout = 15.0


class DiskCollector(_Collector):
    """`df -P` on each host; None: the deploy host."""

    hosts: list[str] | None = None


class ExtraCommand(_Strict):
    """One more read-only command, an argument list run on a host over SSH."""

    name: str = Field(pattern=_SLUG)
    argv: list[str] = Field(min_length=1)
    host: str | None = None
    timeout_s: Timeout = 60.0

    @field_validator("argv")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        if not all(arg and "\x00" not in arg for arg in v):
            raise ValueError("every argument is a non-empty string without NUL")
        return v


class EvidenceProfile(_Strict):
    description: str = ""
    health: HealthCollector = HealthCollector()
    prometheus: PrometheusCollector = PrometheusCollector()
    git: GitCollector = GitCollector()
    service_logs: ServiceLogsCollector = ServiceLogsCollector()
    postgres: PostgresCollector = PostgresCollector()
    redis: RedisCollector | None = None
    rabbitmq: RabbitMqCollector | None = None
    disk: DiskCollector = DiskCollector()
    extra_commands: list[ExtraCommand] = []
    #: More redaction regexes (Python syntax); a whole match becomes `[REDACTED]`.
    redact_patterns: list[str] = []

    @field_validator("redact_patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"redact pattern {pattern!r} is not a valid regex: {exc}") from None
            # A pattern that matches nothing-at-all would "redact" between every character.
            if compiled.fullmatch(""):
                raise ValueError(f"redact pattern {pattern!r} matches the empty string")
        return v

    @model_validator(mode="after")
    def _unique_commands(self) -> EvidenceProfile:
        names = [c.name for c in self.extra_commands]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"extra command names must be unique: {dupes}")
        return self
