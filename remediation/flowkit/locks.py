"""One remediation at a time per target resource: a Prefect global concurrency limit of 1.

The limit is created up front and taken with `strict=True`: without strict, Prefect
only logs a warning for a missing limit and locks nothing. A killed holder's slot is
freed when its lease expires and the server's repossessor (every 15 s) revokes it:
with `LEASE_S = 60` (the server's minimum) that is at most ~75 s after the crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from remediation.errors import ConflictError

__all__ = ["LEASE_S", "LockBusyError", "ensure_lock", "lock_name", "target_lock"]

LEASE_S = 60.0  # the server refuses shorter leases (422: lease_duration >= 60)


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
def target_lock(target: str, resources: str | list[str], *, wait_s: float) -> Iterator[list[str]]:
    """Hold `target`'s resources for the block (all at once, so two runs never deadlock);
    wait up to `wait_s`, then refuse."""
    names = sorted({lock_name(target, r) for r in ([resources] if isinstance(resources, str) else resources)})
    for name in names:
        ensure_lock(name)
    log = get_run_logger()
    log.info("taking lock %s (waits up to %.0f s)", ", ".join(names), wait_s)
    try:
        with concurrency(names, occupy=1, timeout_seconds=wait_s, strict=True, lease_duration=LEASE_S):
            log.info("lock held: %s", ", ".join(names))
            yield names
    except TimeoutError:
        raise LockBusyError(
            f"another run is acting on {target} ({', '.join(names)}); waited {wait_s:.0f} s — "
            "the Prefect UI's concurrency page shows the holder"
        ) from None
