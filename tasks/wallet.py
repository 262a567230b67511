"""Probes through the gateway on synthetic test players: did a lever take effect, does money move?

Probes that succeed move real money on a synthetic player and are netted out at once
(a 1-cent deposit is followed by a 1-cent withdraw), so the books stay clean.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import task

from remediation import connect
from remediation.clients.gateway import Gateway, WalletReply
from remediation.errors import BadInputError
from remediation.inventory import Target
from remediation.levers import LeverChange, current_value, expected_blocked
from remediation.policy import READ_ONLY
from tasks.admin_api import read_lever_state

__all__ = ["check_lever_effect", "check_round_trip", "probe"]

PROBE_CENTS = 1


def _player(target: Target, brand: str) -> str:
    try:
        return target.synthetic_players[brand]
    except KeyError:
        raise BadInputError(f"target {target.name} names no synthetic player for brand {brand}") from None


def _ref(kind: str, incident_id: str) -> str:
    return f"probe-{kind}-{incident_id.lower()}-{uuid.uuid4().hex[:12]}"


def probe(gw: Gateway, target: Target, brand: str, kind: str, incident_id: str) -> dict[str, Any]:
    """One write attempt of `kind` for `brand`'s synthetic player; a successful deposit is netted out."""
    player = _player(target, brand)
    reply: WalletReply
    if kind == "deposit":
        reply = gw.deposit(player, PROBE_CENTS, _ref("deposit", incident_id))
        if reply.ok:
            net = gw.withdraw(player, PROBE_CENTS, _ref("netting", incident_id))
            if not net.ok:
                raise RuntimeError(f"probe deposit on {player} could not be netted out: {net.msg}")
    elif kind == "withdraw":
        # The synthetic player holds nothing: a live brand answers "Insufficient balance", which
        # still proves the withdraw path is open; a blocked one answers "Finance maintenance".
        reply = gw.withdraw(player, PROBE_CENTS, _ref("withdraw", incident_id))
    else:
        reply = gw.bet(player, _ref("bet", incident_id), PROBE_CENTS)
    return {
        "brand": brand, "player": player, "kind": kind, "http_status": reply.http_status,
        "status": reply.status, "msg": reply.msg,
        "blocked": reply.is_finance_maintenance or reply.http_status == 503,
    }


@task(name="check-lever-effect", **READ_ONLY)
def check_lever_effect(target: Target, change: LeverChange, incident_id: str) -> dict[str, Any]:
    """Seed 000: verify the lever the way the runbook says (a deposit gets Finance maintenance,
    other brands stay live, GET /api/v1/maintenance shows the freeze)."""
    state = read_lever_state(target)
    brands = [b for b in target.brands if b in target.synthetic_players]
    if change.lever in ("platform-freeze", "deposit-halt"):
        kinds = ["deposit"]
    elif change.lever == "brand-disable":
        kinds = [flag.removesuffix("_enabled") for flag in change.after]
    else:
        kinds, brands = ["bet"], brands[:1]
    checks: list[dict[str, Any]] = []
    with connect.gateway(target) as gw:
        for kind in kinds:
            for brand in brands:
                seen = probe(gw, target, brand, kind, incident_id)
                # Every probe must match what all the levers together imply: with a freeze on,
                # "other brands stay live" cannot hold, and that is not this lever's failure.
                seen["expected_blocked"] = expected_blocked(state, brand, kind)
                checks.append(seen)
    if change.lever == "platform-freeze":
        active = bool(state.need("maintenance")["is_active"])
        checks.append({"kind": "GET /api/v1/maintenance", "is_active": active})
        freeze_ok = active is not change.undo
    else:
        freeze_ok = True
    wrong = [c for c in checks if "brand" in c and c["blocked"] != c["expected_blocked"]]
    # The lever's own effect must show: engaged → its brand/kind is refused; undone → the state says open.
    own = current_value(change, state) == change.after
    return {"lever": change.lever, "undo": change.undo, "checks": checks, "lever_holds": own,
            "ok": not wrong and own and freeze_ok, "wrong": wrong}


@task(name="check-round-trip", **READ_ONLY)
def check_round_trip(target: Target, brand: str, incident_id: str) -> dict[str, Any]:
    """Seed 000 recovery check: a real deposit + withdraw + one provider bet/settle on the brand's
    synthetic player, the balance checked at every step, netting to zero at the end."""
    player = _player(target, brand)
    steps: list[dict[str, Any]] = []
    with connect.gateway(target) as gw:
        start = gw.balance(player)
        if not start.ok or start.data is None:
            return {"ok": False, "brand": brand, "steps": [], "error": f"balance read failed: {start.msg}"}
        balance = int(start.data["balance"])
        round_id = _ref("round", incident_id)
        plan: list[tuple[str, int, Any]] = [
            ("deposit", 100, lambda: gw.deposit(player, 100, _ref("rt-deposit", incident_id))),
            ("withdraw", -40, lambda: gw.withdraw(player, 40, _ref("rt-withdraw", incident_id))),
            ("bet", -10, lambda: gw.bet(player, round_id, 10)),
            ("settle", 10, lambda: gw.settle(player, round_id, 10)),
            ("withdraw", -60, lambda: gw.withdraw(player, 60, _ref("rt-netting", incident_id))),
        ]
        for kind, delta, call in plan:
            reply: WalletReply = call()
            expected = balance + delta
            got = int(reply.data["balance"]) if reply.ok and reply.data else None
            steps.append({"step": kind, "status": reply.status, "msg": reply.msg, "expected": expected,
                          "balance": got, "ok": reply.ok and got == expected})
            if not steps[-1]["ok"]:
                return {"ok": False, "brand": brand, "player": player, "steps": steps,
                        "maintenance": reply.is_finance_maintenance}
            balance = expected
    return {"ok": True, "brand": brand, "player": player, "steps": steps, "net": balance - int(start.data["balance"])}
