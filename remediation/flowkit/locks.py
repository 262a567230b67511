"""One remediation at a time per target resource: a Prefect global concurrency limit of 1.

The limit is created up front and taken with `strict=True` (without strict, Prefect only logs a
warning for a missing limit and locks nothing), as a lease renewed while the block runs. Each
lease is recorded with its holder (remediation.records.leases). A run that finds the resource
busy looks at who holds it: a holder that is gone — its run ended (Crashed, Failed, Cancelled,
Completed), or it is an earlier attempt of this very run (a Retry after a crash) — has its lease
released at once instead of waited out (60 s lease plus the server's revocation pass); so has
the lease of a run that is Scheduled or Pending (no attempt of it runs now). A live holder is
waited for until `wait_s`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency._leases import maintain_concurrency_lease
from prefect.concurrency._sync import acquire_concurrency_slots_with_lease, release_concurrency_slots_with_lease
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run

from remediation.errors import ConflictError
from remediation.records.leases import HeldLease, LockLeases
from remediation.target import connect
from remediation.target.inventory import Target

__all__ = ["LEASE_S", "LockBusyError", "ensure_lock", "lock_name", "target_lock"]

LEASE_S = 60.0  # the server refuses shorter leases (422: lease_duration >= 60)
#: Each try waits this long before the holders are looked at again.
_TRY_S = 3.0


class LockBusyError(ConflictError):
    """Another run holds this target resource."""


def lock_name(target: str, resource: str) -> str:
    return f"rp-{target}-{resource}"


def ensure_lock(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            # Another run may create it between our read and create: that is fine.
            with suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


@contextmanager
def target_lock(target: Target, resources: str | list[str], *, wait_s: float) -> Iterator[list[str]]:
    """Hold `target`'s resources for the block (all at once, so two runs never deadlock);
    wait up to `wait_s` for a live holder, then refuse."""
    names = sorted({lock_name(target.name, r) for r in ([resources] if isinstance(resources, str) else resources)})
    for name in names:
        ensure_lock(name)
    log = get_run_logger()
    run_id, attempt = str(flow_run.get_id() or ""), flow_run.get_run_count()
    leases = LockLeases(connect.database(target, "rp-locks"))
    log.info("taking lock %s (waits up to %.0f s for a live holder)", ", ".join(names), wait_s)
    deadline = time.monotonic() + wait_s
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(run_id)) if run_id else None
    while True:
        remaining = deadline - time.monotonic()
        try:
            acquired = acquire_concurrency_slots_with_lease(
                names, 1, timeout_seconds=max(0.5, min(_TRY_S, remaining)), lease_duration=LEASE_S, strict=True,
                holder=holder)
            break
        except TimeoutError:
            if _release_gone_holders(leases, names, run_id, attempt):
                continue
            if remaining <= 0:
                live = ", ".join(f"run {h.flow_run_id} (attempt {h.run_attempt})" for h in leases.holders(names))
                raise LockBusyError(
                    f"another run is acting on {target.name} ({', '.join(names)}); waited {wait_s:.0f} s for "
                    f"{live or 'a holder this tool did not record'} — the Prefect UI's concurrency page shows it; "
                    "a holder that died without a record frees its slot within ~75 s"
                ) from None
    lease_id = acquired.lease_id
    leases.held(lease_id, names, run_id, attempt)
    log.info("lock held: %s", ", ".join(names))
    try:
        with maintain_concurrency_lease(lease_id, LEASE_S, raise_on_lease_renewal_failure=True):
            yield names
    finally:
        release_concurrency_slots_with_lease(lease_id)
        leases.released(lease_id, "released by its holder")


def _release_gone_holders(leases: LockLeases, names: list[str], run_id: str, attempt: int) -> bool:
    """Release the leases on `names` whose holder is gone; True if any was."""
    freed = False
    for held in leases.holders(names):
        why = _gone(held, run_id, attempt)
        if why is None:
            continue
        release_concurrency_slots_with_lease(held.lease_id)
        leases.released(held.lease_id, why)
        get_run_logger().warning("released lock lease %s of run %s: %s", held.lease_id, held.flow_run_id, why)
        freed = True
    return freed


def _gone(held: HeldLease, run_id: str, attempt: int) -> str | None:
    if held.flow_run_id == run_id and held.run_attempt < attempt:
        return f"held by attempt {held.run_attempt} of this run, which is being retried"
    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(UUID(held.flow_run_id)).state
        except (ObjectNotFound, ValueError):
            return "held by a run that does not exist"
    if state is not None and state.is_final():
        return f"held by a run that ended {state.name}"
    if state is not None and (state.is_scheduled() or state.is_pending()):
        # No attempt of it runs now (a crashed run waiting for its retry): its lease is a dead one's.
        return f"held by a run that is {state.name}, not running"
    return None
