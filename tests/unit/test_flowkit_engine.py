"""The engine settings our flows run with: a thread pool started up front, no engine heartbeat on a runner."""

from __future__ import annotations

import threading
import time

from prefect.settings import get_current_settings

from remediation.flowkit.engine import PrestartedThreadPool, prestarted_threads, runner_settings


def test_the_pool_exists_before_the_first_submission_and_is_idle() -> None:
    runner = PrestartedThreadPool(threads=6)
    before = threading.active_count()
    with runner:
        executor = runner._executor
        assert executor is not None
        assert len(executor._threads) == 6  # exactly the asked number, each its own thread
        assert threading.active_count() - before == 6
        # Every warm-up returns at once (a worker marks itself idle just after): then the next six
        # submissions start no thread.
        deadline = time.monotonic() + 5
        while executor._idle_semaphore._value < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate = threading.Barrier(7, timeout=5)
        futures = [executor.submit(gate.wait) for _ in range(6)]
        gate.wait()
        # The barrier only opens with all seven parties there: six at once, on six threads.
        assert len({f.result(timeout=5) for f in futures}) == 6
        assert len(executor._threads) == 6
    assert runner._executor is None


def test_bounded_by_max_workers_and_duplicated_with_its_size() -> None:
    runner = PrestartedThreadPool(max_workers=2, threads=16)
    with runner:
        assert runner._executor is not None and len(runner._executor._threads) == 2
    copy = runner.duplicate()
    assert isinstance(copy, PrestartedThreadPool) and copy._threads == 2 and copy._max_workers == 2
    assert isinstance(prestarted_threads(3), PrestartedThreadPool)


def test_runner_settings_turn_the_engine_heartbeat_off_only_inside() -> None:
    outside = get_current_settings().flows.heartbeat_frequency
    with runner_settings():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == outside

