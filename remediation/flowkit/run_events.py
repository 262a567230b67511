"""Wake a paused run the moment its state changes, from Prefect's events stream.

A paused run learns of its answer by reading its own state. Polling alone trades load for delay
(one read per paused run every 0.5 s, and an approval taking effect 0.25 s later on average);
the server already emits `prefect.flow-run.<State>` for every change, ~50 ms after it, on the
same websocket Prefect's own suspension watcher listens to. `StateChanges` listens there on its
own thread and wakes the waiter; the waiter still reads the state itself, so an event is only a
hint: a missed one (websocket refused by a proxy, a reconnect) costs a poll, never an answer.
An event can also come before its state is readable (Prefect emits it inside the transaction that
writes the state), so the waiter reads again shortly after each one (`pause.RECHECK_S`).

The stream is trusted only once it has delivered an event. The server subscribes the socket to
its live stream some time after the client has sent its filter, then replays the last minute from
its database, where events land in batches: an answer given in between reached neither (the
drill's quick approver lost ~2 s to the safety poll on one step in two). Prefect's client asks for
that replay, so the run's own recent events (its Paused at least) arrive once the live
subscription is in place; the state read that follows them sees any answer from before it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from types import TracebackType
from typing import Any
from uuid import UUID

__all__ = ["StateChanges"]

log = logging.getLogger(__name__)


class StateChanges:
    """`with StateChanges(run_id) as changes: changes.wait(timeout)` — True when the server reported
    a state change of the run since the last wait, False on timeout."""

    def __init__(self, flow_run_id: UUID) -> None:
        self.flow_run_id = flow_run_id
        self._changed = threading.Event()
        self._trusted = threading.Event()
        self._done = threading.Event()
        self._leaving = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        """The stream has delivered an event and is still open: events wake the waiter (else only its
        polls do)."""
        return self._trusted.is_set() and not self._done.is_set()

    def __enter__(self) -> StateChanges:
        context = contextvars.copy_context()  # the run's settings (API URL, auth) in the listener too
        self._thread = threading.Thread(target=context.run, args=(self._run,), name="run-state-events", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout_s: float) -> bool:
        changed = self._changed.wait(timeout_s)
        self._changed.clear()
        return changed

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        # Set before the task is read, and the listener reads it after setting its task: whichever is
        # first, a listener that has not started yet never subscribes, one that has is cancelled.
        self._leaving.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not self._done.is_set():
            loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        try:
            asyncio.run(self._listen())
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # the polls still find the answer; say why the events did not
            log.debug("state events for run %s unavailable: %s: %s", self.flow_run_id, type(exc).__name__, exc)
        finally:
            self._done.set()

    async def _listen(self) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        if self._leaving.is_set():
            return
        # No `occurred` bound: Prefect's subscriber sets its own (the last minute, replayed). A
        # replayed Running is harmless: the waiter reads the state and finds the run still paused.
        # Heartbeats are not state changes: each would only cost the waiter a read.
        flt = EventFilter(
            event=EventNameFilter(prefix=["prefect.flow-run."], exclude_name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{self.flow_run_id}"]),
        )
        subscriber: Any = get_events_subscriber(filter=flt, reconnection_attempts=3)
        async with subscriber:
            async for _ in subscriber:
                self._trusted.set()  # the server's live stream is in place once anything arrives
                self._changed.set()
