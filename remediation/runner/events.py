"""The runner's ears: Prefect's event stream, filtered to its pool's Scheduled, Cancelling, Crashed runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

__all__ = ["CANCELLING", "CRASHED", "SCHEDULED", "SCHEDULED_EVENTS", "follow"]

log = logging.getLogger("remediation.runner")

#: Events that concern the runner; all carry the run's pool as a related resource. A run the UI retries
#: becomes AwaitingRetry (a Scheduled-type state) and is started like a new one.
SCHEDULED, CANCELLING = "prefect.flow-run.Scheduled", "prefect.flow-run.Cancelling"
#: Whoever marked it (a replica's supervisor, the silence automation): its task runs get closed.
CRASHED = "prefect.flow-run.Crashed"
SCHEDULED_EVENTS = (SCHEDULED, "prefect.flow-run.AwaitingRetry")


async def follow(pool_id: UUID, pool_name: str, stopping: asyncio.Event, handle: Callable[[Any], None]) -> None:
    """Pass each event to `handle`; reconnect with backoff until `stopping` (the poll covers the gaps)."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
    from prefect.events.schemas.events import ResourceSpecification

    flt = EventFilter(
        event=EventNameFilter(name=[*SCHEDULED_EVENTS, CANCELLING, CRASHED]),
        related=EventRelatedFilter(labels=ResourceSpecification(
            {"prefect.resource.id": f"prefect.work-pool.{pool_id}"})),
    )
    delay = 1.0
    while not stopping.is_set():
        try:
            async with get_events_subscriber(filter=flt, reconnection_attempts=3) as events:
                log.info("listening to the event stream for pool %s", pool_name)
                delay = 1.0
                async for event in events:
                    handle(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("event stream lost (%s: %s); polling meanwhile, reconnecting in %.0f s",
                        type(exc).__name__, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
