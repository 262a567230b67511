"""Error taxonomy shared by every client.

Tasks retry only `RetryableError`s (timeouts, 5xx, dropped connections); a
`PermanentError` (4xx, auth, bad input, a refused host key) fails at once,
because trying again cannot help and may hide the real problem.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BadInputError",
    "ClientError",
    "ConflictError",
    "HostKeyError",
    "InventoryError",
    "NotFoundError",
    "PermanentError",
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


class BadInputError(PermanentError, ValueError):
    """A parameter failed validation before anything was touched."""


class HostKeyError(PermanentError):
    """The SSH host key is unknown or does not match known_hosts."""


class InventoryError(PermanentError, ValueError):
    """A target inventory file is missing, unreadable or invalid."""


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RetryableError)
