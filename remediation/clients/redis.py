"""Redis over its own protocol (RESP2): the few commands evidence needs, no redis-cli on any host."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Protocol

from remediation.errors import AuthError, PermanentError, RetryableError

__all__ = ["Redis", "ReplyError", "RespRedis"]


class ReplyError(PermanentError):
    """Redis answered one command with an error (`-ERR …`, `-WRONGTYPE …`)."""


class Redis(Protocol):
    def call(self, *args: str) -> Any: ...
    def pipeline(self, commands: Sequence[Sequence[str]]) -> list[Any]: ...
    def close(self) -> None: ...


def _encode(args: Sequence[str]) -> bytes:
    return f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
    )


class RespRedis:
    """The smallest Redis client that evidence needs: send commands, read their replies (RESP2)."""

    def __init__(self, address: str, port: int, timeout_s: float) -> None:
        try:
            self._sock = socket.create_connection((address, port), timeout=timeout_s)
        except OSError as exc:
            raise RetryableError(f"redis {address}:{port} unreachable: {exc}") from None
        self._file = self._sock.makefile("rb")

    def call(self, *args: str) -> Any:
        """One command; an error reply raises (`AuthError` for NOAUTH / WRONGPASS)."""
        reply = self.pipeline([args])[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[str]]) -> list[Any]:
        """Many commands in one write, their replies in order: one round trip for a batch of keys.

        A command Redis refuses comes back as a `ReplyError` in its place (a key that changed type
        between two commands must not lose the batch); an authentication refusal raises at once.
        """
        if not commands:
            return []
        try:
            self._sock.sendall(b"".join(_encode(c) for c in commands))
            replies = [self._reply() for _ in commands]
        except (OSError, TimeoutError) as exc:
            raise RetryableError(f"redis: {commands[0][0]} failed: {type(exc).__name__}") from None
        for reply in replies:
            if isinstance(reply, AuthError):
                raise reply
        return replies

    def _reply(self) -> Any:
        line = self._file.readline().rstrip(b"\r\n")
        if not line:
            raise RetryableError("redis closed the connection")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            message = rest.decode(errors="replace")
            return (AuthError if message.startswith(("NOAUTH", "WRONGPASS")) else ReplyError)(f"redis: {message}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._file.read(size + 2)[:-2].decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise PermanentError(f"redis: unexpected reply {line[:40]!r}")

    def close(self) -> None:
        self._file.close()
        self._sock.close()
