"""How our flows use Prefect's engine where its defaults cost an incident seconds.

* `PrestartedThreadPool`: Prefect's thread-pool task runner starts one OS thread per
  submission, lazily. `Thread.start()` waits for the new thread to run, and while the
  tasks already submitted hold the GIL that handshake costs tens of milliseconds each: a
  capture's sixteen collectors spent 0.4 s just being submitted. The pool's threads are
  started before the first task instead, while nothing competes for the GIL.
* `runner_settings()`: Prefect's engine heartbeat thread sleeps in one-second slices and
  every flow run (subflows too) joins it on exit, 0.5 s on average, even though our warm
  runners heartbeat their runs themselves every 5 s (`remediation.runner.liveness`, the
  same `prefect.flow-run.heartbeat` event the crash automation watches). A run executed
  by a warm runner therefore runs with the engine's own heartbeat off.
* Prefect watches every deployment run for a suspension requested from outside (the UI's
  Suspend, an automation) on a thread of its own with its own client and event stream:
  each run waited 0.2 s for that watcher to connect before its first line, and 0.15 s for
  its thread to end. Under `runner_settings()` the same watcher starts 2 s into the run
  and stops beside it, so a run is never kept waiting for it; it reads the run's state
  when it starts, so a suspension is still noticed, at worst 2 s later. A capture over
  in less than that never starts one.
* `shared_api_client()`: every flow run builds its own API client unless one is already in
  Prefect's context, and every new client builds a TLS context (the system's CA bundle
  parsed again, 70 ms of CPU, even for a plain-http API): a quarter of a capture's
  main-thread time. A warm child builds the one client its run will use while it waits.
* `start_event_and_log_workers()`: Prefect starts its events worker (a thread and a
  websocket) and its API-log worker (a thread and an API client) on a process's first event
  and first log line, i.e. inside the first task a run submits. A warm child starts both
  while it waits instead.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Self, cast

import prefect.flow_engine
from prefect.context import SyncClientContext
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from remediation.clients.result_storage import build_storage_client

__all__ = ["PrestartedThreadPool", "prestarted_threads", "runner_settings", "shared_api_client",
           "start_event_and_log_workers", "warm_result_storage"]


class PrestartedThreadPool(ThreadPoolTaskRunner[Any]):
    """`ThreadPoolTaskRunner` whose first `threads` workers exist before the first submission."""

    def __init__(self, max_workers: int | None = None, threads: int = 16) -> None:
        super().__init__(max_workers=max_workers)
        self._threads = max(0, min(threads, self._max_workers))

    def duplicate(self) -> PrestartedThreadPool:
        return type(self)(max_workers=self._max_workers, threads=self._threads)

    def __enter__(self) -> Self:
        super().__enter__()
        assert self._executor is not None
        if self._threads:
            # Each worker blocks on the barrier, so the executor cannot hand two warm-ups to one
            # thread: exactly `threads` workers are started, then all return to idle together.
            gate = threading.Barrier(self._threads + 1, timeout=5.0)
            for _ in range(self._threads):
                self._executor.submit(_wait_quietly, gate)
            _wait_quietly(gate)  # a slow start only costs the speed-up, never the run
        return self


def prestarted_threads(threads: int) -> TaskRunner[PrefectFuture[Any]]:
    """A flow's `task_runner=`: `threads` workers started up front."""
    # Prefect annotates `task_runner` with the base future type; its own thread pool does not match it either.
    return cast(TaskRunner[PrefectFuture[Any]], PrestartedThreadPool(threads=threads))


def _wait_quietly(gate: threading.Barrier) -> None:
    with suppress(threading.BrokenBarrierError):
        gate.wait()


@contextmanager
def runner_settings() -> Iterator[None]:
    """Settings for a flow run executed by a warm runner (see the module docstring)."""
    observe = prefect.flow_engine.observe_flow_run_suspension
    prefect.flow_engine.observe_flow_run_suspension = _beside_the_run(observe)
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    finally:
        prefect.flow_engine.observe_flow_run_suspension = observe


#: A run's first seconds are its busiest (tasks submitted, files uploaded): the watcher's thread,
#: event loop, client and websocket would compete with them for the GIL, and most captures are
#: over by then. Prefect's own fallback, polling the run's state, looks every 10 s.
WATCHER_DELAY_S = 2.0


def _beside_the_run(observe: Callable[..., Any]) -> Callable[..., Any]:
    """Prefect's suspension watcher (`observe`, a context manager), entered `WATCHER_DELAY_S` into the run
    and left, both on threads of their own; a run over by then never starts one."""

    @contextmanager
    def observe_beside(*args: Any, **kwargs: Any) -> Iterator[None]:
        watcher = observe(*args, **kwargs)
        entered, over = threading.Event(), threading.Event()

        def start() -> None:
            if over.wait(WATCHER_DELAY_S):
                return
            watcher.__enter__()
            entered.set()

        context = contextvars.copy_context()  # its client is built from this run's settings
        starting = threading.Thread(target=context.run, args=(start,), daemon=True, name="suspension-watcher")
        starting.start()
        try:
            yield
        finally:
            over.set()

            def stop() -> None:
                starting.join()
                if entered.is_set():
                    watcher.__exit__(None, None, None)

            threading.Thread(target=stop, daemon=True, name="suspension-watcher-stop").start()

    return observe_beside


@contextmanager
def shared_api_client() -> Iterator[None]:
    """One Prefect API client for every flow run (and its tasks) started inside: the engine and
    `get_client(sync_client=True)` take it from the context instead of building their own."""
    with SyncClientContext.get_or_create():
        yield


def start_event_and_log_workers() -> None:
    """Start Prefect's events and API-log workers now (both are per-process singletons the run then uses)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    EventsWorker.instance()
    APILogWorker.instance()


def warm_result_storage() -> None:
    """Resolve the default result storage block and build its client now (Prefect caches both per
    process): a warm child's run otherwise paid them on its first persisted result — 0.18 s to
    load the block, 0.22 s for its S3 client, 0.5 s on that first task in all."""
    from prefect.results import get_default_result_storage

    build_storage_client(get_default_result_storage())
