"""Seed 000 step 3: the containment levers, as pure planning logic.

A plan is a list of `LeverChange`s computed from the lever asked for and the
state just read. Besides contain's four levers, the change log knows one more kind of change:
`edge-block`, a source address denied at the target's edge by `block-source` (seed 002 §3.7),
one change per address, so `recover` lifts each one like any lever. Applying, verifying and
recording live in tasks and flows; this module only decides *what* would change, so a dry run
and a real run share it and the approval can be bound to its hash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "BRAND_FLAGS",
    "EDGE_BLOCK",
    "LEVERS",
    "LEVER_HELP",
    "AppliedChange",
    "BrandFlag",
    "ChangeKind",
    "Lever",
    "LeverChange",
    "LeverState",
    "apply_path",
    "current_value",
    "drifted",
    "edge_address",
    "edge_block_change",
    "edge_resource",
    "expected_blocked",
    "needs_approval",
    "plan_contain",
    "plan_recover",
    "resource_for",
]

Lever = Literal["platform-freeze", "deposit-halt", "brand-disable", "provider-ingress-block", "redis-eviction"]
LEVERS: tuple[Lever, ...] = ("platform-freeze", "deposit-halt", "brand-disable", "provider-ingress-block",
                             "redis-eviction")
#: Every kind of change the change log records: contain's levers (the run form's choices) and a
#: block-source block. `recover` undoes any of them.
ChangeKind = Literal["platform-freeze", "deposit-halt", "brand-disable", "provider-ingress-block", "redis-eviction",
                     "edge-block"]
EDGE_BLOCK: ChangeKind = "edge-block"
BrandFlag = Literal["deposit_enabled", "withdraw_enabled"]
BRAND_FLAGS: tuple[BrandFlag, ...] = ("deposit_enabled", "withdraw_enabled")
#: What each lever does, in seed 000 step 3's words: the run form and the runbook show it.
LEVER_HELP: dict[Lever, str] = {
    "platform-freeze": "3a, the broadest: `PUT /api/v1/maintenance` `is_active: true`; every wallet write on every "
                       "brand answers Finance maintenance. Always asks for approval.",
    "deposit-halt": "3b: global var `DEPOSIT_MAINTENANCE_STATUS` = `1` (admin API; `UPDATE global_var` when the admin "
                    "API is down); deposits answer `{\"status\":1,\"msg\":\"Finance maintenance\"}` on every brand, "
                    "withdrawals, bets and settles go on.",
    "brand-disable": "3c: one brand's `payment_policy` flags (`brand_id`, `brand_flags`) set false; that brand's "
                     "deposits (and withdrawals if chosen) are refused, other brands stay live.",
    "provider-ingress-block": "3d: the gateway refuses provider callbacks; new bets and settles stop, deposits and "
                              "withdrawals go on. Always asks for approval.",
    "redis-eviction": "seed 002 §3.3, the cache full under `noeviction` and refusing writes: `CONFIG SET "
                      "maxmemory-policy allkeys-lru` (the target's `[redis] relief_policy`); the cache evicts its "
                      "least recently used keys instead. Always asks for approval; recover puts the policy back.",
}
#: Levers broad enough that they always stop for approval, whatever the target's policy says.
ALWAYS_APPROVE: frozenset[Lever] = frozenset({"platform-freeze", "provider-ingress-block", "redis-eviction"})


class LeverState(BaseModel):
    """The current value of every lever this target has, read before planning.

    A part that could not be read is None and named in `unreadable`; planning a lever
    that needs it fails rather than guessing.
    """

    model_config = ConfigDict(frozen=True)

    maintenance: dict[str, Any] | None  # {"is_active": bool, "message": str}
    deposit_maintenance_status: str | None
    #: "admin-api", or "sql-fallback" when the admin API was down and the database was read instead.
    read_via: str = "admin-api"
    payment_policy: dict[str, dict[str, Any]] | None  # brand -> payment_policy value
    provider_ingress: dict[str, Any] | None  # {"blocked": bool, "reason": str}
    #: The cache: {"maxmemory-policy", "relief_policy", "used_memory", "maxmemory"}; None if unread or none.
    redis: dict[str, Any] | None = None
    #: The edge's blocked sources: address -> {"expires_at": iso or None, "reason": str}.
    edge_blocks: dict[str, dict[str, Any]] | None = {}
    #: The addresses whose block state was read (an edge read one address at a time, a host firewall);
    #: None: the whole list was read (the gateway's deny list), so an address not in it is not blocked.
    edge_read: list[str] | None = None
    unreadable: dict[str, str] = {}

    def need(self, part: str) -> Any:
        value = getattr(self, part)
        if value is None:
            raise LookupError(f"{part} could not be read: {self.unreadable.get(part, 'unknown')}")
        return value


class LeverChange(BaseModel):
    """One value to move from `before` to `after`. `resource` names what the target lock covers."""

    model_config = ConfigDict(frozen=True)

    lever: ChangeKind
    resource: str
    description: str
    before: dict[str, Any]
    after: dict[str, Any]
    #: Sent with the change but not part of the state compared (the freeze message, the block reason;
    #: for an edge block its `address` and `expiry_s`).
    extra: dict[str, str] = {}
    #: True for recover's reversal of a recorded change.
    undo: bool = False

    @property
    def in_place(self) -> bool:
        return self.before == self.after


class AppliedChange(BaseModel):
    """What a run did, for the incident's change log (recover undoes exactly these)."""

    change: LeverChange
    outcome: Literal["applied", "already-in-place", "reverted", "already-reverted", "conflict"]
    path: str  # "admin-api", "sql-fallback", "gateway"
    note: str = ""
    at: datetime
    flow_run_id: str | None = None
    approval_plan_hash: str | None = None


def resource_for(lever: Lever, brand_id: str | None = None) -> str:
    if lever == "platform-freeze":
        return "maintenance"
    if lever == "deposit-halt":
        return "global-var-deposit-maintenance-status"
    if lever == "brand-disable":
        return f"brand-{brand_id}-payment-policy"
    if lever == "redis-eviction":
        return "redis-maxmemory-policy"
    return "gateway-provider-ingress"


def edge_resource(address: str) -> str:
    """The lock and change-log resource of one blocked address (`/` is not allowed in a lock name)."""
    return "edge-" + address.replace("/", "_")


def edge_address(change: LeverChange) -> str:
    return change.extra["address"]


def edge_block_change(address: str, *, expiry_s: float, reason: str, edge: str) -> LeverChange:
    """Deny one source address (or network) at the target's edge, lifting itself after `expiry_s`."""
    return LeverChange(
        lever=EDGE_BLOCK, resource=edge_resource(address), before={"blocked": False}, after={"blocked": True},
        extra={"address": address, "expiry_s": f"{expiry_s:g}", "reason": reason},
        description=f"deny source {address} at {edge} for {expiry_s:g} s",
    )


def plan_contain(
    lever: Lever,
    state: LeverState,
    *,
    message: str,
    brand_id: str | None = None,
    flags: tuple[BrandFlag, ...] = ("deposit_enabled",),
) -> LeverChange:
    """The single change a lever makes, from the state just read. `in_place` if nothing to do."""
    res = resource_for(lever, brand_id)
    if lever == "platform-freeze":
        before = {"is_active": bool(state.need("maintenance").get("is_active"))}
        return LeverChange(
            lever=lever, resource=res, before=before, after={"is_active": True}, extra={"message": message},
            description=f"PUT /api/v1/maintenance is_active=true, message {message!r} (every brand)",
        )
    if lever == "deposit-halt":
        return LeverChange(
            lever=lever, resource=res,
            before={"value": state.need("deposit_maintenance_status")}, after={"value": "1"},
            description="global var DEPOSIT_MAINTENANCE_STATUS value '1' (deposits, every brand)",
        )
    if lever == "brand-disable":
        policies = state.need("payment_policy")
        if brand_id is None or brand_id not in policies:
            raise ValueError(f"brand-disable needs a known brand_id, got {brand_id!r}")
        policy = policies[brand_id]
        wanted = sorted(set(flags))
        return LeverChange(
            lever=lever, resource=res,
            before={f: _flag(policy.get(f, True)) for f in wanted},
            after=dict.fromkeys(wanted, False),
            description=f"PATCH brand {brand_id} payment_policy {', '.join(f'{f}=false' for f in wanted)}",
        )
    if lever == "redis-eviction":
        cache = state.need("redis")
        relief = str(cache["relief_policy"])
        return LeverChange(
            lever=lever, resource=res, before={"maxmemory-policy": cache["maxmemory-policy"]},
            after={"maxmemory-policy": relief},
            description=f"Redis CONFIG SET maxmemory-policy {relief} (used {cache.get('used_memory')} of "
                        f"maxmemory {cache.get('maxmemory')} bytes)",
        )
    return LeverChange(
        lever=lever, resource=res,
        before={"blocked": bool(state.need("provider_ingress").get("blocked"))}, after={"blocked": True},
        extra={"reason": message},
        description="PUT gateway /api/v1/ingress/provider blocked=true (provider bets and settles stop)",
    )


def plan_recover(recorded: list[AppliedChange], state: LeverState, *, note: str) -> list[LeverChange]:
    """Undo what this incident applied, newest first; only where the lever still holds our value.

    A lever someone moved since (current != what we set) is not ours to overwrite: it is
    left out here and reported by the caller.
    """
    undo: list[LeverChange] = []
    seen: set[str] = set()
    for item in sorted(
        (r for r in recorded if r.outcome == "applied"), key=lambda r: r.at, reverse=True
    ):
        change = item.change
        if change.resource in seen:
            continue
        seen.add(change.resource)
        current = current_value(change, state)
        if current == change.after:
            # What names the thing (an edge block's address) stays; what said why and how long goes.
            extra = {k: note if k == "reason" else (v if k == "address" else "") for k, v in change.extra.items()}
            undo.append(change.model_copy(update={
                "before": change.after, "after": change.before, "extra": extra, "undo": True,
                "description": f"undo: {change.description}",
            }))
    return undo


def drifted(recorded: list[AppliedChange], state: LeverState) -> list[AppliedChange]:
    """Applied changes whose lever no longer holds the value we set (someone moved it)."""
    latest: dict[str, AppliedChange] = {}
    for item in sorted((r for r in recorded if r.outcome == "applied"), key=lambda r: r.at):
        latest[item.change.resource] = item
    return [r for r in latest.values() if current_value(r.change, state) not in (r.change.after, r.change.before)]


def expected_blocked(state: LeverState, brand: str, kind: str) -> bool:
    """Whether the wallet should refuse a `kind` write for `brand`, given every lever's state
    (the wallet's own rules, seed 000 step 3)."""
    if state.need("maintenance").get("is_active"):
        return True
    if kind == "bet":
        return bool(state.need("provider_ingress").get("blocked"))
    if kind == "deposit" and str(state.need("deposit_maintenance_status")).strip() == "1":
        return True
    policy = state.need("payment_policy").get(brand, {})
    return not _flag(policy.get(f"{kind}_enabled", True))


_DEPOSIT_SQL = "UPDATE global_var SET value='{v}', updated_at=NOW() WHERE code='DEPOSIT_MAINTENANCE_STATUS'"


def apply_path(change: LeverChange, read_via: str) -> str:
    """How apply will move this lever, for the approver: which interface, and what happens if it is down.

    `read_via` is how the state was read at planning ("admin-api", or "sql-fallback" when the admin API
    was down). Apply decides again when it runs: the admin API first, the seed's SQL fallback only for
    the deposit halt.
    """
    value = str(change.after.get("value", ""))
    if change.lever == "deposit-halt":
        api = f"admin API `PUT /api/v1/global-vars/DEPOSIT_MAINTENANCE_STATUS` `{{\"value\": \"{value}\"}}`"
        sql = f"SQL fallback on the platform database: `{_DEPOSIT_SQL.format(v=value)}`"
        if read_via == "sql-fallback":
            return (f"{sql} — the admin API was down at planning. Apply decides again when it runs: the {api} "
                    f"if it is back, else the SQL fallback.")
        return (f"{api} (it answered at planning). Apply decides again when it runs: if the admin API is down "
                f"then, the {sql}.")
    if change.lever == "provider-ingress-block":
        return ("gateway `PUT /api/v1/ingress/provider`; if the gateway is down at apply, the run fails "
                "and nothing changes.")
    if change.lever == "redis-eviction":
        return (f"Redis `CONFIG SET maxmemory-policy {change.after['maxmemory-policy']}` on the target's cache "
                "(read back first: already so → nothing sent); if Redis cannot be reached, the run fails and "
                "nothing changes.")
    if change.lever == EDGE_BLOCK:
        verb = "lifted" if change.undo else "added"
        return (f"{change.description.removeprefix('undo: ')}: the entry for `{edge_address(change)}` {verb} at "
                "the target's edge; if the edge cannot be reached at apply, the run fails and nothing changes.")
    if change.lever == "platform-freeze":
        call = "`PUT /api/v1/maintenance`"
    else:
        brand = change.resource.removeprefix("brand-").removesuffix("-payment-policy")
        call = f"`PATCH /api/v1/brands/{brand}/config/payment_policy`"
    down = " (down at planning: the state was read from the database)" if read_via == "sql-fallback" else ""
    return (f"admin API {call}{down}; no SQL fallback for this lever: if the admin API is down at apply, "
            f"the run fails and nothing changes.")


def needs_approval(lever: Lever, *, approve_deposit_halt: bool, approve_brand_disable: bool) -> bool:
    if lever in ALWAYS_APPROVE:
        return True
    if lever == "deposit-halt":
        return approve_deposit_halt
    return approve_brand_disable


def current_value(change: LeverChange, state: LeverState) -> dict[str, Any]:
    """The lever's value now, in the shape of the change's before/after."""
    if change.lever == "platform-freeze":
        return {"is_active": bool(state.need("maintenance").get("is_active"))}
    if change.lever == "deposit-halt":
        return {"value": state.need("deposit_maintenance_status")}
    if change.lever == "brand-disable":
        brand = change.resource.removeprefix("brand-").removesuffix("-payment-policy")
        policy = state.need("payment_policy").get(brand, {})
        return {f: _flag(policy.get(f, True)) for f in change.after}
    if change.lever == "redis-eviction":
        return {"maxmemory-policy": state.need("redis")["maxmemory-policy"]}
    if change.lever == EDGE_BLOCK:
        address = edge_address(change)
        blocks = state.need("edge_blocks")
        if state.edge_read is not None and address not in state.edge_read:
            raise LookupError(f"edge block of {address} was not read")
        return {"blocked": address in blocks}
    return {"blocked": bool(state.need("provider_ingress").get("blocked"))}


def _flag(value: Any) -> bool:
    # The wallet treats the string "false" as false too (a sloppy SQL edit); so must we.
    return not (value is False or (isinstance(value, str) and value.strip().lower() == "false"))
