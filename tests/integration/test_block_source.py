"""block-source against the sandbox gateway: one abusive source on 127.0.0.2 among normal clients, the
access log read over SSH, the deny list written once, verified as clients see it, lifted by recover;
through the worker, approvals answered via the resume API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow
from prefect.deployments import run_deployment

from flows.block_source import block_source
from remediation.domain.levers import AppliedChange, edge_block_change
from remediation.errors import BadInputError
from remediation.target.edge import HostCommandEdge
from remediation.target.inventory import load_target
from sandbox.abuse import ABUSIVE, burst, normal_clients
from sandbox.edge import access_log_path
from sandbox.stack.info import StackInfo
from tasks.admin_api import apply_lever_change
from tasks.edge import read_edge_blocks, set_edge_block
from tests.integration.flow_runs import ONCALL, SRE, answer, answer_until_done, finish, incident, result, start

pytestmark = pytest.mark.integration
BLOCK, RECOVER = "block-source/block-source", "recover/recover"
DENY = "/api/v1/edge/deny"


def _admin(stack: StackInfo) -> httpx.Client:
    token = stack.admin_tokens["super_admin"].get_secret_value()
    return httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {token}"}, timeout=5)


def _denied(stack: StackInfo) -> list[str]:
    with _admin(stack) as gw:
        return [e["address"] for e in gw.get(DENY).json()["entries"]]


def _status_from(stack: StackInfo, source: str) -> int:
    with httpx.Client(base_url=stack.gateway_url, timeout=5,
                      transport=httpx.HTTPTransport(local_address=source)) as client:
        return client.get("/health").status_code


def _writes(log: Path, offset: int, address: str) -> dict[str, int]:
    """Deny-list writes for `address` in the gateway's access log since `offset`, by method."""
    with log.open() as f:
        f.seek(offset)
        lines = [line for line in f if f'{DENY}/{address} HTTP' in line]
    return {m: sum(f'"{m} {DENY}/{address} ' in line for line in lines) for m in ("PUT", "DELETE")}


@pytest.fixture
def abuse(stack: StackInfo) -> Iterator[dict[str, Any]]:
    """127.0.0.2 not blocked; 200 requests from it, 5 each from 127.0.0.1 and five more normal clients."""
    log = access_log_path(stack.home)
    before = log.stat().st_size
    with _admin(stack) as gw:
        gw.delete(f"{DENY}/{ABUSIVE}")
    # The gateway logs a request once it has answered it (as nginx does): counting starts after this
    # DELETE's own line, or a late line would count as one of the run's writes.
    deadline = time.monotonic() + 10
    while _writes(log, before, ABUSIVE)["DELETE"] < 1:
        assert time.monotonic() < deadline, "the gateway never logged the fixture's DELETE"
        time.sleep(0.02)
    offset = log.stat().st_size
    sent = {"abusive": burst(stack.gateway_url, ABUSIVE, 200), "normal": normal_clients(stack.gateway_url, 6, 5)}
    yield {"log": log, "offset": offset, **sent}
    with _admin(stack) as gw:
        gw.delete(f"{DENY}/{ABUSIVE}")


def test_dry_run_bad_input_reject_then_blocked_once_verified_and_lifted_by_recover(
    stack: StackInfo, deployments: list[str], abuse: dict[str, Any]
) -> None:
    assert abuse["abusive"][404] == 200 and _status_from(stack, ABUSIVE) == 200
    inc = incident()
    # Bad input: refused before anything is read — by the run form's schema, or by the flow itself.
    with pytest.raises(Exception, match="addresses"):
        run_deployment(BLOCK, parameters={"incident_id": inc, "initiated_by": ONCALL, "addresses": ["1.2.3.4; reboot"]},
                       timeout=0)
    with pytest.raises(BadInputError, match="every address"):
        block_source(incident_id=inc, initiated_by=ONCALL, addresses=[ABUSIVE, "0.0.0.0/0"], dry_run=False)
    # The same checks without a flow run each (tests/unit/test_source_plan.py has the whole list).
    for bad, why in (("::/0", "every address"), ("127.0.0.1", "covers 127.0.0.1"), ("999.1.1.1", "not an IP")):
        with pytest.raises(BadInputError, match=why):
            block_source.fn(incident_id=inc, initiated_by=ONCALL, addresses=[ABUSIVE, bad], dry_run=False)
    assert ABUSIVE not in _denied(stack)

    dry = finish(start(BLOCK, incident_id=inc, initiated_by=ONCALL))
    assert dry.state is not None and dry.state.is_completed(), dry.state and dry.state.message
    assert result(dry)["outcome"] == "dry-run" and result(dry)["would_block"] == [ABUSIVE]

    rejected = answer_until_done(start(BLOCK, incident_id=inc, initiated_by=ONCALL, dry_run=False), decision="reject")
    assert rejected.state is not None and result(rejected)["outcome"] == "reject"
    assert "nothing changed" in str(rejected.state.message)
    assert ABUSIVE not in _denied(stack) and _status_from(stack, ABUSIVE) == 200

    run = answer_until_done(start(BLOCK, incident_id=inc, initiated_by=ONCALL, dry_run=False, expiry_s=900))
    out = result(run)
    assert run.state is not None and run.state.is_completed(), (run.state and run.state.message, out)
    assert out["blocked"] == [{"address": ABUSIVE, "outcome": "applied", "path": "gateway-deny-list",
                               "expiry_s": "900"}]
    [check] = out["verification"]["checks"]
    assert check["listed"] and check["probe"]["http_status"] == 403 and out["verification"]["normal_client"][
        "http_status"] == 200
    assert out["evidence_before"].startswith("s3://")
    # As the clients see it: the offender is refused, a normal client is not.
    assert _status_from(stack, ABUSIVE) == 403 and _status_from(stack, "127.0.0.1") == 200
    assert _status_from(stack, "127.0.1.1") == 200

    # A re-run finds it blocked and asks nobody; the apply task retried after its write sends nothing.
    again = finish(start(BLOCK, incident_id=inc, initiated_by=ONCALL, dry_run=False))
    assert again.state is not None and result(again)["outcome"] == "already-in-place", again.state
    inv = load_target("sandbox")
    change = edge_block_change(ABUSIVE, expiry_s=900, reason=f"block-source {inc}", edge="the gateway's deny list")

    @flow(name="pytest-retry-block")
    def retried() -> AppliedChange:
        return apply_lever_change(inv, change, "0" * 64)

    assert retried().outcome == "already-in-place"
    assert _writes(abuse["log"], abuse["offset"], ABUSIVE) == {"PUT": 1, "DELETE": 0}

    lifted = start(RECOVER, incident_id=inc, initiated_by=ONCALL, dry_run=False)
    answer(lifted, decision="approve", approver=SRE, reason="abuse over")
    rec = finish(lifted, timeout_s=240)
    out = result(rec)
    assert [(u["change"]["lever"], u["outcome"]) for u in out["undone"]] == [("edge-block", "reverted")]
    assert out["effects"][0]["ok"] and out["effects"][0]["checks"][0]["probe"]["http_status"] == 200
    assert rec.state is not None and rec.state.is_completed(), (rec.state and rec.state.message)
    assert ABUSIVE not in _denied(stack) and _status_from(stack, ABUSIVE) == 200
    assert _writes(abuse["log"], abuse["offset"], ABUSIVE) == {"PUT": 1, "DELETE": 1}


def test_a_block_lifts_itself_at_its_expiry(stack: StackInfo) -> None:
    source = "127.0.0.3"
    with _admin(stack) as gw:
        put = gw.put(f"{DENY}/{source}", json={"expires_in_s": 1.5, "reason": "pytest expiry"})
        assert put.status_code == 200, put.text
        refused = [gw.put(f"{DENY}/{bad}", json={}).status_code for bad in ("0.0.0.0/0", "127.0.0.0/8", "::/0")]
    assert refused == [422, 422, 422], "every address, and the gateway's own, are refused by the gateway too"
    assert _status_from(stack, source) == 403
    time.sleep(1.8)
    assert _status_from(stack, source) == 200 and source not in _denied(stack)


def test_a_host_firewall_is_driven_by_argument_lists_over_ssh(stack: StackInfo) -> None:
    """The production kind against the sandbox's real sshd: each operation the inventory's argument list with
    the address substituted inside one argument (a file per blocked address stands in for an nft set)."""
    rules = stack.home / "pytest-firewall"
    rules.mkdir(exist_ok=True)
    base = load_target("sandbox")
    assert base.edge is not None
    firewall = HostCommandEdge(kind="host-command", host="deploy", block=["touch", f"{rules}/{{address}}.deny"],
                               unblock=["rm", "-f", f"{rules}/{{address}}.deny"],
                               check=["test", "-e", f"{rules}/{{address}}.deny"])
    inv = base.model_copy(update={"edge": base.edge.model_copy(update={"block_at": firewall})})
    address = "198.51.100.7"
    block = edge_block_change(address, expiry_s=60, reason="pytest", edge=firewall.describe())
    assert set_edge_block(inv, block) == "host-command"
    assert list(read_edge_blocks(inv, [address, "203.0.113.9"])[0]) == [address]
    assert (rules / f"{address}.deny").exists()
    unblock = block.model_copy(update={"before": block.after, "after": block.before, "undo": True})
    set_edge_block(inv, unblock)
    assert read_edge_blocks(inv, [address])[0] == {}
