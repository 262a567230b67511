"""A paused run's wake-up from its state events: an event wakes it, a missing stream leaves it polling,
and leaving never waits on the websocket."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import uuid4

import pytest
from prefect.events import clients

from remediation.flowkit.run_events import StateChanges


class FakeSubscriber:
    """Yields one event per item put on `events` (from any thread), forever, like Prefect's subscriber."""

    def __init__(self, filter: Any = None, **_: Any) -> None:  # Prefect names the keyword `filter`
        self.filter = filter
        self.events: asyncio.Queue[str] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    async def __aenter__(self) -> FakeSubscriber:
        self.loop, self.events = asyncio.get_running_loop(), asyncio.Queue()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.closed = True

    def __aiter__(self) -> FakeSubscriber:
        return self

    async def __anext__(self) -> str:
        assert self.events is not None
        return await self.events.get()

    def emit(self, name: str) -> None:
        assert self.loop is not None and self.events is not None
        self.loop.call_soon_threadsafe(self.events.put_nowait, name)


def _wait_until(check: Any, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


def test_an_event_wakes_the_waiter_at_once_and_leaving_is_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeSubscriber] = []
    monkeypatch.setattr(clients, "get_events_subscriber", lambda **kw: made.append(FakeSubscriber(**kw)) or made[-1])
    run_id = uuid4()
    with StateChanges(run_id) as changes:
        _wait_until(lambda: made and made[0].events is not None)
        assert not changes.wait(0.05) and not changes.listening, "a socket that delivered nothing is not trusted"
        began = time.monotonic()
        made[0].emit("prefect.flow-run.Running")
        assert changes.wait(2) and time.monotonic() - began < 0.5
        assert changes.listening, "the first event proves the server's live stream is in place"
        assert not changes.wait(0.05)
        made[0].emit("prefect.flow-run.Paused")
        assert changes.wait(2)
        leaving = time.monotonic()
    assert time.monotonic() - leaving < 0.5 and made[0].closed and not changes.listening
    flt = made[0].filter
    assert flt.resource.id == [f"prefect.flow-run.{run_id}"] and flt.event.prefix == ["prefect.flow-run."]


def test_without_the_stream_the_waiter_is_not_listening_and_only_its_timeout_wakes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(**_: Any) -> Any:
        raise ConnectionRefusedError("websocket refused by the proxy")

    monkeypatch.setattr(clients, "get_events_subscriber", refused)
    with StateChanges(uuid4()) as changes:
        _wait_until(lambda: changes._done.is_set())
        assert not changes.listening
        began = time.monotonic()
        assert not changes.wait(0.2)
        assert time.monotonic() - began >= 0.19


def test_leaving_before_the_listener_started_never_subscribes(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeSubscriber] = []
    monkeypatch.setattr(clients, "get_events_subscriber", lambda **kw: made.append(FakeSubscriber(**kw)) or made[-1])
    changes = StateChanges(uuid4())
    changes._leaving.set()  # as __exit__ does first, here before the thread gets going
    began = time.monotonic()
    with changes:
        pass
    assert time.monotonic() - began < 1 and made == [] and changes._done.is_set()
