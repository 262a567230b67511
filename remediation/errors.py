"""Error taxonomy shared by every client.

Tasks retry only `RetryableError`s (timeouts, 5xx, dropped connections); a
`PermanentError` (4xx, auth, bad input, a refused host key) fails at once,
because trying again cannot help and may hide the real problem.

A message may quote what a system said (a stderr tail, a response body). Clients given the
target's redactor redact it at the source; every task's boundary (`tasks/policy.py`) scrubs
the message again, in place, before Prefect stores it as a state message or a result.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BadInputError",
    "ClientError",
    "CommandFailedError",
    "ConflictError",
    "HostKeyError",
    "InventoryError",
    "NotFoundError",
    "PermanentError",
    "PushRejectedError",
    "RetryableError",
    "is_retryable",
]


class ClientError(Exception):
    """Base for every error a client raises about the system it talks to."""


class RetryableError(ClientError):
    """Worth trying again: a timeout, a 5xx, a reset connection, a serialization failure."""


class PermanentError(ClientError):
    """Trying again cannot help: fix the input, the credentials or the target first."""


class AuthError(PermanentError):
    """401/403, a rejected SSH key, a database password refused."""


class NotFoundError(PermanentError):
    """The thing named does not exist (404, unknown commit, missing S3 key)."""


class ConflictError(PermanentError):
    """The target's state forbids the change (409, non-fast-forward push after retries)."""


class PushRejectedError(ConflictError):
    """The remote branch moved on (non-fast-forward): fetch, rebase and push again; never force."""


class CommandFailedError(PermanentError):
    """A remote command ran and exited non-zero; `exit_code` and the stderr tail are in the message."""

    # A default keeps the exception picklable (Prefect stores failed task states).
    def __init__(self, message: str, exit_code: int = -1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class BadInputError(PermanentError, ValueError):
    """A parameter failed validation before anything was touched."""


class HostKeyError(PermanentError):
    """The SSH host key is unknown or does not match known_hosts."""


class InventoryError(PermanentError, ValueError):
    """A target inventory file is missing, unreadable or invalid."""


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RetryableError)
