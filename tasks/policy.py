"""Retry and caching policies every task shares: retry only what is worth retrying, with backoff and jitter."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from remediation.errors import RetryableError

__all__ = ["IDEMPOTENT_WRITE", "READ_ONLY", "SIDE_EFFECT", "retry_if_retryable"]


def _failed_retryably(state: Any) -> bool:
    try:
        state.result()
    except RetryableError:
        return True
    except Exception:  # a permanent error, or anything we do not understand: fail now
        return False
    return False


def retry_if_retryable(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn` for sync tasks: a 4xx, bad input or refused host key fails at once."""
    return _failed_retryably(state)


#: Read-only collectors: several quick tries. Never cached (a re-run must read fresh state) and
#: never persisted (what they read goes through redaction into evidence, not into result storage).
READ_ONLY: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=0.5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_retryable,
}

#: Writes that are idempotent by themselves (identical objects skipped, new keys under new prefixes):
#: retried, never cached — a re-run must look at the store again — and not persisted.
IDEMPOTENT_WRITE: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=1),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_retryable,
}

#: Side-effecting steps: each checks current state first, so a retry never applies twice.
SIDE_EFFECT: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_retryable,
    "persist_result": True,
}
