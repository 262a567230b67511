"""Redis over its own protocol (RESP2): the few commands evidence needs, no redis-cli on any host."""

from __future__ import annotations

import socket
from typing import Any, Protocol

from remediation.errors import AuthError, PermanentError, RetryableError

__all__ = ["Redis", "RespRedis"]


class Redis(Protocol):
    def call(self, *args: str) -> Any: ...
    def close(self) -> None: ...


class RespRedis:
    """The smallest Redis client that evidence needs: send a command, read one reply (RESP2)."""

    def __init__(self, address: str, port: int, timeout_s: float) -> None:
        try:
            self._sock = socket.create_connection((address, port), timeout=timeout_s)
        except OSError as exc:
            raise RetryableError(f"redis {address}:{port} unreachable: {exc}") from None
        self._file = self._sock.makefile("rb")

    def call(self, *args: str) -> Any:
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        try:
            self._sock.sendall(payload)
            return self._reply()
        except (OSError, TimeoutError) as exc:
            raise RetryableError(f"redis: {args[0]} failed: {type(exc).__name__}") from None

    def _reply(self) -> Any:
        line = self._file.readline().rstrip(b"\r\n")
        if not line:
            raise RetryableError("redis closed the connection")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            message = rest.decode(errors="replace")
            raise (AuthError if message.startswith(("NOAUTH", "WRONGPASS")) else PermanentError)(f"redis: {message}")
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
