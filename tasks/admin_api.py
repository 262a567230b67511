"""The containment levers (seed 000 step 3), read and moved through the admin API.

The admin API is the levers' surface; where the seed gives another path it is taken here too:
the deposit halt's SQL fallback when the admin service is down (tasks/database/control.py:
`UPDATE global_var SET value='1', updated_at=NOW() WHERE code='DEPOSIT_MAINTENANCE_STATUS'`),
and the provider ingress block, which lives at the gateway (tasks/gateway.py). Block-source's
`edge-block` changes are read and moved here too, through the target's edge (tasks/edge.py), so the
one check-then-apply path serves every change `recover` may undo.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.runtime import flow_run

from remediation.domain.levers import EDGE_BLOCK, AppliedChange, LeverChange, LeverState, current_value, edge_address
from remediation.errors import ClientError, ConflictError, RetryableError
from remediation.target import connect
from remediation.target.inventory import Target
from tasks.database.control import DEPOSIT_MAINTENANCE_STATUS, read_admin_state, set_deposit_halt
from tasks.edge import read_edge_blocks, set_edge_block
from tasks.gateway import read_provider_ingress, set_provider_ingress
from tasks.policy import READ_ONLY, SIDE_EFFECT, task
from tasks.redis import read_redis_policy, set_redis_policy

__all__ = ["apply_lever_change", "get_lever_state", "read_lever_state"]


def read_lever_state(target: Target, edge_addresses: Sequence[str] = ()) -> LeverState:
    """Every lever's current value; a part that cannot be read is None with the reason. The edge's blocks:
    its whole deny list, or (a host firewall, read address by address) those of `edge_addresses`."""
    unreadable: dict[str, str] = {}
    maintenance = payment = ingress = deposit = None
    deposit_path = "admin-api"
    try:
        with connect.admin_api(target) as admin:
            maintenance = admin.get_maintenance().model_dump(mode="json", include={"is_active", "message"})
            deposit = admin.get_global_var(DEPOSIT_MAINTENANCE_STATUS).value
            payment = {b: admin.get_brand_config(b, "payment_policy").value for b in target.brands}
    except RetryableError as exc:
        # The seed's fallback: the platform database holds the same state the admin API serves.
        try:
            maintenance, deposit, payment = read_admin_state(target)
            deposit_path = "sql-fallback"
        except RetryableError as db_exc:
            unreadable["maintenance"] = unreadable["payment_policy"] = f"admin API: {exc}; SQL: {db_exc}"
            unreadable["deposit_maintenance_status"] = unreadable["maintenance"]
    try:
        ingress = read_provider_ingress(target)
    except RetryableError as exc:
        unreadable["provider_ingress"] = f"gateway: {exc}"
    cache: dict[str, object] | None = None
    if target.redis is None:
        unreadable["redis"] = "the target names no [redis]"
    else:
        try:
            cache = read_redis_policy(target)
        except ClientError as exc:  # the other levers do not need the cache: say so, do not fail
            unreadable["redis"] = f"redis: {exc}"
    edge_blocks: dict[str, dict[str, object]] | None = {}
    edge_read: list[str] | None = None
    if target.edge is not None:
        try:
            edge_blocks, edge_read = read_edge_blocks(target, list(edge_addresses))
        except ClientError as exc:  # contain's levers do not need the edge: say so, do not fail
            edge_blocks = None
            unreadable["edge_blocks"] = f"edge: {exc}"
    return LeverState(
        maintenance=maintenance, deposit_maintenance_status=deposit, read_via=deposit_path,
        payment_policy=payment, provider_ingress=ingress, redis=cache, edge_blocks=edge_blocks,
        edge_read=edge_read, unreadable=unreadable,
    )


@task(name="get-lever-state", **READ_ONLY)
def get_lever_state(target: Target, edge_addresses: list[str] | None = None) -> LeverState:
    """Where each containment lever stands now: freeze, deposit halt, brand flags, provider ingress, and
    the sources blocked at the edge."""
    return read_lever_state(target, edge_addresses or ())


def _state_for(target: Target, change: LeverChange) -> LeverState:
    """The state `change` is checked against. An edge block reads only the edge, and its errors are
    the task's (a gateway blip is retried), not an `unreadable` note."""
    if change.lever == "redis-eviction":
        return LeverState(maintenance=None, deposit_maintenance_status=None, payment_policy=None,
                          provider_ingress=None, redis=read_redis_policy(target))
    if change.lever != EDGE_BLOCK:
        return read_lever_state(target)
    blocks, read = read_edge_blocks(target, [edge_address(change)])
    return LeverState(maintenance=None, deposit_maintenance_status=None, payment_policy=None, provider_ingress=None,
                      edge_blocks=blocks, edge_read=read)


def _apply_via_admin(target: Target, change: LeverChange) -> None:
    with connect.admin_api(target) as admin:
        if change.lever == "platform-freeze":
            admin.set_maintenance(bool(change.after["is_active"]), change.extra.get("message", ""))
        elif change.lever == "deposit-halt":
            admin.set_global_var(DEPOSIT_MAINTENANCE_STATUS, str(change.after["value"]))
        elif change.lever == "brand-disable":
            brand = change.resource.removeprefix("brand-").removesuffix("-payment-policy")
            admin.patch_brand_config(brand, "payment_policy", change.after)


@task(name="apply-lever-change", **SIDE_EFFECT)
def apply_lever_change(target: Target, change: LeverChange, plan_hash: str) -> AppliedChange:
    """Move one lever from `before` to `after`, checking the current value first.

    Already at `after` → nothing is sent (a retry or re-run never toggles twice).
    Neither `before` nor `after` → someone moved it since the plan was approved:
    refuse, because the approval was for a different starting point.
    """
    log = get_run_logger()
    now = _state_for(target, change)
    current = current_value(change, now)
    run_id = str(flow_run.get_id()) if flow_run.get_id() else None

    def done(outcome: str, path: str, note: str = "") -> AppliedChange:
        log.info("%s %s via %s %s", change.resource, outcome, path, note)
        return AppliedChange(
            change=change, outcome=outcome, path=path, note=note,
            at=datetime.now(UTC), flow_run_id=run_id, approval_plan_hash=plan_hash,
        )

    if current == change.after:
        return done("already-reverted" if change.undo else "already-in-place", "none", "state already as planned")
    if current != change.before:
        raise ConflictError(
            f"{change.resource} is {current}, neither the planned before {change.before} nor after "
            f"{change.after}: someone changed it since the plan was approved; re-plan"
        )
    outcome = "reverted" if change.undo else "applied"
    if change.lever == EDGE_BLOCK:
        return done(outcome, set_edge_block(target, change))
    if change.lever == "provider-ingress-block":
        set_provider_ingress(target, bool(change.after["blocked"]), change.extra.get("reason", ""))
        return done(outcome, "gateway")
    if change.lever == "redis-eviction":
        set_redis_policy(target, str(change.after["maxmemory-policy"]))
        return done(outcome, "redis")
    try:
        _apply_via_admin(target, change)
        return done(outcome, "admin-api")
    except RetryableError as exc:
        if change.lever != "deposit-halt":
            raise
        set_deposit_halt(target, str(change.after["value"]))
        return done(outcome, "sql-fallback", f"admin API failed: {exc}")
