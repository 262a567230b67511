"""Which sources block-source blocks: the access log tallied, seed 003's median rule, the refusals that
come before anything is touched, the plan's binding, and how recover undoes a block. No services."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from remediation.clients.edge import substitute
from remediation.domain.levers import AppliedChange, LeverState, current_value, drifted, plan_recover
from remediation.domain.plan import plan_hash
from remediation.domain.sources import (
    AccessLogTally,
    SourcePlan,
    SourceRule,
    Traffic,
    block_changes,
    candidates,
    plan_sources,
    summary_markdown,
    validate_addresses,
)
from remediation.errors import BadInputError
from remediation.target.edge import EdgeConfig, HostCommandEdge
from sandbox.edge import DenyList, EdgeMiddleware, RateLimiter

NOW = datetime(2026, 11, 30, 3, 10, tzinfo=UTC)
RULE = SourceRule(never_block=["127.0.0.1", "::1"], min_requests=100)
PROTECTED = [*RULE.protected, ipaddress.ip_network("10.0.0.1")]  # the gateway's own address


def _line(addr: str, ago_s: float = 10, path: str = "/api/auth/login?u=x", status: int = 404,
          limit: str = "PASSED") -> str:
    stamp = (NOW - timedelta(seconds=ago_s)).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return (f'{addr} - - [{stamp}] "POST {path} HTTP/1.1" {status} 22 "-" "curl/8" rt=0.001 '
            f"limit_req={limit}")


def _traffic(counts: dict[str, int]) -> Traffic:
    tally = AccessLogTally(NOW, RULE.window_s)
    tally.feed("".join(_line(a) + "\n" for a, n in counts.items() for _ in range(n)))
    return tally.traffic()


def _plan(counts: dict[str, int], blocked: dict[str, dict[str, object]] | None = None,
          explicit: list[str] | None = None) -> SourcePlan:
    return plan_sources(_traffic(counts), RULE, blocked=blocked or {}, explicit=explicit, expiry_s=3600,
                        protected=PROTECTED)


NORMAL = {f"198.51.100.{i}": 20 for i in range(1, 9)}


def test_the_log_is_tallied_per_source_for_the_window_only() -> None:
    tally = AccessLogTally(NOW, 300, max_lines=1000)
    text = "\n".join([
        _line("203.0.113.7", limit="REJECTED_DRY_RUN"), _line("203.0.113.7", status=403),
        _line("203.0.113.7", path="/health"), _line("198.51.100.1", ago_s=400),  # before the window
        "garbage that is no access log line", _line("198.51.100.2", ago_s=-5),  # from the future: out
    ]) + "\n"
    # A line cut between two chunks of SSH output is joined again.
    cut = len(text) // 2
    tally.feed(text[:cut])
    tally.feed(text[cut:])
    t = tally.traffic()
    assert (t.lines_read, t.lines_in_window, t.unparsed, t.source_count) == (6, 3, 1, 1)
    [s] = t.sources
    assert (s.address, s.requests, s.rate_limited, s.refused) == ("203.0.113.7", 3, 1, 1)
    assert (s.top_path, s.top_path_requests) == ("/api/auth/login", 2), "query strings are dropped"
    assert not t.truncated and t.oldest_read == NOW - timedelta(seconds=400)


def test_a_tail_that_does_not_reach_back_across_the_window_says_so() -> None:
    tally = AccessLogTally(NOW, 300, max_lines=3)
    tally.feed("".join(_line("203.0.113.7", ago_s=5) + "\n" for _ in range(3)))
    t = tally.traffic()
    assert t.truncated
    assert "partly read" in summary_markdown("INC-1", "sandbox", plan_sources(
        t, RULE, blocked={}, explicit=None, expiry_s=60, protected=PROTECTED), "the edge")


def test_seed_003s_rule_ten_times_the_median_and_a_floor() -> None:
    plan = _plan({**NORMAL, "203.0.113.7": 400, "203.0.113.8": 150, "203.0.113.9": 199})
    # median of 8×20, 150, 199, 400 is 20: 200 is the bar; 199 is under it, 150 too.
    assert [b.address for b in plan.block] == ["203.0.113.7"]
    assert plan.block[0].x_median == 20.0 and "20× the median of 20" in plan.block[0].why
    # Ten times a quiet median is not an attack: under min_requests nobody is chosen.
    quiet = _plan({**{f"198.51.100.{i}": 2 for i in range(1, 9)}, "203.0.113.7": 90})
    assert quiet.block == []
    # One abuser among two sources can never be 10x a median that includes itself.
    assert _plan({"198.51.100.1": 5, "203.0.113.7": 5000}).block == []


def test_an_offender_the_platform_itself_is_spared_and_one_already_blocked_is_left() -> None:
    expires = (NOW + timedelta(hours=1)).isoformat()
    plan = _plan({**NORMAL, "127.0.0.1": 5000, "203.0.113.7": 400, "203.0.113.9": 300},
                 blocked={"203.0.113.9": {"expires_at": expires}})
    assert [b.address for b in plan.block] == ["203.0.113.7"]
    assert [(b.address, b.expires_at) for b in plan.already] == [("203.0.113.9", expires)]
    assert [b.address for b in plan.spared] == ["127.0.0.1"] and "never blocked: inside 127.0.0.1" in plan.spared[0].why
    assert candidates(_traffic({**NORMAL, "-": 5000}), RULE, None) == [], "a `-` source is not an address"


@pytest.mark.parametrize(("bad", "why"), [
    ("0.0.0.0/0", "every address"), ("::/0", "every address"), ("10.0.0.0/8", "broader than /24"),
    ("127.0.0.1", "covers 127.0.0.1"), ("127.0.0.0/24", "covers 127.0.0.1"), ("::ffff:127.0.0.1", "covers 127.0.0.1"),
    ("::1", "covers ::1"), ("10.0.0.1", "covers 10.0.0.1"), ("10.0.0.0/30", "covers 10.0.0.1"),
    ("999.1.1.1", "not an IP address"), ("10.0.0.5/24", "host bits set"), ("evil; rm -rf /", "not an IP address"),
    ("", "not an IP address"),
])
def test_bad_addresses_are_refused_before_anything_is_read(bad: str, why: str) -> None:
    with pytest.raises(BadInputError, match=why):
        validate_addresses(["203.0.113.7", bad], RULE, PROTECTED)


def test_named_addresses_are_canonical_and_bounded() -> None:
    assert validate_addresses(["203.0.113.7", "2001:db8::1", "203.0.113.7", "198.51.100.0/24"], RULE, PROTECTED) \
        == ["203.0.113.7", "2001:db8::1", "198.51.100.0/24"]
    with pytest.raises(BadInputError, match="at most 10"):
        validate_addresses([f"203.0.113.{i}" for i in range(11)], RULE, PROTECTED)
    plan = _plan({**NORMAL, "203.0.113.7": 400}, explicit=["198.51.100.0/24"])
    assert [(b.address, b.why) for b in plan.block] == [("198.51.100.0/24", "named by the operator")]
    with pytest.raises(BadInputError, match="more than the 2 one run may block"):
        plan_sources(_traffic({**NORMAL, **{f"203.0.113.{i}": 900 for i in range(3)}}),
                     RULE.model_copy(update={"max_addresses": 2}), blocked={}, explicit=None, expiry_s=60,
                     protected=PROTECTED)
    with pytest.raises(BadInputError, match="expiry_s"):
        plan_sources(_traffic(NORMAL), RULE, blocked={}, explicit=None, expiry_s=10**9, protected=PROTECTED)


def test_the_approval_binds_addresses_and_expiry_not_counts() -> None:
    a = _plan({**NORMAL, "203.0.113.7": 400})
    b = _plan({**NORMAL, "203.0.113.7": 900})
    assert plan_hash(a.view("INC-1", "sandbox", "gateway-deny-list")) == \
        plan_hash(b.view("INC-1", "sandbox", "gateway-deny-list"))
    longer = a.model_copy(update={"expiry_s": 60})
    assert plan_hash(longer.view("INC-1", "sandbox", "gateway-deny-list")) != \
        plan_hash(a.view("INC-1", "sandbox", "gateway-deny-list"))


def test_recover_lifts_a_block_still_in_place_and_leaves_an_expired_one() -> None:
    [change] = block_changes(_plan({**NORMAL, "203.0.113.7": 400}), reason="block-source INC-1", edge="the edge")
    assert (change.lever, change.resource, change.extra["address"]) == ("edge-block", "edge-203.0.113.7",
                                                                       "203.0.113.7")
    applied = AppliedChange(change=change, outcome="applied", path="gateway-deny-list", at=NOW)
    base: dict[str, Any] = dict(maintenance=None, deposit_maintenance_status=None, payment_policy=None,
                                provider_ingress=None)
    held = LeverState(**base, edge_blocks={"203.0.113.7": {"expires_at": None}})
    [undo] = plan_recover([applied], held, note="recovered INC-1")
    assert undo.undo and undo.after == {"blocked": False}
    assert undo.extra == {"address": "203.0.113.7", "expiry_s": "", "reason": "recovered INC-1"}
    expired = LeverState(**base, edge_blocks={})
    assert plan_recover([applied], expired, note="n") == [] and drifted([applied], expired) == []
    # A firewall read address by address: an address it did not read is unknown, not "not blocked".
    partial = LeverState(**base, edge_blocks={}, edge_read=["198.51.100.1"])
    with pytest.raises(LookupError, match="not read"):
        current_value(change, partial)


def test_a_host_firewall_is_argument_lists_with_the_address_inside_one_argument() -> None:
    nft = ["nft", "add", "element", "inet", "filter", "rp_deny", "{ {address} timeout {expiry_s}s }"]
    assert substitute(nft, "203.0.113.7", 3600)[-1] == "{ 203.0.113.7 timeout 3600s }"
    with pytest.raises(BadInputError):
        substitute(nft, "1.2.3.4; reboot")
    ok = {"kind": "host-command", "host": "edge", "block": nft, "unblock": ["nft", "delete", "{ {address} }"],
          "check": ["nft", "get", "{ {address} }"]}
    HostCommandEdge.model_validate(ok)
    for bad in ({"block": ["ufw", "deny", "from"]}, {"check": ["nft", "get", "{adress}"]}):
        with pytest.raises(ValidationError):
            HostCommandEdge.model_validate({**ok, **bad})
    with pytest.raises(ValidationError, match="never_block"):
        EdgeConfig.model_validate({"block_at": {"kind": "gateway-deny-list"}, "access_log": {"path": "/var/log/a"},
                                   "rule": {"never_block": ["not-an-address"]}})


def test_the_sandbox_gateways_access_log_line_is_what_the_tally_reads(tmp_path: Path) -> None:
    scope = {"method": "POST", "raw_path": b"/api/auth/login", "query_string": b"a=1", "http_version": "1.1",
             "headers": [(b"user-agent", b'evil"agent')]}
    line = EdgeMiddleware._line(scope, "127.0.0.2", {"status": 403, "bytes": 47}, "-", time.perf_counter())
    assert line.split(" ")[0] == "127.0.0.2" and '"evil\\x22agent"' in line  # awk '{print $1}' works on it
    tally = AccessLogTally(datetime.now(UTC) + timedelta(seconds=1), 60)
    tally.line(line)
    [s] = tally.traffic().sources
    assert (s.address, s.requests, s.refused, s.top_path) == ("127.0.0.2", 1, 1, "/api/auth/login")
    limiter = RateLimiter(rate_per_s=1, burst=2, enforce=False)
    assert [limiter.check("127.0.0.2") for _ in range(3)] == ["PASSED", "PASSED", "REJECTED_DRY_RUN"]


def test_the_sandbox_deny_list_survives_a_restart_and_expires(tmp_path: Path) -> None:
    path = tmp_path / "deny.json"
    deny = DenyList(path, "127.0.0.1")
    for bad in ("0.0.0.0/0", "::/0", "127.0.0.0/8", "nope"):
        with pytest.raises(ValueError):
            deny.check_address(bad)
    deny.put(deny.check_address("127.0.0.2"), None, "INC-1", "super_admin")
    deny.put(deny.check_address("198.51.100.0/24"), 0.2, "INC-1", "super_admin")
    again = DenyList(path, "127.0.0.1")
    assert again.denied("127.0.0.2") and again.denied("198.51.100.9") and not again.denied("127.0.0.1")
    time.sleep(0.3)
    assert not again.denied("198.51.100.9") and [e["address"] for e in again.entries()] == ["127.0.0.2"]
    assert again.delete(again.check_address("127.0.0.2")) and not again.denied("127.0.0.2")


def test_recovers_plan_names_a_block_that_expired_by_itself() -> None:
    from flows.recover import _lifted_already

    [change] = block_changes(_plan({**NORMAL, "203.0.113.7": 400}), reason="r", edge="the edge")
    applied = AppliedChange(change=change, outcome="applied", path="gateway-deny-list", at=NOW)
    base: dict[str, Any] = dict(maintenance=None, deposit_maintenance_status=None, payment_policy=None,
                                provider_ingress=None)
    assert _lifted_already([applied], LeverState(**base, edge_blocks={})) == ["203.0.113.7"]
    held = LeverState(**base, edge_blocks={"203.0.113.7": {}})
    assert _lifted_already([applied], held) == []
