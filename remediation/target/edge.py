"""A target's edge (inventory `[edge]`): where abusive sources are blocked, where its access log is, and
the rule that names an offender. Read by `block-source` (runbooks/block_source.md) and `recover`.

`block_at` is one of:

- `gateway-deny-list` — the sandbox gateway's deny list, over its authenticated admin surface (the
  target's `[gateway]` url and token): `GET`, `PUT`, `DELETE /api/v1/edge/deny/<address>`. Each entry
  carries an expiry the gateway enforces.
- `host-command` — a firewall on an inventory host (nftables, ufw, iptables), each operation an
  argument list run over SSH: `{address}` and `{expiry_s}` are substituted inside each argument
  (`remediation.clients.edge.substitute`), the list quoted once with `shlex.join`, never a shell
  string. `check` exits 0 when the address is blocked and 1 when it is not. With an nftables set
  declared `flags timeout`, the block's own timeout lifts it (`expires_by_itself = true`); with ufw
  or iptables only `recover` (or a person) does. For example (nftables):
  `block = ["nft", "add", "element", "inet", "filter", "rp_deny", "{ {address} timeout {expiry_s}s }"]`,
  `unblock = ["nft", "delete", "element", "inet", "filter", "rp_deny", "{ {address} }"]`,
  `check = ["nft", "get", "element", "inet", "filter", "rp_deny", "{ {address} }"]`.
- `cdn-api` — a CDN's firewall API (Cloudflare IP access rules): declared so an inventory can say
  so, **not implemented**: block-source refuses it before reading anything.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from remediation.domain.sources import SourceRule
from remediation.target.secrets import SecretRef

__all__ = [
    "PLACEHOLDERS",
    "AccessLogConfig",
    "CdnApiEdge",
    "EdgeConfig",
    "EdgeProbe",
    "GatewayDenyListEdge",
    "HostCommandEdge",
    "SourceRule",
]

#: What an argument template may name; anything else in braces is taken literally (nft's `{ … }`).
PLACEHOLDERS = ("{address}", "{expiry_s}")
_ABSOLUTE = r"^/[A-Za-z0-9_./-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewayDenyListEdge(_Strict):
    kind: Literal["gateway-deny-list"]

    def describe(self) -> str:
        return "the gateway's deny list (`PUT /api/v1/edge/deny/<address>`)"


def _unknown_placeholders(argv: list[str]) -> list[str]:
    found = set(re.findall(r"\{[a-z_]+\}", " ".join(argv)))
    return sorted(found - set(PLACEHOLDERS))


class HostCommandEdge(_Strict):
    kind: Literal["host-command"]
    #: A key of the target's `hosts`.
    host: str
    block: list[str] = Field(min_length=1)
    unblock: list[str] = Field(min_length=1)
    check: list[str] = Field(min_length=1)
    #: True when the block command's own timeout lifts it (an nftables set with `flags timeout`).
    expires_by_itself: bool = False

    @field_validator("block", "unblock", "check")
    @classmethod
    def _argv(cls, v: list[str]) -> list[str]:
        if not all(arg and "\x00" not in arg for arg in v):
            raise ValueError("every argument is a non-empty string without NUL")
        if not any("{address}" in arg for arg in v):
            raise ValueError("the command must name {address} in one of its arguments")
        if unknown := _unknown_placeholders(v):
            raise ValueError(f"unknown placeholders {unknown}; known: {list(PLACEHOLDERS)}")
        return v

    def describe(self) -> str:
        return f"host `{self.host}`'s firewall (`{' '.join(self.block)}`)"


class CdnApiEdge(_Strict):
    """Declared, not implemented (see the module docstring)."""

    kind: Literal["cdn-api"]
    provider: Literal["cloudflare"] = "cloudflare"
    zone_id: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")
    token: SecretRef

    def describe(self) -> str:
        return f"the {self.provider} zone {self.zone_id}'s IP access rules"


class AccessLogConfig(_Strict):
    """The edge's access log in nginx `combined` format, read on a host over SSH (`tail -n`)."""

    #: A key of the target's `hosts`; None: the deploy host.
    host: str | None = None
    path: str = Field(pattern=_ABSOLUTE)
    #: Lines read from the end (seed 002 §3.7 reads 10 000; a busy edge needs more for a 5-minute window).
    tail_lines: int = Field(default=50_000, ge=100, le=5_000_000)
    timeout_s: float = Field(default=60, gt=0, le=600)

    @field_validator("path")
    @classmethod
    def _no_dots(cls, v: str) -> str:
        if ".." in v.split("/"):
            raise ValueError("the access log path may not contain '..'")
        return v


class EdgeProbe(_Strict):
    """How a block is verified: a gateway path a normal client gets 200 on, and whether the runner can
    send from the blocked address itself (the sandbox: every 127.0.0.0/8 address is local)."""

    path: str = Field(default="/health", pattern=r"^/[A-Za-z0-9_./-]*$")
    from_blocked_source: bool = False
    timeout_s: float = Field(default=5, gt=0, le=60)


class EdgeConfig(_Strict):
    block_at: Annotated[GatewayDenyListEdge | HostCommandEdge | CdnApiEdge, Field(discriminator="kind")]
    access_log: AccessLogConfig
    rule: SourceRule
    probe: EdgeProbe = EdgeProbe()

    @property
    def hosts_named(self) -> list[str]:
        names = [self.access_log.host] if self.access_log.host else []
        if isinstance(self.block_at, HostCommandEdge):
            names.append(self.block_at.host)
        return names
