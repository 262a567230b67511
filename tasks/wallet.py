"""Probes through the gateway on synthetic test players: did a lever take effect, does money move?

Probes that succeed move real money on a synthetic player and are netted out at once
(a 1-cent deposit is followed by a 1-cent withdraw), so the books stay clean.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from remediation.clients.gateway import Gateway, WalletReply
from remediation.domain.levers import LeverChange, current_value, expected_blocked
from remediation.errors import BadInputError, ClientError
from remediation.target import connect
from remediation.target.inventory import Target
from tasks.admin_api import read_lever_state
from tasks.policy import READ_ONLY, task
from tasks.redis import check_redis_write

__all__ = ["ROUND_TRIP", "check_lever_effect", "check_round_trip", "probe"]

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
    if change.lever == "redis-eviction":
        # The cache takes a write again once it evicts; the lever undone, the policy is back (a full cache
        # then refuses writes again — that is the state recover was asked to restore).
        write = check_redis_write(target, incident_id)
        own = current_value(change, state) == change.after
        return {"lever": change.lever, "undo": change.undo, "checks": [write], "lever_holds": own,
                "ok": own and (write["ok"] or change.undo), "wrong": [] if write["ok"] or change.undo else [write]}
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


#: Seed 000's recovery check, in cents: deposit, withdraw, one provider bet + settle, then net out.
ROUND_TRIP: tuple[tuple[str, int], ...] = (
    ("deposit", 100), ("withdraw", -40), ("bet", -10), ("settle", 10), ("withdraw", -60),
)
_LEDGER_ROW = (
    "SELECT kind, amount, balance_after FROM ledger"
    " WHERE player_id = %(player)s AND kind = %(kind)s AND (ref = %(key)s OR round_id = %(key)s)"
)


def _refusal(reply: WalletReply) -> str | None:
    """A lever's answer (not a platform failure), by what the runbook says it looks like."""
    if reply.is_finance_maintenance:
        return "Finance maintenance"
    if reply.http_status == 503 and reply.msg == "Provider ingress blocked":
        return "Provider ingress blocked"
    return None


def _call(gw: Gateway, player: str, kind: str, delta: int, key: str) -> WalletReply:
    if kind == "deposit":
        return gw.deposit(player, delta, key)
    if kind == "withdraw":
        return gw.withdraw(player, -delta, key)
    if kind == "bet":
        return gw.bet(player, key, -delta)
    return gw.settle(player, key, delta)


def _net_out(gw: Gateway, player: str, net: int, incident_id: str) -> dict[str, Any]:
    """Undo what a broken-off round trip left on the synthetic player, if the wallet lets us."""
    kind = "withdraw" if net > 0 else "deposit"
    try:
        reply = _call(gw, player, kind, -net, _ref(f"rt-compensate-{kind}", incident_id))
    except ClientError as exc:
        return {"kind": kind, "amount": abs(net), "ok": False, "msg": str(exc)}
    return {"kind": kind, "amount": abs(net), "ok": reply.ok, "msg": reply.msg}


def _opening_balance(gw: Gateway, player: str, tries: int = 5, first_delay_s: float = 0.25) -> WalletReply:
    """The balance before any money moves. A read, so a 503 (the wallet still reconnecting after a
    rebuild) is asked again a few times; a refusal or any other answer is final."""
    delay = first_delay_s
    for _ in range(tries - 1):
        reply = gw.balance(player)
        if reply.http_status != 503 or _refusal(reply):
            return reply
        time.sleep(delay)
        delay *= 2
    return gw.balance(player)


@task(name="check-round-trip", **{**READ_ONLY, "retries": 0})
def check_round_trip(target: Target, brand: str, incident_id: str) -> dict[str, Any]:
    """Seed 000 recovery check: a real deposit + withdraw + one provider bet/settle on the brand's
    synthetic player; at every step the answer, the balance and the ledger row are checked, and the
    test money nets to zero. A lever's refusal is reported as `blocked`, not as a platform failure.

    Never retried as a whole: money moved by a half-done attempt is netted out here, and a fresh
    attempt would move more.
    """
    player = _player(target, brand)
    db = connect.database(target, application_name="verify-round-trip")
    steps: list[dict[str, Any]] = []
    base: dict[str, Any] = {"brand": brand, "player": player, "steps": steps}
    with connect.gateway(target) as gw:
        try:
            start = _opening_balance(gw, player)
        except ClientError as exc:
            return {**base, "ok": False, "outcome": "failed", "error": f"balance read failed: {exc}", "net": 0}
        if not start.ok or start.data is None:
            return {**base, "ok": False, "outcome": "failed", "error": f"balance read failed: {start.msg}", "net": 0}
        opening = balance = int(start.data["balance"])
        round_id = _ref("round", incident_id)
        for n, (kind, delta) in enumerate(ROUND_TRIP, 1):
            key = round_id if kind in ("bet", "settle") else _ref(f"rt{n}-{kind}", incident_id)
            expected = balance + delta
            started = time.perf_counter()
            try:
                reply: WalletReply | None = _call(gw, player, kind, delta, key)
                error = None
            except ClientError as exc:
                reply, error = None, str(exc)
            latency_ms = round((time.perf_counter() - started) * 1000, 1)
            got = int(reply.data["balance"]) if reply is not None and reply.ok and reply.data else None
            row = db.fetch_one(_LEDGER_ROW, {"player": player, "kind": kind, "key": key}) if got is not None else None
            ledger_ok = row is not None and int(row["amount"]) == delta and int(row["balance_after"]) == expected
            step = {
                "step": f"{n}. {kind} {abs(delta)}", "http_status": reply.http_status if reply else None,
                "status": reply.status if reply else None, "msg": reply.msg if reply else error,
                "expected_balance": expected, "balance": got, "ledger": row, "latency_ms": latency_ms,
                "ok": got == expected and ledger_ok,
            }
            steps.append(step)
            if not step["ok"]:
                lever = _refusal(reply) if reply is not None else None
                net = balance - opening
                return {**base, "ok": False, "outcome": "blocked" if lever else "failed", "blocked_by": lever,
                        "failed_step": step["step"], "net": net,
                        "compensation": _net_out(gw, player, net, incident_id) if net else None}
            balance = expected
    return {**base, "ok": balance == opening, "outcome": "passed" if balance == opening else "failed",
            "net": balance - opening}
