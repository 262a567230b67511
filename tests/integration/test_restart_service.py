"""restart-service against the sandbox's two wallet instances behind the gateway, through the worker, approvals
answered via the resume API: refused input, a dry run and a reject that change nothing, a crashloop that stops
the run before the healthy instance is touched, its Retry once fixed, a Retry of the finished run that restarts
nothing twice; and seed 003's "API down" respond loop on a hung instance under live deposits."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.states import AwaitingRetry

from flows.restart_service import restart_service
from remediation.errors import BadInputError
from remediation.flowkit.resume import pending_step, wait_for_incident_pause
from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from sandbox.traffic import Traffic, seeded_players
from sandbox.wallet import REQUIRED_SETTING
from tests.integration.flow_runs import (
    LEAD,
    ONCALL,
    answer,
    answer_until_done,
    confirm_initiator,
    finish,
    incident,
    result,
    start,
)

pytestmark = pytest.mark.integration
RESTART = "restart-service/restart-service"


def _control(*args: str) -> str:
    script = Stack().host.service_script
    return subprocess.run([str(script), *args], check=True, capture_output=True, text=True).stdout.strip()


def _statuses() -> dict[str, str]:
    return {name: _control("status", name) for name in ("wallet", "wallet-2")}


def _fault(name: str, state: str) -> None:
    from sandbox.stack import service_control

    stack = Stack()
    act = service_control.crashloop if name == "crashloop" else service_control.hang
    act(stack, "wallet-2", state == "on")


@pytest.fixture
def wallets(stack: StackInfo) -> Iterator[Stack]:
    """Both wallet instances serving before and after, whatever the test broke."""
    st = Stack()
    yield st
    st.host.break_wallet_env(False)
    runner = st.services(stack.platform_dsn.get_secret_value())
    for name in ("wallet", "wallet-2"):
        if not runner.healthy(name):
            runner.restart(name)


def test_refused_rejected_and_a_crashloop_touch_nothing_else_then_retries_restart_each_instance_once(
    wallets: Stack, stack: StackInfo, deployments: list[str],
) -> None:
    inc = incident()
    before = _statuses()
    with pytest.raises(Exception, match="service"):
        run_deployment(RESTART, parameters={"incident_id": inc, "initiated_by": ONCALL, "service": "Bad Name"},
                       timeout=0)
    # (An instance the service does not have: tests/unit/test_restart_plan.py.)
    for bad, why in (({"service": "ledger"}, "has no service 'ledger'"),
                     ({"service": "gateway"}, "leaves no healthy instance of gateway")):
        with pytest.raises(BadInputError, match=why):
            restart_service(incident_id=inc, initiated_by=ONCALL, dry_run=False, **bad)  # type: ignore[arg-type]

    dry = finish(start(RESTART, incident_id=inc, initiated_by=ONCALL, service="wallet"))
    assert result(dry) == {"outcome": "dry-run", "would_restart": ["wallet", "wallet-2"]}
    rejected = answer_until_done(start(RESTART, incident_id=inc, initiated_by=ONCALL, service="wallet",
                                       dry_run=False), decision="reject")
    assert rejected.state is not None and rejected.state.is_completed()
    assert result(rejected)["outcome"] == "reject" and _statuses() == before, "nothing restarted"

    # Seed 002 §3.1: the setting is gone, wallet-2 exits at every start; the gateway sends everything to wallet.
    _fault("crashloop", "on")
    kept = _statuses()["wallet"]
    run = answer_until_done(start(RESTART, incident_id=inc, initiated_by=ONCALL, service="wallet", dry_run=False,
                                  health_timeout_s=10))
    assert run.state is not None and run.state.is_failed(), run.state
    out = result(run)
    # Seen exiting again (its status line moved on), or at worst not healthy within the timeout.
    assert re.match(r"wallet-2 (exited or restarted again|did not answer its health check)", str(run.state.message))
    assert out["untouched"] == ["wallet"] and [d["instance"] for d in out["restarted"]] == ["wallet-2"]
    assert f"FATAL: required setting {REQUIRED_SETTING} is not set" in out["log_tail"]
    assert out["evidence_before"].startswith("s3://")
    assert _statuses()["wallet"] == kept, "the healthy instance was not touched"
    # The gateway sends to the other instance when one refuses the connection: no deposit is lost meanwhile.
    with Traffic(stack.gateway_url, seeded_players()[:10], workers=2) as traffic:
        time.sleep(2)
    assert traffic.stats.ok > 0 and traffic.stats.unavailable == 0, traffic.stats.as_dict()

    # The setting is put back; a Retry from the UI restarts wallet-2 again (it never came back), then wallet.
    wallets.host.break_wallet_env(False)
    _retry(run.id)
    retried = answer_until_done(run.id)
    assert retried.state is not None and retried.state.is_completed(), retried.state
    assert [(d["instance"], d["outcome"]) for d in result(retried)["restarted"]] == [("wallet-2", "restarted"),
                                                                                     ("wallet", "restarted")]
    after = _statuses()
    assert after["wallet"] != kept and after["wallet-2"].startswith("wallet-2 running"), after
    # A Retry of the finished run brings nothing down again: each instance came back healthy in this run.
    _retry(run.id)
    again = answer_until_done(run.id)
    assert again.state is not None and again.state.is_completed(), again.state
    assert {d["outcome"] for d in result(again)["restarted"]} == {"restarted-by-an-earlier-attempt"}
    assert _statuses() == after, "a Retry of the finished run restarted an instance again"


def _retry(run_id: UUID) -> None:
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, AwaitingRetry(message="Retry from the UI"), force=True)


def test_api_down_respond_restarts_the_hung_instance_first_then_the_other_under_live_deposits(
    wallets: Stack, stack: StackInfo, deployments: list[str],
) -> None:
    """Seed 003 "API down": snapshot → restart-service (logs in S3 first, one instance at a time) → round trip."""
    _fault("hung", "on")  # SIGSTOP: its port accepts, nothing answers; it ignores SIGTERM
    before = _statuses()
    inc = incident()
    with Traffic(stack.gateway_url, seeded_players()[:20], workers=2, rate=20) as traffic:
        run_id = start("respond/respond", incident_id=inc, initiated_by=ONCALL, pattern="api-down",
                       severity="SEV1", service="wallet", dry_run=False)
        # The loop's own pause (who started it), then restart-service's approval in its subflow run.
        asked = []
        while len(asked) < 2:
            paused = wait_for_incident_pause(inc, timeout_s=120)
            asked.append(pending_step(paused))
            if asked[-1] == "verify-initiator":
                confirm_initiator(paused.id)
            else:
                answer(paused.id, approver=LEAD, reason="api down: restart after logs")
        run = finish(run_id, timeout_s=180)
    assert asked == ["verify-initiator", "restart-service"]
    assert run.state is not None and run.state.is_completed(), run.state
    out = result(run)
    assert [(r["step"], r["outcome"]) for r in out["steps"]] == [
        ("snapshot-context", "completed"), ("restart-service", "applied"), ("verify-round-trip", "completed")]
    assert out["all_clear"] and "instances restarted one at a time and a round trip passed" in str(run.state.message)
    after = _statuses()
    assert all(after[n] != before[n] and after[n].startswith(f"{n} running") for n in after), (before, after)
    # Requests the hung instance held answer 504 until it is restarted; the rest are served throughout.
    assert traffic.stats.ok > 0, traffic.stats.as_dict()
