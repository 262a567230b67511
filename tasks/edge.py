"""The target's edge for `block-source`: who is sending what (the access log), who is blocked, block and
lift one address, and a verification that sees what clients see.

The access log is read where a production edge keeps it — on a host, over SSH, as seed 002 §3.7 does
(`tail -n 10000 /opt/backend/nginx/logs/access.log | awk '{print $1}' | sort | uniq -c | sort -rn`):
a real nginx or load balancer has no "top sources" API, but every one of them writes that log. The
`tail -n` runs as an argument list; the counting is done here, line by line as it streams in, so a
large log is never held in memory and no pipeline is handed to a remote shell.

Blocking goes through `tasks.admin_api.apply_lever_change`, which reads the address's current state
first (already blocked → nothing is sent; a retry or a re-run never writes twice) and records an
`edge-block` change that `recover` undoes; `set_edge_block` here is its edge-specific part.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx

from remediation.clients._http import make_http_client
from remediation.clients.edge import DenyEntry, Firewall, HostCommandFirewall, HttpProbe, HttpxDenyList, ProbeResult
from remediation.domain.levers import LeverChange, edge_address
from remediation.domain.sources import AccessLogTally, Network, Traffic, parse_network
from remediation.errors import BadInputError
from remediation.evidence.scrub import for_target
from remediation.target import connect
from remediation.target.edge import CdnApiEdge, EdgeConfig, GatewayDenyListEdge, HostCommandEdge
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY, task

__all__ = [
    "check_edge_blocks", "edge_of", "get_edge_blocks", "protected_networks", "read_edge_blocks", "read_top_sources",
    "set_edge_block",
]


def edge_of(target: Target) -> EdgeConfig:
    """The target's edge, or BadInputError when block-source cannot act on it."""
    edge = target.edge
    if edge is None:
        raise BadInputError(f"target {target.name} declares no [edge]: block-source has nowhere to block")
    if isinstance(edge.block_at, CdnApiEdge):
        raise BadInputError(f"target {target.name}'s edge is a CDN API ({edge.block_at.provider}): declared, not "
                            "implemented; block at the CDN's console and record it in the incident")
    unknown = sorted(set(edge.hosts_named) - set(target.hosts))
    if unknown:
        raise BadInputError(f"target {target.name}'s [edge] names hosts it does not declare: {unknown}")
    return edge


def protected_networks(target: Target, edge: EdgeConfig) -> list[Network]:
    """Never blocked: the rule's `never_block`, and the gateway's own address when the inventory names it
    by IP (a name would need DNS, which can change under a running incident: list it in never_block)."""
    nets = edge.rule.protected
    host = target.gateway.url.host or ""
    try:
        own = parse_network(host.strip("[]"))
    except BadInputError:
        return nets
    return nets if any(own.version == n.version and own.overlaps(n) for n in nets) else [*nets, own]


@contextmanager
def _firewall(target: Target) -> Iterator[Firewall]:
    edge = edge_of(target)
    kind = edge.block_at
    if isinstance(kind, GatewayDenyListEdge):
        token = target.gateway.token.resolve() if target.gateway.token else None
        timeout = httpx.Timeout(target.gateway.timeout_s, connect=min(target.gateway.timeout_s, 2.0))
        with make_http_client(str(target.gateway.url), timeout=timeout) as client:
            yield HttpxDenyList(client, token)
        return
    assert isinstance(kind, HostCommandEdge)
    # The process's one connection to the host (a run reads, blocks and verifies over it); a failed
    # command's stderr tail is scrubbed at the task boundary like any error.
    with connect.shared_remote_host(target, kind.host) as host:
        yield HostCommandFirewall(host, block=kind.block, unblock=kind.unblock, check=kind.check)


@task(name="read-top-sources", **READ_ONLY)
def read_top_sources(target: Target) -> Traffic:
    """Seed 002 §3.7 step 1, "Identify the offender": the access log's last `tail_lines` lines over SSH,
    tallied per source for the rule's window (requests, rate-limit hits, 403s, the path hit most)."""
    edge = edge_of(target)
    cfg = edge.access_log
    tally = AccessLogTally(datetime.now(UTC), edge.rule.window_s, max_lines=cfg.tail_lines)
    # No output redactor: what leaves this task is addresses, counts and each source's busiest path
    # (query strings dropped), and those paths are redacted below. One SSH connection per process: a
    # run reads the log again after its approval.
    with connect.shared_remote_host(target, cfg.host or target.git.deploy_host) as host:
        host.run(["tail", "-n", str(cfg.tail_lines), cfg.path], timeout=cfg.timeout_s, on_lines=tally.feed).check()
    traffic = tally.traffic()
    redact = for_target(target).text
    return traffic.model_copy(update={"sources": [s.model_copy(update={"top_path": redact(s.top_path)})
                                                  for s in traffic.sources]})


def _entry(e: DenyEntry) -> dict[str, Any]:
    return {"expires_at": e.expires_at.isoformat() if e.expires_at else None, "reason": e.reason}


def read_edge_blocks(target: Target, addresses: Sequence[str] | None) -> tuple[dict[str, dict[str, Any]],
                                                                                 list[str] | None]:
    """(blocked address → {"expires_at", "reason"}, the addresses read — None when the whole list was)."""
    with _firewall(target) as fw:
        found = fw.blocked(addresses)
        whole = isinstance(fw, HttpxDenyList)
    return {a: _entry(e) for a, e in found.items()}, None if whole else list(addresses or [])


@task(name="get-edge-blocks", **READ_ONLY)
def get_edge_blocks(target: Target, addresses: list[str]) -> dict[str, dict[str, Any]]:
    """Which of `addresses` the edge blocks now, and until when (the gateway's list: every live entry)."""
    return read_edge_blocks(target, addresses)[0]


def set_edge_block(target: Target, change: LeverChange) -> str:
    """Block or lift the change's address at the edge; returns the path taken. The caller has read the
    current state (tasks.admin_api.apply_lever_change)."""
    address = edge_address(change)
    expiry = change.extra.get("expiry_s")
    with _firewall(target) as fw:
        if change.after.get("blocked"):
            fw.block(address, float(expiry) if expiry else None, change.extra.get("reason", ""))
        else:
            fw.unblock(address)
    return "gateway-deny-list" if isinstance(fw, HttpxDenyList) else "host-command"


@contextmanager
def _probe(target: Target, source: str | None, timeout_s: float) -> Iterator[HttpProbe]:
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with make_http_client(str(target.gateway.url), timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
                          transport=transport) as client:
        yield HttpProbe(client, source or "the runner's own address")


def _probe_source(address: str) -> str:
    net = ipaddress.ip_network(address)
    return str(net.network_address if net.num_addresses == 1 else next(net.hosts()))


def _checks(target: Target, changes: list[LeverChange]) -> dict[str, Any]:
    edge = edge_of(target)
    addresses = [edge_address(c) for c in changes]
    blocks, _ = read_edge_blocks(target, addresses)
    checks: list[dict[str, Any]] = []
    for change, address in zip(changes, addresses, strict=True):
        want = bool(change.after.get("blocked"))
        check: dict[str, Any] = {"address": address, "want_blocked": want, "listed": address in blocks,
                                 "expires_at": (blocks.get(address) or {}).get("expires_at")}
        if edge.probe.from_blocked_source:
            with _probe(target, _probe_source(address), edge.probe.timeout_s) as probe:
                seen = probe.get(edge.probe.path)
            check["probe"] = seen.model_dump()
            # Blocked: the edge refuses it with 403. Lifted: anything but 403 (the path's own answer).
            check["refused"] = seen.http_status == 403
            answered = seen.http_status is not None
            check["ok"] = check["listed"] == want and answered and check["refused"] == want
        else:
            check["probe"] = None
            check["ok"] = check["listed"] == want
        checks.append(check)
    with _probe(target, None, edge.probe.timeout_s) as probe:
        normal: ProbeResult = probe.get(edge.probe.path)
    return {"checks": checks, "normal_client": normal.model_dump(),
            "ok": all(c["ok"] for c in checks) and normal.http_status == 200}


@task(name="check-edge-blocks", **READ_ONLY)
def check_edge_blocks(target: Target, changes: list[LeverChange], wait_s: float = 5.0) -> dict[str, Any]:
    """Each address is listed (or no longer) at the edge; with `probe.from_blocked_source`, a request from
    it gets 403 (or no longer does); a normal client — the runner's own address — still gets 200."""
    if not changes:
        return {"checks": [], "normal_client": None, "ok": True}
    deadline = time.monotonic() + wait_s
    while True:
        found = _checks(target, changes)
        if found["ok"] or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)
