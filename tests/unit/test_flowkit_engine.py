"""The engine settings our flows run with: a thread pool started up front; on a runner, no engine heartbeat and
no waiting for Prefect's suspension watcher."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prefect.settings import get_current_settings

from remediation.flowkit.engine import PrestartedThreadPool, prestarted_threads, runner_settings, warm_result_storage


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



def test_runner_settings_keep_prefects_suspension_watcher_but_never_wait_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prefect.flow_engine

    from remediation.flowkit import engine

    calls: list[tuple[str, str]] = []

    @contextmanager
    def slow_watcher(flow_run_id: str, request: object) -> Iterator[None]:
        time.sleep(0.3)  # Prefect's connects its event stream first
        calls.append(("enter", threading.current_thread().name))
        yield
        time.sleep(0.3)  # and joins its thread last
        calls.append(("exit", threading.current_thread().name))

    monkeypatch.setattr(engine, "WATCHER_DELAY_S", 0.2)
    monkeypatch.setattr(prefect.flow_engine, "observe_flow_run_suspension", slow_watcher)

    def run(body_s: float) -> float:
        """The time the watcher added to a run of `body_s` (entering `runner_settings` is not counted)."""
        with runner_settings():
            began = time.monotonic()
            with prefect.flow_engine.observe_flow_run_suspension("run-1", object()):
                body_began = time.monotonic()
                time.sleep(body_s)
                body = time.monotonic() - body_began
            added = time.monotonic() - began - body
        assert prefect.flow_engine.observe_flow_run_suspension is slow_watcher, "restored on the way out"
        return added

    # The watcher takes 0.3 s to start and 0.3 s to stop: a run that waited for either would show it.
    assert run(0.05) < 0.25 and calls == [], "a run over before the delay never starts the watcher"
    time.sleep(0.5)
    assert calls == []
    assert run(0.8) < 0.25, "a longer run neither waited for the watcher to start nor to stop"
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [c[0] for c in calls] == ["enter", "exit"], "the watcher ran, and was stopped"
    assert all(name.startswith("suspension-watcher") for _, name in calls)


def test_warming_the_result_storage_builds_the_client_the_first_persisted_result_then_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prefect.results
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket
    from prefect_aws.credentials import _get_client_cached

    storage = S3Bucket(bucket_name="rp-results", credentials=AwsCredentials(
        aws_access_key_id="warm-test", aws_secret_access_key="not-a-secret", region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url="http://127.0.0.1:9")))
    monkeypatch.setattr(prefect.results, "get_default_result_storage", lambda: storage)
    warm_result_storage()
    before = _get_client_cached.cache_info()
    storage._get_s3_client()  # what S3Bucket.write_path asks for when the run persists a result
    after = _get_client_cached.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses), "the run's client was built while warming"


def test_warming_a_local_result_storage_does_nothing_and_raises_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    import prefect.results
    from prefect.filesystems import LocalFileSystem

    asked: list[str] = []
    monkeypatch.setattr(prefect.results, "get_default_result_storage",
                        lambda: asked.append("storage") or LocalFileSystem(basepath=str(tmp_path)))
    warm_result_storage()
    assert asked == ["storage"] and list(tmp_path.iterdir()) == []
