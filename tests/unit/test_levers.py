"""Lever planning, undo ordering and approval binding: pure logic, no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from remediation.domain.levers import (
    AppliedChange,
    LeverState,
    drifted,
    needs_approval,
    plan_contain,
    plan_recover,
)
from remediation.domain.plan import plan_hash

CALM = LeverState(
    maintenance={"is_active": False, "message": ""},
    deposit_maintenance_status="0",
    payment_policy={b: {"deposit_enabled": True, "withdraw_enabled": True} for b in ("alpha", "beta")},
    provider_ingress={"blocked": False, "reason": ""},
)


def _applied(change, minutes: int, outcome: str = "applied") -> AppliedChange:  # type: ignore[no-untyped-def]
    return AppliedChange(change=change, outcome=outcome, path="admin-api",  # type: ignore[arg-type]
                         at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes))


def test_each_lever_plans_exactly_its_change() -> None:
    freeze = plan_contain("platform-freeze", CALM, message="m")
    assert (freeze.before, freeze.after, freeze.extra) == ({"is_active": False}, {"is_active": True}, {"message": "m"})
    halt = plan_contain("deposit-halt", CALM, message="m")
    assert (halt.before, halt.after) == ({"value": "0"}, {"value": "1"})
    brand = plan_contain("brand-disable", CALM, message="m", brand_id="beta",
                         flags=("withdraw_enabled", "deposit_enabled"))
    assert brand.resource == "brand-beta-payment-policy"
    assert brand.after == {"deposit_enabled": False, "withdraw_enabled": False}
    ingress = plan_contain("provider-ingress-block", CALM, message="r")
    assert ingress.after == {"blocked": True} and ingress.extra == {"reason": "r"}
    assert not any(c.in_place for c in (freeze, halt, brand, ingress))


def test_the_cache_lever_records_the_policy_it_found_and_undoes_to_it() -> None:
    full = CALM.model_copy(update={"redis": {"maxmemory-policy": "noeviction", "relief_policy": "allkeys-lru",
                                             "used_memory": 17_000_000, "maxmemory": 16_777_216}})
    relief = plan_contain("redis-eviction", full, message="m")
    assert (relief.resource, relief.before, relief.after) == (
        "redis-maxmemory-policy", {"maxmemory-policy": "noeviction"}, {"maxmemory-policy": "allkeys-lru"})
    assert "used 17000000 of maxmemory 16777216" in relief.description and needs_approval(
        "redis-eviction", approve_deposit_halt=False, approve_brand_disable=False)
    relieved = full.model_copy(update={"redis": {**(full.redis or {}), "maxmemory-policy": "allkeys-lru"}})
    assert plan_contain("redis-eviction", relieved, message="m").in_place
    [undo] = plan_recover([_applied(relief, 1)], relieved, note="n")
    assert (undo.before, undo.after, undo.undo) == ({"maxmemory-policy": "allkeys-lru"},
                                                    {"maxmemory-policy": "noeviction"}, True)
    with pytest.raises(LookupError, match="the target names no"):
        plan_contain("redis-eviction", CALM.model_copy(update={"unreadable": {"redis": "the target names no [redis]"}}),
                     message="m")


def test_a_lever_already_in_place_plans_nothing() -> None:
    frozen = CALM.model_copy(update={"maintenance": {"is_active": True, "message": "x"}})
    assert plan_contain("platform-freeze", frozen, message="m").in_place
    sloppy = CALM.model_copy(update={"payment_policy": {"alpha": {"deposit_enabled": "false"}}})
    assert plan_contain("brand-disable", sloppy, message="m", brand_id="alpha").in_place


def test_unreadable_state_refuses_to_plan() -> None:
    blind = CALM.model_copy(update={"maintenance": None, "unreadable": {"maintenance": "admin API: 503"}})
    with pytest.raises(LookupError, match="admin API: 503"):
        plan_contain("platform-freeze", blind, message="m")
    with pytest.raises(ValueError, match="known brand_id"):
        plan_contain("brand-disable", CALM, message="m", brand_id="nope")


def test_recover_undoes_newest_first_and_only_what_still_holds_our_value() -> None:
    freeze = plan_contain("platform-freeze", CALM, message="m")
    halt = plan_contain("deposit-halt", CALM, message="m")
    ingress = plan_contain("provider-ingress-block", CALM, message="r")
    log = [_applied(freeze, 1), _applied(halt, 2), _applied(ingress, 3)]
    now = CALM.model_copy(update={
        "maintenance": {"is_active": True}, "deposit_maintenance_status": "1",
        # Someone already unblocked ingress by hand: not ours to touch again.
        "provider_ingress": {"blocked": False},
    })
    undo = plan_recover(log, now, note="recovered")
    assert [u.lever for u in undo] == ["deposit-halt", "platform-freeze"]
    assert all(u.undo for u in undo)
    assert undo[0].before == {"value": "1"} and undo[0].after == {"value": "0"}
    assert undo[1].extra == {"message": ""}


def test_levers_moved_elsewhere_are_reported() -> None:
    brand = plan_contain("brand-disable", CALM, message="m", brand_id="alpha",
                         flags=("deposit_enabled", "withdraw_enabled"))
    moved = CALM.model_copy(update={"payment_policy": {"alpha": {"deposit_enabled": False, "withdraw_enabled": True}}})
    assert plan_recover([_applied(brand, 1)], moved, note="n") == []
    assert [d.change.resource for d in drifted([_applied(brand, 1)], moved)] == ["brand-alpha-payment-policy"]


def test_already_in_place_records_are_not_undone() -> None:
    freeze = plan_contain("platform-freeze", CALM, message="m")
    frozen = CALM.model_copy(update={"maintenance": {"is_active": True}})
    assert plan_recover([_applied(freeze, 1, outcome="already-in-place")], frozen, note="n") == []


def test_approval_policy() -> None:
    for broad in ("platform-freeze", "provider-ingress-block"):
        assert needs_approval(broad, approve_deposit_halt=False, approve_brand_disable=False)  # type: ignore[arg-type]
    assert not needs_approval("deposit-halt", approve_deposit_halt=False, approve_brand_disable=True)
    assert needs_approval("brand-disable", approve_deposit_halt=False, approve_brand_disable=True)


def test_plan_hash_is_canonical_and_sensitive() -> None:
    a = {"target": "sandbox", "change": {"before": {"value": "0"}, "after": {"value": "1"}}}
    b = {"change": {"after": {"value": "1"}, "before": {"value": "0"}}, "target": "sandbox"}
    assert plan_hash(a) == plan_hash(b)
    c = {"target": "sandbox", "change": {"before": {"value": "0"}, "after": {"value": "2"}}}
    assert plan_hash(a) != plan_hash(c)

