"""A paused run's wait for its answer: an event that comes before its state is readable is followed up
at once, not left to the slow safety poll; without events the run polls; the deadline ends the wait."""

from __future__ import annotations

import threading
import time

from remediation.flowkit import pause


class Changes:
    """StateChanges as the waiter sees it: `event()` wakes a wait, as the websocket listener does."""

    def __init__(self, listening: bool) -> None:
        self.listening = listening
        self._changed = threading.Event()
        self.waits: list[float] = []

    def event(self) -> None:
        self._changed.set()

    def wait(self, timeout_s: float) -> bool:
        self.waits.append(timeout_s)
        changed = self._changed.wait(timeout_s)
        self._changed.clear()
        return changed


class Run:
    """A run whose Running state becomes readable at `visible_at` (monotonic), counting reads."""

    def __init__(self) -> None:
        self.visible_at = float("inf")
        self.reads = 0

    def is_running(self) -> bool:
        self.reads += 1
        return time.monotonic() >= self.visible_at


def _answer_later(changes: Changes, run: Run, *, event_after_s: float, commit_lag_s: float) -> None:
    def answer() -> None:
        time.sleep(event_after_s)
        run.visible_at = time.monotonic() + commit_lag_s  # the event goes out before the commit
        changes.event()
    threading.Thread(target=answer, daemon=True).start()


def test_an_event_that_comes_before_its_state_is_readable_is_followed_up_within_a_fraction_of_a_second() -> None:
    changes, run = Changes(listening=True), Run()
    _answer_later(changes, run, event_after_s=0.1, commit_lag_s=0.03)
    began = time.monotonic()
    assert pause.await_resumed(changes, run.is_running, time.monotonic() + 10)
    took = time.monotonic() - began
    # Before the follow-up reads, the read at the event found Paused and the next was EVENTS_POLL_S later.
    assert took < 0.1 + pause.RECHECK_S[0] + pause.RECHECK_S[1] + 0.2 < pause.EVENTS_POLL_S, took
    assert run.reads >= 2, "the read at the event saw the old state; a follow-up read saw the new one"


def test_while_events_flow_and_nothing_changes_the_run_reads_only_at_the_safety_poll() -> None:
    changes, run = Changes(listening=True), Run()
    assert not pause.await_resumed(changes, run.is_running, time.monotonic() + 0.6)
    assert len(changes.waits) == 1 and changes.waits[0] > pause.RECHECK_S[-1], "no follow-up reads without an event"
    assert run.reads == 1


def test_without_events_the_run_polls_and_finds_its_answer() -> None:
    changes, run = Changes(listening=False), Run()
    run.visible_at = time.monotonic() + 0.2
    began = time.monotonic()
    assert pause.await_resumed(changes, run.is_running, time.monotonic() + 10)
    assert time.monotonic() - began < pause.POLL_S + 0.3
    assert changes.waits[0] == pause.POLL_S


def test_the_deadline_ends_the_wait_without_an_answer() -> None:
    changes, run = Changes(listening=True), Run()
    began = time.monotonic()
    assert not pause.await_resumed(changes, run.is_running, time.monotonic() + 0.25)
    assert 0.2 < time.monotonic() - began < 1
