"""RabbitMQ's management API: the queues, with their depths and consumers (seed 003)."""

from __future__ import annotations

from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from remediation.errors import AuthError, PermanentError, RetryableError

__all__ = ["HttpxRabbitMq", "RabbitMq"]

_KEEP = ("vhost", "name", "state", "messages", "messages_ready", "messages_unacknowledged", "consumers")


class RabbitMq(Protocol):
    def queues(self) -> list[dict[str, Any]]: ...


class HttpxRabbitMq:
    """`RabbitMq` over an httpx.Client whose base_url is the management API (basic auth)."""

    def __init__(self, client: httpx.Client, user: str, password: SecretStr) -> None:
        self._http, self._auth = client, httpx.BasicAuth(user, password.get_secret_value())

    def queues(self) -> list[dict[str, Any]]:
        """Every queue, deepest first, with only the fields evidence keeps."""
        try:
            resp = self._http.get("/api/queues", auth=self._auth)
        except httpx.TransportError as exc:
            raise RetryableError(f"rabbitmq unreachable: {type(exc).__name__}") from None
        if resp.status_code >= 500:
            raise RetryableError(f"rabbitmq answered {resp.status_code}")
        if resp.status_code in (401, 403):
            raise AuthError(f"rabbitmq refused the credentials ({resp.status_code}): the user needs the "
                            "management or monitoring tag")
        if resp.status_code != 200:
            raise PermanentError(f"rabbitmq answered {resp.status_code}")
        queues = [{k: q.get(k) for k in _KEEP} for q in resp.json()]
        queues.sort(key=lambda q: -(q.get("messages") or 0))
        return queues
