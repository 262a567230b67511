"""The edge where abusive sources are blocked (block-source), and a probe that sees what a client sees.

- `HttpxDenyList`: the sandbox gateway's deny list over its admin surface (sandbox/API.md, "Edge").
- `HostCommandFirewall`: a firewall on a host (nftables, ufw, iptables), each operation an argument
  list from the inventory with `{address}`/`{expiry_s}` substituted inside each argument, run over SSH.
- `HttpProbe`: one GET on the gateway from a chosen source address (the httpx client it is handed is
  bound to that address), answered as data: a 403 is a finding, not an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from remediation.clients._http import HttpSeam
from remediation.clients.remote_host import RemoteHost
from remediation.errors import BadInputError, CommandFailedError

__all__ = ["DenyEntry", "Firewall", "HostCommandFirewall", "HttpProbe", "HttpxDenyList", "ProbeResult", "substitute"]


class DenyEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    address: str
    expires_at: datetime | None = None
    reason: str = ""


@runtime_checkable
class Firewall(Protocol):
    """What block-source needs of an edge: is an address blocked, block it, lift it."""

    def blocked(self, addresses: Sequence[str] | None) -> dict[str, DenyEntry]: ...
    def block(self, address: str, expiry_s: float | None, reason: str) -> None: ...
    def unblock(self, address: str) -> None: ...


def _address(address: str) -> str:
    """Only IP text goes into a URL path or a command argument (the domain has validated it already)."""
    if not address or len(address) > 64 or any(c not in "0123456789abcdefABCDEF.:/" for c in address):
        raise BadInputError(f"{address!r} is not an IP address or network")
    return address


class HttpxDenyList:
    """`GET/PUT/DELETE /api/v1/edge/deny[/<address>]` with the gateway's bearer."""

    def __init__(self, client: httpx.Client, token: SecretStr | None) -> None:
        self._http = HttpSeam(client, token, "gateway deny list", None)

    def entries(self) -> list[DenyEntry]:
        body = self._http.call("GET", "/api/v1/edge/deny")
        return [DenyEntry.model_validate(e) for e in body.get("entries", [])]

    def blocked(self, addresses: Sequence[str] | None) -> dict[str, DenyEntry]:
        """The whole list (every entry still live), whatever `addresses` asks for."""
        return {e.address: e for e in self.entries()}

    def block(self, address: str, expiry_s: float | None, reason: str) -> None:
        self._http.call("PUT", f"/api/v1/edge/deny/{_address(address)}",
                        json={"expires_in_s": expiry_s, "reason": reason[:500]})

    def unblock(self, address: str) -> None:
        self._http.call("DELETE", f"/api/v1/edge/deny/{_address(address)}")


def substitute(argv: Sequence[str], address: str, expiry_s: float | None = None) -> list[str]:
    """Each argument with `{address}` and `{expiry_s}` replaced inside it: one argument stays one
    argument (nft's `{ 203.0.113.7 timeout 3600s }` included), never re-split by a shell."""
    _address(address)
    expiry = f"{int(expiry_s)}" if expiry_s is not None else ""
    return [arg.replace("{address}", address).replace("{expiry_s}", expiry) for arg in argv]


class HostCommandFirewall:
    """A host's firewall driven by the inventory's argument lists; `check` exits 0 (blocked) or 1 (not)."""

    def __init__(self, host: RemoteHost, *, block: Sequence[str], unblock: Sequence[str], check: Sequence[str],
                 timeout_s: float = 30.0) -> None:
        self._host, self._timeout = host, timeout_s
        self._block, self._unblock, self._check = list(block), list(unblock), list(check)

    def blocked(self, addresses: Sequence[str] | None) -> dict[str, DenyEntry]:
        """Only the addresses asked for (a firewall's rules are not a list we can read generically)."""
        out = {}
        for address in addresses or []:
            result = self._host.run(substitute(self._check, address), timeout=self._timeout)
            if result.exit_code == 0:
                out[address] = DenyEntry(address=address)
            elif result.exit_code != 1:
                result.check()
        return out

    def block(self, address: str, expiry_s: float | None, reason: str) -> None:
        self._host.run(substitute(self._block, address, expiry_s), timeout=self._timeout).check()

    def unblock(self, address: str) -> None:
        result = self._host.run(substitute(self._unblock, address), timeout=self._timeout)
        if result.exit_code != 0 and self.blocked([address]):
            raise CommandFailedError(f"`{result.command}` exited {result.exit_code} and {address} is still blocked",
                                     result.exit_code)


class ProbeResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str
    path: str
    http_status: int | None
    error: str | None = None


class HttpProbe:
    """GET a path the way a client at the handed-in client's source address would."""

    def __init__(self, client: httpx.Client, source: str) -> None:
        self._client, self._source = client, source

    def get(self, path: str) -> ProbeResult:
        try:
            response = self._client.get(path)
        except httpx.HTTPError as exc:
            return ProbeResult(source=self._source, path=path, http_status=None,
                               error=f"{type(exc).__name__}: {exc}")
        return ProbeResult(source=self._source, path=path, http_status=response.status_code)
