"""Prometheus's HTTP query API: an instant query, answered as its result vector."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from remediation.errors import PermanentError, RetryableError

__all__ = ["HttpxPrometheus", "Prometheus", "query_instant"]


class Prometheus(Protocol):
    def query(self, promql: str) -> list[dict[str, Any]]: ...


def query_instant(client: httpx.Client, query: str) -> list[dict[str, Any]]:
    """`GET /api/v1/query`; returns the result vector."""
    try:
        resp = client.get("/api/v1/query", params={"query": query})
    except httpx.TransportError as exc:
        raise RetryableError(f"prometheus unreachable: {type(exc).__name__}") from None
    if resp.status_code >= 500:
        raise RetryableError(f"prometheus answered {resp.status_code}")
    body = resp.json()
    if resp.status_code != 200 or body.get("status") != "success":
        raise PermanentError(f"prometheus rejected the query ({resp.status_code}): {body.get('error', '')[:200]}")
    result = body["data"]["result"]
    return list(result) if isinstance(result, list) else [result]


class HttpxPrometheus:
    """`Prometheus` over an httpx.Client whose base_url is the Prometheus server."""

    def __init__(self, client: httpx.Client) -> None:
        self._http = client

    def query(self, promql: str) -> list[dict[str, Any]]:
        return query_instant(self._http, promql)
