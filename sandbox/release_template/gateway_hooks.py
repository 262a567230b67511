"""servers_v2 gateway release hooks.

The gateway imports this module from the deployed checkout when it starts and calls
`health()` on every `GET /health`. If this module fails to import, or `health()`
raises, the gateway answers `/health` with 500 and the reason, and keeps serving:
that is how a bad release shows up on the dashboards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RELEASE_DIR = Path(__file__).resolve().parent

UPSTREAM: dict[str, Any] = {
    "wallet_timeout_s": 10.0,
    "provider_routes": ["bet", "settle"],
}


def version() -> str:
    return (RELEASE_DIR / "VERSION").read_text().strip()


def health() -> dict[str, Any]:
    timeout = float(UPSTREAM["wallet_timeout_s"])
    if timeout <= 0:
        raise ValueError(f"wallet_timeout_s must be positive, got {timeout}")
    return {
        "ok": True,
        "version": version(),
        "wallet_timeout_s": timeout,
        "provider_routes": list(UPSTREAM["provider_routes"]),
    }
