"""An instance's HTTP health check, behind the same httpx transport seam as the other clients."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from remediation.clients._http import make_http_client

__all__ = ["HealthCheck", "HttpxHealthCheck"]


@dataclass(frozen=True)
class HealthCheck:
    ok: bool
    #: What was seen, for a person: "200 in 4 ms", "503 in 12 ms", "no answer in 2 s", "connection refused".
    seen: str


class HttpxHealthCheck:
    def __init__(self, timeout_s: float = 2.0, transport: httpx.BaseTransport | None = None) -> None:
        self.timeout_s = timeout_s
        self.transport = transport

    def check(self, url: str) -> HealthCheck:
        started = time.perf_counter()
        with make_http_client("", timeout=httpx.Timeout(self.timeout_s), transport=self.transport) as client:
            try:
                response = client.get(url)
            except httpx.TimeoutException:
                return HealthCheck(False, f"no answer in {self.timeout_s:g} s")
            except httpx.ConnectError:
                return HealthCheck(False, "connection refused")
            except httpx.TransportError as exc:
                return HealthCheck(False, f"{type(exc).__name__}")
        took = (time.perf_counter() - started) * 1000
        return HealthCheck(response.is_success, f"{response.status_code} in {took:.0f} ms")
