"""Which source addresses `block-source` blocks at the edge, and how a plan names them.

Seed 002 §3.7 "Suspicious activity / abuse": "Identify the offender: `tail -n 10000
/opt/backend/nginx/logs/access.log | awk '{print $1}' | sort | uniq -c | sort -rn | head`", then
"Block at the edge". Seed 003 "DDoS / abusive traffic": "Top IP by request count last 5 min … If
single IP ≥ 10× the median, it's likely a probe". Seed 001 "Security Breach": "Block suspicious IPs".

The access log's window is tallied per source address (requests, rate-limit hits, refusals, the
path it hit most). The median is taken over every source seen in the window (the candidate
included), and a source is an offender when it made at least `threshold_x_median` × the median
*and* at least `min_requests` requests. An operator may name addresses or networks instead. Either
way an address is refused — `BadInputError`, before anything is read or touched — when it is
malformed, `0.0.0.0/0` or `::/0`, broader than the rule allows, or overlaps a `never_block` network
(the gateway's and load balancer's own address, the clients the platform itself uses). An offender
the log shows inside a `never_block` network is listed as spared, never blocked. A plan names
addresses, not counts: counts move every second, the approval is for who gets blocked and for how long.
"""

from __future__ import annotations

import ipaddress
import re
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from remediation.domain.levers import LeverChange, edge_block_change
from remediation.domain.text import md_inline
from remediation.errors import BadInputError

__all__ = [
    "SHOWN_SOURCES",
    "AccessLogTally",
    "Block",
    "Network",
    "SourcePlan",
    "SourceRule",
    "SourceStats",
    "Traffic",
    "block_changes",
    "candidates",
    "canonical",
    "parse_network",
    "plan_sources",
    "summary_markdown",
    "validate_addresses",
]

#: Sources kept in a traffic record (the median is over all of them; offenders are always near the top).
SHOWN_SOURCES = 50
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# nginx `combined`: $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
# "$http_referer" "$http_user_agent", then any extra fields (the sandbox adds `rt=` and `limit_req=`).
_LINE = re.compile(r'^(?P<addr>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" '
                   r'(?P<status>\d{3}) (?P<bytes>\d+|-)(?P<rest>.*)$')
_LIMIT = re.compile(r"\blimit_req=(\S+)")
_TIME = "%d/%b/%Y:%H:%M:%S %z"


class SourceRule(BaseModel):
    """The target's rule for an abusive source (inventory `[edge.rule]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Seed 003's panel: "last 5 min".
    window_s: float = Field(default=300, ge=10, le=86_400)
    #: Seed 003: "single IP ≥ 10× the median".
    threshold_x_median: float = Field(default=10, ge=2, le=100_000)
    #: And at least this many requests in the window: 10× a quiet median is not an attack.
    min_requests: int = Field(default=100, ge=1)
    #: A block lifts itself after this long unless the run says otherwise.
    default_expiry_s: float = Field(default=3600, ge=1, le=30 * 86_400)
    max_expiry_s: float = Field(default=7 * 86_400, ge=1, le=30 * 86_400)
    #: More offenders than this is a distributed attack: a CDN/WAF job, not a deny list's; refused.
    max_addresses: int = Field(default=10, ge=1, le=1000)
    #: The broadest network an operator may name (a /16 of IPv4 is 65 536 clients).
    min_prefix_v4: int = Field(default=24, ge=1, le=32)
    min_prefix_v6: int = Field(default=48, ge=1, le=128)
    #: Never blocked, never in a blocked network: the gateway's and load balancer's own addresses,
    #: the platform's own clients (in the sandbox: 127.0.0.1, the stack, Prefect and the tests).
    never_block: list[str] = Field(min_length=1)

    @field_validator("never_block")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        return [canonical(parse_network(a, "never_block entry")) for a in v]

    @property
    def protected(self) -> list[Network]:
        return [parse_network(a, "never_block entry") for a in self.never_block]


def parse_network(text: str, what: str = "address") -> Network:
    """An address (`203.0.113.7`) or network (`203.0.113.0/24`); an IPv4-mapped IPv6 address is its IPv4.
    Host bits set (`203.0.113.7/24`) are refused: say which network you mean."""
    if not isinstance(text, str) or not text.strip() or len(text) > 64:
        raise BadInputError(f"{what} {str(text)[:64]!r} is not an IP address or network")
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise BadInputError(f"{what} {text!r} is not an IP address or network: {exc}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None \
            and net.prefixlen == 128:
        return ipaddress.ip_network(net.network_address.ipv4_mapped)
    return net


def canonical(net: Network) -> str:
    """One address as itself (`203.0.113.7`), a network with its prefix (`203.0.113.0/24`)."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def validate_addresses(raw: list[str], rule: SourceRule, protected: list[Network]) -> list[str]:
    """The operator's addresses, canonical and de-duplicated; BadInputError naming the first bad one."""
    out: list[str] = []
    for text in raw:
        net = parse_network(text)
        if net.prefixlen == 0:
            raise BadInputError(f"{text!r} is every address there is: blocking it would refuse every client")
        floor = rule.min_prefix_v4 if net.version == 4 else rule.min_prefix_v6
        if net.prefixlen < floor:
            raise BadInputError(f"{text!r} is broader than /{floor}, the widest the target's rule allows "
                                f"({net.num_addresses} addresses)")
        _refuse_protected(net, protected, text)
        if canonical(net) not in out:
            out.append(canonical(net))
    if len(out) > rule.max_addresses:
        raise BadInputError(f"{len(out)} addresses named; the target's rule blocks at most {rule.max_addresses} "
                            "in one run")
    return out


def _refuse_protected(net: Network, protected: list[Network], text: str) -> None:
    for p in protected:
        if p.version == net.version and net.overlaps(p):
            raise BadInputError(f"{text!r} covers {canonical(p)}, which is never blocked (the gateway's or load "
                                "balancer's own address, or a client the platform itself uses)")


def _protected_by(net: Network, protected: list[Network]) -> Network | None:
    return next((p for p in protected if p.version == net.version and net.overlaps(p)), None)


class SourceStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    address: str
    requests: int
    #: Requests the rate limiter marked (nginx's `$limit_req_status` REJECTED or REJECTED_DRY_RUN).
    rate_limited: int = 0
    #: Requests answered 403 (already denied, or refused by a route).
    refused: int = 0
    top_path: str = ""
    top_path_requests: int = 0


class Traffic(BaseModel):
    """One window of the access log, tallied per source."""

    model_config = ConfigDict(frozen=True)

    since: datetime
    until: datetime
    lines_read: int
    lines_in_window: int
    unparsed: int
    #: The oldest line read; later than `since` with a full read: the tail did not reach back far enough.
    oldest_read: datetime | None
    truncated: bool
    source_count: int
    median: float
    #: The busiest sources, at most SHOWN_SOURCES.
    sources: list[SourceStats]

    @property
    def window_s(self) -> float:
        return (self.until - self.since).total_seconds()

    def x_median(self, requests: int) -> float | None:
        return round(requests / self.median, 1) if self.median else None


class AccessLogTally:
    """Counts an access log window as lines arrive (a large log is never held in memory)."""

    def __init__(self, until: datetime, window_s: float, max_lines: int | None = None) -> None:
        self.until = until.astimezone(UTC)
        self.since = self.until - timedelta(seconds=window_s)
        self.max_lines = max_lines
        self.lines_read = self.in_window = self.unparsed = 0
        self.oldest: datetime | None = None
        self._requests: Counter[str] = Counter()
        self._limited: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._paths: dict[str, Counter[str]] = {}
        self._times: dict[str, datetime | None] = {}
        self._partial = ""

    def feed(self, text: str) -> None:
        """Any chunk of the log; a line cut between chunks is joined with the next chunk."""
        text = self._partial + text
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.line(line)

    def line(self, line: str) -> None:
        line = line.rstrip("\r")
        if not line:
            return
        self.lines_read += 1
        match = _LINE.match(line)
        at = self._time(match["time"]) if match else None
        if match is None or at is None:
            self.unparsed += 1
            return
        if self.oldest is None or at < self.oldest:
            self.oldest = at
        if not self.since <= at <= self.until:
            return
        self.in_window += 1
        addr = match["addr"]
        self._requests[addr] += 1
        if match["status"] == "403":
            self._refused[addr] += 1
        limit = _LIMIT.search(match["rest"])
        if limit and limit[1].startswith("REJECTED"):
            self._limited[addr] += 1
        parts = match["request"].split(" ")
        path = parts[1].split("?", 1)[0] if len(parts) >= 2 else match["request"]
        self._paths.setdefault(addr, Counter())[path[:200]] += 1

    def _time(self, text: str) -> datetime | None:
        if text not in self._times:
            try:
                self._times[text] = datetime.strptime(text, _TIME).astimezone(UTC)
            except ValueError:
                self._times[text] = None
            if len(self._times) > 100_000:  # one entry per second of log: bounded anyway
                self._times.clear()
        return self._times.get(text)

    def traffic(self) -> Traffic:
        if self._partial:
            self.line(self._partial)
            self._partial = ""
        counts = list(self._requests.values())
        shown = []
        for addr, n in self._requests.most_common(SHOWN_SOURCES):
            path, hits = (self._paths[addr].most_common(1) or [("", 0)])[0]
            shown.append(SourceStats(address=addr, requests=n, rate_limited=self._limited[addr],
                                     refused=self._refused[addr], top_path=path, top_path_requests=hits))
        full_read = self.max_lines is not None and self.lines_read >= self.max_lines
        return Traffic(
            since=self.since, until=self.until, lines_read=self.lines_read, lines_in_window=self.in_window,
            unparsed=self.unparsed, oldest_read=self.oldest,
            truncated=bool(full_read and self.oldest is not None and self.oldest > self.since),
            source_count=len(counts), median=float(statistics.median(counts)) if counts else 0.0, sources=shown,
        )


def _offenders(traffic: Traffic, rule: SourceRule) -> list[SourceStats]:
    floor = max(rule.min_requests, rule.threshold_x_median * traffic.median)
    return [s for s in traffic.sources if s.requests >= floor]


def candidates(traffic: Traffic, rule: SourceRule, explicit: list[str] | None) -> list[str]:
    """The addresses a plan may block: the operator's, or the offenders the log shows (malformed ones,
    a `-` or a unix socket, dropped) — whose current block state the caller then reads."""
    if explicit:
        return list(explicit)
    out = []
    for s in _offenders(traffic, rule):
        try:
            out.append(canonical(parse_network(s.address)))
        except BadInputError:
            continue
    return out


class Block(BaseModel):
    model_config = ConfigDict(frozen=True)

    address: str
    requests: int | None = None
    x_median: float | None = None
    why: str
    #: For a block already in place: when it lifts by itself (None: never).
    expires_at: str | None = None


class SourcePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule: SourceRule
    traffic: Traffic
    expiry_s: float
    #: True when the operator named the addresses; False when the rule picked them from the log.
    explicit: bool
    block: list[Block]
    already: list[Block]
    #: Over the rule but inside a never_block network: never blocked.
    spared: list[Block]

    def view(self, incident_id: str, target: str, edge: str) -> dict[str, Any]:
        """What the approval binds: who is blocked, where, for how long — not the counts, which move."""
        return {"incident_id": incident_id, "target": target, "edge": edge, "expiry_s": self.expiry_s,
                "block": [b.address for b in self.block]}


def plan_sources(traffic: Traffic, rule: SourceRule, *, blocked: dict[str, dict[str, Any]],
                 explicit: list[str] | None, expiry_s: float, protected: list[Network]) -> SourcePlan:
    """Split the candidates into to-block, already blocked and spared. `blocked` is the edge's current
    entries (address → {"expires_at": …}); `explicit` already passed `validate_addresses`."""
    if not 0 < expiry_s <= rule.max_expiry_s:
        raise BadInputError(f"expiry_s {expiry_s:g} is outside 1-{rule.max_expiry_s:g} s (the target's rule)")
    by_addr: dict[str, SourceStats] = {}
    for s in traffic.sources:
        try:
            by_addr.setdefault(canonical(parse_network(s.address)), s)
        except BadInputError:
            continue
    block: list[Block] = []
    already: list[Block] = []
    spared: list[Block] = []
    if explicit:
        picked = [(a, by_addr.get(a), "named by the operator") for a in explicit]
    else:
        picked = []
        for s in _offenders(traffic, rule):
            try:
                addr = canonical(parse_network(s.address))
            except BadInputError:
                continue
            ratio = traffic.x_median(s.requests)
            why = (f"{s.requests} requests in {traffic.window_s:g} s: {ratio:g}× the median of {traffic.median:g} "
                   f"(rule: ≥ {rule.threshold_x_median:g}× and ≥ {rule.min_requests})")
            picked.append((addr, s, why))
    for addr, stats, why in picked:
        requests = stats.requests if stats else None
        item = Block(address=addr, requests=requests, why=why,
                     x_median=traffic.x_median(requests) if requests is not None else None)
        guard = _protected_by(parse_network(addr), protected)
        if guard is not None:
            spared.append(item.model_copy(update={"why": f"{why}; never blocked: inside {canonical(guard)}"}))
        elif addr in blocked:
            already.append(item.model_copy(update={"expires_at": (blocked[addr] or {}).get("expires_at")}))
        else:
            block.append(item)
    if len(block) > rule.max_addresses:
        raise BadInputError(f"{len(block)} sources are over the rule, more than the {rule.max_addresses} one run may "
                            "block: a distributed attack is for the CDN or WAF; name the addresses to block")
    return SourcePlan(rule=rule, traffic=traffic, expiry_s=expiry_s, explicit=bool(explicit), block=block,
                      already=already, spared=spared)


def block_changes(plan: SourcePlan, *, reason: str, edge: str) -> list[LeverChange]:
    """One change per address, each recorded in the change log and undone by `recover`."""
    return [edge_block_change(b.address, expiry_s=plan.expiry_s, reason=reason, edge=edge) for b in plan.block]


def _ratio(b: Block | SourceStats, traffic: Traffic) -> str:
    requests = b.requests
    if requests is None:
        return "—"
    ratio = traffic.x_median(requests)
    return f"{ratio:g}×" if ratio is not None else "—"


def summary_markdown(incident_id: str, target: str, plan: SourcePlan, edge: str) -> str:
    t = plan.traffic
    rule = plan.rule
    lines = [
        f"### block-source on `{target}` for {incident_id}", "",
        f"Access log {t.since:%H:%M:%S}–{t.until:%H:%M:%S} UTC ({t.window_s:g} s): {t.lines_in_window} requests "
        f"from {t.source_count} source(s), median {t.median:g} per source. Rule: ≥ {rule.threshold_x_median:g}× the "
        f"median and ≥ {rule.min_requests} requests (seed 003: \"single IP ≥ 10× the median\").", "",
    ]
    if t.truncated:
        lines += [f"*The log's last {t.lines_read} lines reach back only to {t.oldest_read:%H:%M:%S}: the window "
                  "is partly read; counts are a lower bound.*", ""]
    lines += ["| source | requests | × median | rate-limited | 403 | most hit path |", "|---|---|---|---|---|---|"]
    lines += [f"| {md_inline(s.address)} | {s.requests} | {_ratio(s, t)} | {s.rate_limited} | {s.refused} | "
              f"{md_inline(s.top_path, limit=80)} ({s.top_path_requests}) |" for s in t.sources[:10]]
    lines += ["", f"**Block** at {edge}, each lifting itself after {plan.expiry_s:g} s:", ""]
    lines += [f"- `{b.address}` — {md_inline(b.why)}" for b in plan.block] or ["- nothing"]
    if plan.already:
        lines += ["", "Already blocked (left as they are):", ""]
        lines += [f"- `{b.address}` until {b.expires_at or 'lifted by hand'}" for b in plan.already]
    if plan.spared:
        lines += ["", "Over the rule but never blocked:", ""]
        lines += [f"- `{b.address}` — {md_inline(b.why)}" for b in plan.spared]
    return "\n".join(lines) + "\n"
