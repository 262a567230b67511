"""verify-round-trip against the sandbox: passes when healthy, says "blocked" for a lever, fails loudly when wedged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.verify_round_trip import verify_round_trip
from sandbox import db, faults
from sandbox.stack.info import StackInfo
from tests.integration.flow_runs import incident

pytestmark = pytest.mark.integration


@pytest.fixture
def platform(reset_platform: StackInfo) -> Iterator[StackInfo]:
    yield reset_platform
    faults.wedge_off(reset_platform.platform_dsn.get_secret_value(), home=reset_platform.home)


def _run(inc: str, **params: Any) -> tuple[Any, dict[str, Any]]:
    state = verify_round_trip(incident_id=inc, initiated_by="pytest", return_state=True, **params)
    return state, cast(dict[str, Any], state.result(raise_on_failure=False))


def _balance(stack: StackInfo, player: str) -> int:
    with db.connect(stack.platform_dsn.get_secret_value()) as conn:
        row = conn.execute("SELECT balance FROM bucket WHERE player_id = %s", (player,)).fetchone()
    assert row is not None
    return int(row[0])


def test_passes_on_every_brand_with_ledger_rows_and_nets_to_zero(platform: StackInfo) -> None:
    inc = incident()
    before = {b: _balance(platform, f"synthetic-{b}") for b in ("alpha", "beta", "gamma")}
    state, out = _run(inc)
    assert state.is_completed(), state.message
    assert out["ok"] and out["passed"] == ["alpha", "beta", "gamma"]
    for r in out["results"]:
        assert r["outcome"] == "passed" and r["net"] == 0
        assert [s["step"] for s in r["steps"]] == ["1. deposit 100", "2. withdraw 40", "3. bet 10",
                                                     "4. settle 10", "5. withdraw 60"]
        # Each step's ledger row carries the amount and the balance it produced.
        assert [s["ledger"]["amount"] for s in r["steps"]] == [100, -40, -10, 10, -60]
        assert all(s["ledger"]["balance_after"] == s["balance"] == s["expected_balance"] for s in r["steps"])
        assert all(s["latency_ms"] > 0 for s in r["steps"])
    assert {b: _balance(platform, f"synthetic-{b}") for b in before} == before
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"verify-round-trip-{inc.lower()}"])))
    assert arts and len(json.loads(str(arts[0].data))) == 15


def test_a_maintenance_lever_is_reported_as_blocked_not_as_a_failure(platform: StackInfo) -> None:
    # Seed 000 step 3b's own SQL: the deposit-halt lever.
    with db.connect(platform.platform_dsn.get_secret_value()) as conn:
        conn.execute("UPDATE global_var SET value='1', updated_at=NOW() WHERE code='DEPOSIT_MAINTENANCE_STATUS'")
        conn.commit()
    state, out = _run(incident(), brands=["beta"])
    assert state.is_completed() and "not a platform failure" in str(state.message)
    assert not out["ok"] and out["blocked"] == ["beta"] and out["failed"] == []
    r = out["results"][0]
    assert r["blocked_by"] == "Finance maintenance" and r["failed_step"] == "1. deposit 100"
    assert r["steps"][0]["status"] == 1 and r["steps"][0]["msg"] == "Finance maintenance"


def test_fails_loudly_when_the_wallet_writer_is_wedged_and_passes_once_it_is_not(platform: StackInfo) -> None:
    dsn = platform.platform_dsn.get_secret_value()
    faults.wedge_on(dsn, "hang", home=platform.home)
    try:
        state, out = _run(incident(), brands=["alpha"])
    finally:
        faults.wedge_off(dsn, home=platform.home)
    assert state.is_failed()
    assert "FAILED" in str(state.message) and "alpha: 1. deposit 100" in str(state.message)
    assert out["failed"] == ["alpha"] and out["results"][0]["net"] == 0
    state, out = _run(incident(), brands=["alpha"])
    assert state.is_completed() and out["ok"], state.message


def test_a_brand_without_a_synthetic_player_is_refused(platform: StackInfo) -> None:
    state, _ = _run(incident(), brands=["zeta"])
    assert state.is_failed() and "no synthetic player" in str(state.message)


def test_dry_run_moves_nothing(platform: StackInfo) -> None:
    before = _balance(platform, "synthetic-gamma")
    state, out = _run(incident(), brands=["gamma"], dry_run=True)
    assert state.is_completed() and out["outcome"] == "dry-run"
    assert out["players"] == {"gamma": "synthetic-gamma"} and len(out["steps"]) == 5
    assert _balance(platform, "synthetic-gamma") == before
