"""`StartDispatcher`: journaled capture requests become Prefect runs in the background.

The receiver's answer must not wait on Prefect's `create_flow_run` during a storm: the
server creates about 15 runs a second on 2 cores, so the hundredth new group of a burst
would wait seconds. A first notification is journaled (fsynced) and queued here; at most
`concurrency` creates are in flight; a retryable failure (Prefect down, deployment not yet
registered) is retried with capped exponential backoff and jitter until Prefect takes it;
a refusal (422) is journaled as refused and logged. Repeats of a key are answered from
memory (an LRU of key → run) or joined to the start already in flight. Journal writes run
on one I/O thread: an fsync slowed by a busy disk delays only the notification it guards.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from remediation.alerts.journal import IntakeJournal, JournalEntry
from remediation.alerts.starter import AlertRecord, RunStarter, StartedRun, StartError

__all__ = ["StartDispatcher", "Ticket"]

log = logging.getLogger("remediation.alerts")


@dataclass(frozen=True)
class Ticket:
    #: Known already (a repeat): nothing is queued.
    run_id: UUID | None
    #: True for the call that journaled the key; repeats joined to it are False.
    first: bool = False
    #: The key's start began at once (a free slot, nothing queued ahead of it).
    immediate: bool = False
    #: Resolves with the first attempt's outcome: a `StartedRun`, or the `StartError` it met.
    first_attempt: asyncio.Future[StartedRun | StartError] | None = None


class StartDispatcher:
    def __init__(
        self, starter: RunStarter, journal: IntakeJournal, *, concurrency: int = 4,
        record: Callable[[AlertRecord], None] | None = None, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
        max_known: int = 10_000, known_ttl_s: float = 600.0, prune_every_s: float = 3600.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.starter = starter
        self.journal = journal
        self.concurrency = concurrency
        self._record = record
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._max_known = max_known
        self._known_ttl_s = known_ttl_s
        self._known: OrderedDict[str, tuple[float, UUID]] = OrderedDict()
        self._entries: dict[str, JournalEntry] = {}        # journaled here, not started yet
        self._first: dict[str, asyncio.Future[StartedRun | StartError]] = {}
        self._attempts: dict[str, int] = {}
        self._queue: deque[str] = deque()
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake-journal")
        self._accepting: list[tuple[JournalEntry, str, asyncio.Future[None]]] = []
        self._committing = False
        self._prune_every_s = prune_every_s
        self._pruned = time.monotonic()  # the journal prunes when it opens

    # --- intake side ---------------------------------------------------------------------------
    def lookup(self, key: str) -> Ticket | None:
        """A repeat answered from memory (run known, or its start under way), else None."""
        known = self._known.get(key)
        if known is not None and known[0] > time.monotonic():
            return Ticket(run_id=known[1])
        if key in self._entries:
            return Ticket(run_id=None, first_attempt=self._first.get(key))
        return None

    @property
    def backlog(self) -> int:
        """Keys journaled by this process and not started yet (queued, starting, retrying, accepting)."""
        return len(self._entries)

    async def submit(self, entry: JournalEntry, incident_id: str) -> Ticket:
        key = entry.request.idempotency_key
        repeat = self.lookup(key)
        if repeat is not None:
            return repeat
        future = self._claim(entry)  # before the journal write: repeats during the fsync join this one
        try:
            run_id = await self._accept(entry, incident_id)   # durable from here on
        except BaseException:
            self._entries.pop(key, None)
            self._first.pop(key, None)
            raise
        if run_id is not None:
            self._entries.pop(key, None)
            self._first_outcome(key, StartedRun(flow_run_id=run_id, created=False))
            self._remember(key, run_id)
            return Ticket(run_id=run_id)
        immediate = self._running < self.concurrency and not self._queue
        self._queue_start(key)
        return Ticket(run_id=None, first=True, immediate=immediate, first_attempt=future)

    def resume(self) -> int:
        """Queue what the journal holds unstarted (a previous process's accepted alerts)."""
        pending = [e for e in self.journal.pending() if e.request.idempotency_key not in self._entries]
        for entry in pending:
            self._claim(entry)
            self._queue_start(entry.request.idempotency_key)
        if pending:
            log.warning("resuming %d accepted alert(s) whose capture run was not yet created", len(pending))
        return len(pending)

    def stats(self) -> dict[str, int]:
        return {"queued": len(self._queue), "starting": self._running, "waiting": len(self._entries)}

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for every start in flight or queued (tests; shutdown leaves the rest journaled)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._tasks:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            await asyncio.wait(set(self._tasks), timeout=left)
        await self.in_io(lambda: None)  # the journal writes queued behind them

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        self._io.shutdown(wait=True)

    # --- the background -----------------------------------------------------------------------
    def _claim(self, entry: JournalEntry) -> asyncio.Future[StartedRun | StartError]:
        """This process owns the key's start; the future carries its first attempt's outcome."""
        key = entry.request.idempotency_key
        self._entries[key] = entry
        future: asyncio.Future[StartedRun | StartError] = asyncio.get_running_loop().create_future()
        self._first[key] = future
        return future

    def _queue_start(self, key: str) -> None:
        self._queue.append(key)
        self._pump()

    async def _accept(self, entry: JournalEntry, incident_id: str) -> UUID | None:
        """The key's run id if the journal has one; else journal it, sharing a commit (and its
        fsync) with every accept that arrives while the previous commit is in flight."""
        known = self.journal.run_id(entry.request.idempotency_key)
        if known is not None:
            return known
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._accepting.append((entry, incident_id, future))
        if not self._committing:
            self._committing = True
            self._spawn(self._commit_batches())
        await future
        return None

    async def _commit_batches(self) -> None:
        try:
            while self._accepting:
                batch, self._accepting = self._accepting, []
                try:
                    await self.in_io(self.journal.accept_many, [(e, inc) for e, inc, _ in batch])
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
            if time.monotonic() - self._pruned > self._prune_every_s:
                self._pruned = time.monotonic()
                self._io.submit(self.journal.prune)
        finally:
            self._committing = False

    async def in_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a journal write on the journal's own thread, in order with its commits: a write on the
        event loop would wait there for a commit's fsync, and every request would wait with it."""
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pump(self) -> None:
        while self._queue and self._running < self.concurrency:
            self._running += 1
            self._spawn(self._start(self._queue.popleft()))

    async def _start(self, key: str) -> None:
        entry = self._entries[key]
        try:
            run = await self.starter.start(entry.request)
        except StartError as exc:
            self._first_outcome(key, exc)
            if exc.retryable:
                self._spawn(self._retry_later(key, exc))
            else:
                self._entries.pop(key, None)
                self._io.submit(self.journal.failed, key, str(exc))
                log.error("alert capture %s refused by Prefect, not retried: %s", entry.request.run_name, exc)
            return
        except Exception as exc:  # a bug must not leave the key stuck: retry it like an outage
            self._first_outcome(key, StartError(f"{type(exc).__name__}: {exc}", retryable=True))
            self._spawn(self._retry_later(key, exc))
            return
        finally:
            self._running -= 1
            self._pump()
        self._io.submit(self.journal.started, key, run.flow_run_id)
        self._entries.pop(key, None)
        self._attempts.pop(key, None)
        self._remember(key, run.flow_run_id)
        self._first_outcome(key, run)
        if run.created and entry.record is not None and self._record is not None:
            self._record(replace(entry.record, flow_run_id=run.flow_run_id))
        log.info("capture run %s %s for %s", run.flow_run_id, "created" if run.created else "already existed",
                 entry.request.run_name)

    async def _retry_later(self, key: str, exc: Exception) -> None:
        attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
        delay = min(self._max_backoff_s, self._backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter)
        log.warning("capture %s not started (attempt %d: %s); retrying in %.1f s",
                    self._entries[key].request.run_name, attempt, exc, delay)
        await asyncio.sleep(delay)
        self._queue_start(key)

    def _first_outcome(self, key: str, outcome: StartedRun | StartError) -> None:
        future = self._first.pop(key, None)
        if future is not None and not future.done():
            future.set_result(outcome)

    def _remember(self, key: str, run_id: UUID) -> None:
        self._known[key] = (time.monotonic() + self._known_ttl_s, run_id)
        self._known.move_to_end(key)
        while len(self._known) > self._max_known:
            self._known.popitem(last=False)
