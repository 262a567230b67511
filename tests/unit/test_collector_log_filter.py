"""A capture's log keeps what the on-call needs: Prefect's notice about threaded timeouts, once per
collector, is dropped; every other line of the task logger is kept."""

from __future__ import annotations

import logging
from unittest.mock import MagicMock

from prefect.logging.loggers import task_run_logger

import remediation.evidence.collectors  # noqa: F401  (installs the filter on Prefect's task-run logger)


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


def test_the_threaded_timeout_notice_is_dropped_and_nothing_else() -> None:
    logger, keep = logging.getLogger("prefect.task_runs"), _Keep()
    logger.addHandler(keep)
    run = MagicMock(id="t", flow_run_id=None)
    run.name = "capture-host-git"
    try:
        # As Prefect's task engine logs it: through the run logger's adapter, which formats the message first.
        adapter = task_run_logger(run)
        adapter.warning("Timeout of %s seconds configured for this task, but the task is running in a worker "
                        "thread. Timeouts in worker threads cannot interrupt blocking operations", 45.0)
        adapter.warning("Timeout of 45.0 seconds elapsed: something else")
        adapter.warning("Task run failed with exception: TimeoutError()")
    finally:
        logger.removeHandler(keep)
    assert keep.seen == ["Timeout of 45.0 seconds elapsed: something else",
                         "Task run failed with exception: TimeoutError()"]
