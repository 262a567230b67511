"""A target (environment) described by a typed inventory: `runbooks/targets/<name>.toml`.

The file says where every system is and where each secret lives; it never holds a
secret. Unknown keys are errors (`extra="forbid"`), so a typo fails loudly with
the file and the field named, before any runbook touches anything.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator

from remediation.domain.reconcile import SourceOfTruth
from remediation.errors import InventoryError
from remediation.target.edge import EdgeConfig
from remediation.target.escalation import Escalation
from remediation.target.evidence_profile import PROFILE_NAME, EvidenceProfile
from remediation.target.secrets import SecretRef
from remediation.target.services import SERVICE, ServiceSpec

__all__ = [
    "TARGETS_DIR",
    "AdminApiConfig",
    "DatabaseConfig",
    "EvidenceStoreConfig",
    "GatewayConfig",
    "GitConfig",
    "HostConfig",
    "Person",
    "Policy",
    "Target",
    "list_targets",
    "load_target",
]

TARGETS_DIR = Path(__file__).resolve().parents[2] / "runbooks" / "targets"
NAME = r"^[a-z][a-z0-9-]{0,62}$"
Seconds = Annotated[float, Field(gt=0, le=3600)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdminApiConfig(_Strict):
    url: HttpUrl
    token: SecretRef
    timeout_s: Seconds = 10.0


class GatewayConfig(_Strict):
    url: HttpUrl
    #: Bearer for the gateway's own admin surface (provider ingress block, lever 3d).
    token: SecretRef | None = None
    timeout_s: Seconds = 10.0


#: `maxmemory-policy` values that evict instead of refusing writes (Redis' own names).
EvictingPolicy = Literal["allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu",
                         "volatile-random", "volatile-ttl"]


class RedisConfig(_Strict):
    """The platform's cache, for contain's `redis-eviction` lever (seed 002 §3.3)."""

    address: str
    port: int = Field(default=6379, gt=0, lt=65536)
    password: SecretRef | None = None
    timeout_s: Seconds = 5.0
    #: What the lever sets when memory is full under `noeviction` (seed 002: `allkeys-lru`).
    relief_policy: EvictingPolicy = "allkeys-lru"


class DatabaseConfig(_Strict):
    dsn: SecretRef
    statement_timeout_ms: int = Field(default=30_000, gt=0)
    connect_timeout_s: int = Field(default=5, gt=0)


class EvidenceStoreConfig(_Strict):
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = "incidents"
    region: str = "us-east-1"
    endpoint_url: HttpUrl | None = None
    access_key: SecretRef | None = None
    secret_key: SecretRef | None = None
    object_lock_days: int | None = Field(default=None, gt=0)
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.strip("/")
        if not re.fullmatch(r"[A-Za-z0-9._/-]*", v) or ".." in v:
            raise ValueError("prefix may hold letters, digits and . _ / - only")
        return v


class HostConfig(_Strict):
    address: str
    port: int = Field(default=22, gt=0, lt=65536)
    user: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    known_hosts: Path
    key: SecretRef
    #: The service checkout on the host (seed 000: `servers_v2`).
    checkout_dir: str
    #: Commands (argument lists) that rebuild and restart from the checkout, run in order in checkout_dir.
    rebuild: list[list[str]] = Field(min_length=1)
    #: Services whose logs the evidence capture reads (`docker logs --tail 500 <svc>` or journalctl units).
    services: list[str] = []
    log_command: Literal["docker", "journalctl", "file"] = "docker"
    #: For log_command = "file": the directory holding `<service>.log`.
    log_dir: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9_./-]*$")
    connect_timeout_s: Seconds = 10.0
    command_timeout_s: Seconds = 600.0

    @field_validator("rebuild")
    @classmethod
    def _non_empty_commands(cls, v: list[list[str]]) -> list[list[str]]:
        if any(not cmd or not all(arg for arg in cmd) for cmd in v):
            raise ValueError("every rebuild command is a non-empty list of non-empty arguments")
        return v


class GitConfig(_Strict):
    remote: str
    branch: str = Field(default="main", pattern=r"^[A-Za-z0-9._/-]+$")
    #: The host (a key of `hosts`) that deploys from this repository.
    deploy_host: str


def _profiles(v: dict[str, EvidenceProfile]) -> dict[str, EvidenceProfile]:
    bad = [name for name in v if not re.fullmatch(PROFILE_NAME, name)]
    if bad:
        raise ValueError(f"evidence profile names must match {PROFILE_NAME}: {bad}")
    # Alerts and the UI form start `default` unless told otherwise: it must exist.
    if "default" not in v:
        raise ValueError("evidence_profiles must include a 'default' profile")
    return v


class PrometheusConfig(_Strict):
    url: HttpUrl
    error_rate_query: str = 'sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))'


#: "ledger": the append-only ledger is right and buckets are set to it; "bucket": the buckets are right
#: and the ledger gets `adjustment` rows up to them.


Role = Literal["approver", "incident-commander", "on-call"]
HANDLE = r"^[a-z][a-z0-9._-]{1,62}$"
_PUBLIC_KEY = r"^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]+( \S+)?$"


class Person(_Strict):
    """Someone who may start risky runs or approve their steps, and how they prove it is them.

    `totp` is their RFC 6238 secret (base32), by reference: they type the 6-digit code in the
    Prefect UI's forms. `ssh_public_key` / `ssh_public_key_file` lets them sign an answer from the
    CLI instead (`ssh-keygen -Y sign`, namespace `rp-approval`).
    """

    name: str = ""
    roles: list[Role] = Field(default=["approver"], min_length=1)
    totp: SecretRef
    ssh_public_key: str | None = Field(default=None, pattern=_PUBLIC_KEY)
    ssh_public_key_file: Path | None = None

    @field_validator("ssh_public_key_file")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_absolute():
            raise ValueError("ssh_public_key_file must be an absolute path")
        return v

    def public_key(self) -> str | None:
        """The person's SSH public key, read late (a file may be written after the inventory is loaded)."""
        if self.ssh_public_key:
            return self.ssh_public_key
        if self.ssh_public_key_file is not None and self.ssh_public_key_file.is_file():
            return self.ssh_public_key_file.read_text().strip()
        return None


class Policy(_Strict):
    #: The approver must differ from whoever requested the run (the verified initiator).
    four_eyes: bool = True
    #: Distinct verified approvers each risky step needs, unless `approvals_required_for` names the step.
    approvals_required: int = Field(default=1, ge=1, le=5)
    #: Per step (e.g. `contain-platform-freeze = 2`): the broadest levers can ask for more people.
    approvals_required_for: dict[str, int] = {}
    #: A risky run (not a dry run) starts by asking its initiator to prove who they are.
    verify_initiator: bool = True
    approval_timeout_s: Seconds = 900.0
    #: Levers that pause for approval even though they are scoped (freeze and ingress block always do).
    approve_deposit_halt: bool = True
    approve_brand_disable: bool = True
    #: Rollback refuses commits older than this unless the approver overrides with a reason.
    rollback_max_age_hours: float = Field(default=24.0, gt=0)
    #: Reconcile: which side is the source of truth; the other side is corrected (runbooks/reconcile.md).
    reconcile_source_of_truth: SourceOfTruth = "ledger"


class NotificationsConfig(_Strict):
    #: A Slack incoming-webhook URL (or anything taking its `{"text": ...}` shape); the URL is a secret.
    status_webhook: SecretRef
    #: The service name the status templates show (seed 001: "Service: ...").
    service: str = Field(min_length=1, max_length=120)
    timeout_s: Seconds = 5.0


class AuditConfig(_Strict):
    #: HMAC-SHA256 key that signs each audit export's chain head. Held by reference (a Prefect Secret
    #: block or env, never in the bucket), so S3 write access alone cannot forge a head.
    signing_key: SecretRef


class Target(_Strict):
    name: str = Field(pattern=NAME)
    environment: str
    description: str = ""
    admin_api: AdminApiConfig
    gateway: GatewayConfig
    database: DatabaseConfig
    evidence: EvidenceStoreConfig
    hosts: dict[str, HostConfig] = Field(min_length=1)
    git: GitConfig
    prometheus: PrometheusConfig | None = None
    #: The platform's cache (the `redis-eviction` lever); not Prefect's own Redis.
    redis: RedisConfig | None = None
    brands: list[str] = Field(min_length=1)
    #: One synthetic test player per brand: verification probes move money only on these.
    synthetic_players: dict[str, str] = {}
    policy: Policy = Policy()
    #: Where the respond flow posts status updates (SEV1/SEV2: every 30 min and at each state change).
    notifications: NotificationsConfig | None = None
    #: How audit exports are sealed; without it chain heads are unsigned and `audit verify` says so.
    audit: AuditConfig | None = None
    #: The people who may start risky runs and approve their steps, by handle.
    people: dict[str, Person] = {}
    #: Who is told when an incident stays open (seed 001's matrix), and postmortem deadlines.
    escalation: Escalation = Escalation()
    #: Services restart-service may restart, by name: their instances, commands and health checks.
    services: dict[str, ServiceSpec] = {}
    #: Where block-source blocks abusive sources, the access log it reads, the offender rule (target/edge.py).
    edge: EdgeConfig | None = None
    #: What capture-evidence collects, by profile name; `default` always exists.
    evidence_profiles: Annotated[dict[str, EvidenceProfile], AfterValidator(_profiles)] = Field(
        default_factory=lambda: {"default": EvidenceProfile()}
    )

    @field_validator("brands")
    @classmethod
    def _brand_ids(cls, v: list[str]) -> list[str]:
        bad = [b for b in v if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", b)]
        if bad:
            raise ValueError(f"brand ids must be lowercase letters, digits, - or _: {bad}")
        return v

    def model_post_init(self, _: object) -> None:
        bad_handles = sorted(h for h in self.people if not re.fullmatch(HANDLE, h))
        if bad_handles:
            raise ValueError(f"people handles must match {HANDLE}: {bad_handles}")
        unknown = sorted(set(self.synthetic_players) - set(self.brands))
        if unknown:
            raise ValueError(f"synthetic_players names brands not in brands: {unknown}")
        if self.git.deploy_host not in self.hosts:
            raise ValueError(f"git.deploy_host {self.git.deploy_host!r} is not one of hosts {sorted(self.hosts)}")
        for name, spec in self.services.items():
            if not re.fullmatch(SERVICE, name):
                raise ValueError(f"service names must match {SERVICE}: {name!r}")
            if spec.host not in self.hosts:
                raise ValueError(f"services.{name}.host {spec.host!r} is not one of hosts {sorted(self.hosts)}")

    @property
    def deploy_host(self) -> HostConfig:
        return self.hosts[self.git.deploy_host]

    def approvals_required(self, step: str) -> int:
        return self.policy.approvals_required_for.get(step, self.policy.approvals_required)


def _path_for(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in str(name_or_path):
        return candidate
    if not re.fullmatch(NAME, str(name_or_path)):
        raise InventoryError(f"target name {str(name_or_path)!r} is not a valid target name ({NAME})")
    return TARGETS_DIR / f"{name_or_path}.toml"


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def load_target(name_or_path: str | Path) -> Target:
    """Load and validate a target; errors name the file and each bad field."""
    path = _path_for(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        known = ", ".join(list_targets()) or "none"
        raise InventoryError(f"{path}: no such target inventory (known targets: {known})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Target.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False))
        raise InventoryError(f"{path}: invalid target inventory: {problems}") from None


def list_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))
