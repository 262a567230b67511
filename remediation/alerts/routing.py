"""Receiver configuration (`runbooks/alert-routes.toml`): auth, limits and label routes.

Typed and strict (`extra="forbid"`): a typo in the file fails at start with the field
named, never silently at 03:00. Routes are tried in file order; the first whose
matchers all hold wins; `[default]` catches the rest. With no match and no default,
`unmatched` decides: `"ignore"` (the default) answers 202 with no run and records a
`remediation.alert.unrouted` event; `"reject"` answers 422 so the sender shows an error.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from remediation.alerts.models import AlertGroup
from remediation.errors import InventoryError
from remediation.evidence.alert_context import AlertSource
from remediation.flowkit.params import TargetName
from remediation.target.inventory import list_targets
from remediation.target.secrets import SecretRef

__all__ = [
    "DEFAULT_ROUTES_FILE",
    "AuthConfig",
    "BearerAuth",
    "Bucket",
    "Limits",
    "ReceiverConfig",
    "Route",
    "RouteAction",
    "SentryAuth",
    "load_config",
]

DEFAULT_ROUTES_FILE = Path(__file__).resolve().parents[2] / "runbooks" / "alert-routes.toml"
Severity = Literal["sev1", "sev2", "sev3", "sev4"]
ProfileName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bucket(_Strict):
    """A token bucket: `burst` new alert groups at once, refilled at `rate_per_s`."""

    rate_per_s: float = Field(gt=0, le=10_000)
    burst: int = Field(ge=1, le=100_000)


class Limits(_Strict):
    """`[limits]`: what one notification may carry and how many new groups a sender may start.

    Caps on a payload answer 413 naming the limit; rate limits (new groups only: a repeat of a
    group that has its run is free) answer 429 + Retry-After; the per-target run cap answers 202
    `capped` and records the group as an event; a full start queue answers 503 + Retry-After.
    """

    #: Alerts in one Alertmanager/Grafana notification (Alertmanager: set `max_alerts` below it).
    max_alerts: int = Field(default=1000, ge=1, le=100_000)
    #: Labels in one set (an alert's, commonLabels, groupLabels, Sentry tags, generic labels).
    max_labels: int = Field(default=64, ge=1, le=10_000)
    max_label_name_bytes: int = Field(default=128, ge=8, le=4096)
    max_label_value_bytes: int = Field(default=2048, ge=8, le=65_536)
    max_annotations: int = Field(default=32, ge=0, le=10_000)
    max_annotation_value_bytes: int = Field(default=16_384, ge=8, le=1024 * 1024)
    #: Labels stored with a group (flow parameters, journal, events): the route's own labels first,
    #: then `keep_labels`, then the rest by name, up to this many; values cut to `stored_label_value_chars`.
    stored_labels: int = Field(default=16, ge=1, le=64)
    stored_label_value_chars: int = Field(default=256, ge=16, le=2048)
    keep_labels: list[str] = ["alertname", "env", "environment", "service", "severity", "instance", "job",
                              "namespace", "cluster", "team", "project", "level"]
    #: New alert groups per source (each source its own bucket), unless `sources` overrides one.
    source_rate: Bucket = Bucket(rate_per_s=5, burst=300)
    sources: dict[AlertSource, Bucket] = {}
    #: New alert groups per route (each route its own bucket), unless the route sets `rate`.
    route_rate: Bucket = Bucket(rate_per_s=2, burst=150)
    #: Capture runs started per target within `runs_window_s`; more groups are recorded, not started.
    runs_per_target: int = Field(default=100, ge=1, le=100_000)
    runs_window_s: int = Field(default=600, ge=10, le=86_400)
    #: Groups journaled and not yet started (queued, starting, retrying) before new ones get 503.
    max_queue: int = Field(default=1000, ge=1, le=1_000_000)
    #: Events waiting to be sent before per-group events are folded into counts.
    max_buffered_events: int = Field(default=1000, ge=10, le=1_000_000)
    #: Groups remembered as capped (one event per group per window), least recent forgotten first.
    max_tracked_groups: int = Field(default=10_000, ge=100, le=1_000_000)


class RouteAction(_Strict):
    """What a matched group gets: a capture run against `target` with evidence `profile`."""

    target: TargetName
    severity: Severity = "sev3"
    profile: ProfileName = "default"


class Route(RouteAction):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: Only these senders (all when omitted).
    sources: list[AlertSource] | None = None
    #: label = exact value; every one must hold.
    match: dict[str, str] = {}
    #: label = regular expression matched against the whole value (as Alertmanager does).
    match_re: dict[str, str] = {}
    #: This route's own bucket of new groups (default: `[limits].route_rate`).
    rate: Bucket | None = None

    @field_validator("match_re")
    @classmethod
    def _compiles(cls, v: dict[str, str]) -> dict[str, str]:
        for label, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"match_re.{label}: not a regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _has_matchers(self) -> Route:
        if not self.match and not self.match_re and self.sources is None:
            raise ValueError(f"route {self.name!r} matches everything; use [default] for that")
        return self

    def matches(self, group: AlertGroup) -> bool:
        if self.sources is not None and group.source not in self.sources:
            return False
        labels = group.labels
        if any(labels.get(k) != v for k, v in self.match.items()):
            return False
        return all(re.fullmatch(p, labels.get(k, "")) for k, p in self.match_re.items())


class BearerAuth(_Strict):
    """`Authorization: Bearer <token>`; several tokens let a rotation overlap."""

    tokens: list[SecretRef] = Field(min_length=1)


class SentryAuth(_Strict):
    """The integration's client secret: `Sentry-Hook-Signature` is HMAC-SHA256(secret, raw body)."""

    client_secret: SecretRef


class AuthConfig(_Strict):
    """A source without an entry here is switched off (its endpoint answers 404)."""

    alertmanager: BearerAuth | None = None
    grafana: BearerAuth | None = None
    generic: BearerAuth | None = None
    sentry: SentryAuth | None = None


class ReceiverConfig(_Strict):
    #: Only the read-only capture flow may be auto-started, so only its deployments are allowed.
    deployment: str = Field(default="capture-evidence/capture-evidence", pattern=r"^capture-evidence/[A-Za-z0-9_.-]+$")
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, le=16 * 1024 * 1024)
    unmatched: Literal["ignore", "reject"] = "ignore"
    #: Sentry sends one webhook per event: events of one issue within this window are one incident.
    sentry_window_s: int = Field(default=3600, ge=60, le=7 * 86400)
    #: A first notification waits this long for its run id, only if no start is queued ahead of
    #: it; under a storm the answer is immediate (`accepted`, journaled) and runs follow.
    start_wait_s: float = Field(default=5.0, ge=0, le=30)
    #: Creates in flight at once against the Prefect API (the server, not the receiver, is the bound).
    start_concurrency: int = Field(default=4, ge=1, le=32)
    limits: Limits = Limits()
    auth: AuthConfig = AuthConfig()
    routes: list[Route] = []
    default: RouteAction | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> ReceiverConfig:
        names = [r.name for r in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"route names must be unique: {dupes}")
        return self

    def route_labels(self, name: str) -> list[str]:
        """The labels a route matches on: kept first when labels are cut down for storage."""
        for r in self.routes:
            if r.name == name:
                return [*r.match, *r.match_re]
        return []

    def route_rate(self, name: str) -> Bucket | None:
        return next((r.rate for r in self.routes if r.name == name), None)

    def route(self, group: AlertGroup) -> tuple[str, RouteAction] | None:
        """(route name, action) for the first matching route, else the default, else None."""
        for r in self.routes:
            if r.matches(group):
                return r.name, r
        return ("default", self.default) if self.default is not None else None

    def check_targets(self, known: list[str]) -> None:
        actions = [(r.name, r) for r in self.routes] + ([("default", self.default)] if self.default else [])
        unknown = [f"{name} -> {a.target}" for name, a in actions if a.target not in known]
        if unknown:
            raise ValueError(f"routes name targets with no inventory: {unknown} (known: {known})")


def load_config(path: str | Path = DEFAULT_ROUTES_FILE, *, check_targets: bool = True) -> ReceiverConfig:
    """Load and validate the routes file; errors name the file and each bad field."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InventoryError(f"{path}: no such alert routes file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = ReceiverConfig.model_validate(data)
        if check_targets:
            config.check_targets(list_targets())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise InventoryError(f"{path}: invalid alert routes: {problems}") from None
    except ValueError as exc:
        raise InventoryError(f"{path}: {exc}") from None
    return config
