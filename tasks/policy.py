"""Task policies every runbook shares: retry only what is worth retrying, with backoff and jitter."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from remediation.errors import RetryableError

__all__ = ["READ_ONLY", "SIDE_EFFECT", "retry_if_retryable", "retry_if_retryable_async"]


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


async def retry_if_retryable_async(task: Any, task_run: Any, state: Any) -> bool:
    # On async tasks Prefect awaits the condition; a sync one that reads state.result()
    # gets a coroutine back and silently never retries.
    try:
        await state.result()
    except RetryableError:
        return True
    except Exception:
        return False
    return False


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

#: Side-effecting steps: each checks current state first, so a retry never applies twice.
SIDE_EFFECT: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_retryable,
    "persist_result": True,
}
