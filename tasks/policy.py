"""What every task shares: the redaction boundary (`task`), and retry and caching policies — retry only
what is worth retrying, with backoff and jitter.

`task` is `prefect.task` with one thing added around the function, so that nothing a task saw
leaves it for Prefect unredacted: the target's secret values are registered for this process
(`scrub.for_target`), an exception's text is scrubbed before Prefect turns it into the Failed
state's message, a log traceback and a pickled result, and a returned value's strings are
scrubbed before they are persisted or handed to the flow (whose state messages are built from
them). Log records — ours and Prefect's own — are scrubbed as they are created
(`install_log_redaction`, installed when this module is imported, i.e. by every task module).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

import prefect
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task, exponential_backoff

from remediation.errors import RetryableError
from remediation.evidence.scrub import for_target, install_log_redaction, scrub_exception, scrub_value
from remediation.target.inventory import Target

__all__ = ["IDEMPOTENT_WRITE", "READ_ONLY", "SIDE_EFFECT", "retry_if_retryable", "task"]

P = ParamSpec("P")
R = TypeVar("R")

install_log_redaction()

#: Resolving a target's secrets (Prefect Secret blocks are API calls) once a while per process is enough.
_KNOWN_FOR_S = 300.0
_known: dict[str, float] = {}
_known_lock = threading.Lock()


def _register(target: Target) -> None:
    key = target.model_dump_json()
    now = time.monotonic()
    with _known_lock:
        if now - _known.get(key, -_KNOWN_FOR_S) < _KNOWN_FOR_S:
            return
        _known[key] = now
    for_target(target)  # remembers every value it resolves for `scrub`


def _redacting(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for value in (*args, *kwargs.values()):
            if isinstance(value, Target):
                _register(value)
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:  # BaseExceptions are Prefect's pause/cancel signals: left alone
            clean = scrub_exception(exc)
            if clean is exc:
                raise
            raise clean from None
        return cast(R, scrub_value(out))

    return run


def task(**options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """`prefect.task(**options)` around the redaction boundary (see the module docstring)."""

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        return cast(Task[P, R], prefect.task(**options)(_redacting(fn)))

    return decorate


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
