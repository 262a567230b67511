"""The gateway: health, wallet and provider routes, and the provider ingress block (sandbox/API.md)."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from remediation.clients._http import HealthResult, HttpSeam, health_of, path_segment
from remediation.errors import BadInputError

__all__ = ["FINANCE_MAINTENANCE", "Gateway", "HealthResult", "HttpxGateway", "ProviderIngress", "WalletReply"]

#: The exact answer every maintenance lever produces (seed 000 step 3).
FINANCE_MAINTENANCE = {"status": 1, "msg": "Finance maintenance"}


class WalletReply(BaseModel):
    """The platform's `{"status", "msg", "data"}` envelope. Refusals (maintenance, insufficient
    balance, unknown player, ingress blocked) are answers the runbooks check, so they are data."""

    model_config = ConfigDict(frozen=True)

    status: int
    msg: str
    data: dict[str, Any] | None = None
    http_status: int

    @property
    def ok(self) -> bool:
        return self.status == 0 and self.http_status == 200

    @property
    def is_finance_maintenance(self) -> bool:
        return self.status == FINANCE_MAINTENANCE["status"] and self.msg == FINANCE_MAINTENANCE["msg"]


class ProviderIngress(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    blocked: bool
    reason: str = ""
    updated_at: datetime | None = None


@runtime_checkable
class Gateway(Protocol):
    def health(self) -> HealthResult: ...
    def health_deep(self) -> HealthResult: ...
    def health_at(self, path: str) -> HealthResult: ...
    def deposit(self, player_id: str, amount: int, ref: str) -> WalletReply: ...
    def withdraw(self, player_id: str, amount: int, ref: str) -> WalletReply: ...
    def balance(self, player_id: str) -> WalletReply: ...
    def bet(self, player_id: str, round_id: str, amount: int) -> WalletReply: ...
    def settle(self, player_id: str, round_id: str, win_amount: int) -> WalletReply: ...
    def get_provider_ingress(self) -> ProviderIngress: ...
    def set_provider_ingress(self, blocked: bool, reason: str) -> ProviderIngress: ...


def _amount(value: int, what: str, *, allow_zero: bool = False) -> int:
    # bool is an int subclass; True cents is a bug, not a deposit.
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise BadInputError(f"{what} must be an integer number of cents {'>= 0' if allow_zero else '> 0'}")
    return value


class HttpxGateway:
    """`Gateway` over an httpx.Client whose base_url is the gateway.

    The token (the gateway's admin surface) is sent only to the ingress routes, so it
    never travels with wallet traffic that the gateway proxies onwards.
    """

    def __init__(
        self, client: httpx.Client, token: SecretStr | None, *, timeout: httpx.Timeout | None = None
    ) -> None:
        self._http = HttpSeam(client, token, "gateway", timeout)

    def health(self) -> HealthResult:
        return health_of(self._http, "/health")

    def health_deep(self) -> HealthResult:
        return health_of(self._http, "/health/deep")

    def health_at(self, path: str) -> HealthResult:
        """Another health route (an evidence profile's list), read the same way."""
        return health_of(self._http, path)

    def deposit(self, player_id: str, amount: int, ref: str) -> WalletReply:
        body = {"player_id": player_id, "amount": _amount(amount, "amount"), "ref": ref}
        return self._wallet("POST", "/api/v1/wallet/deposit", body)

    def withdraw(self, player_id: str, amount: int, ref: str) -> WalletReply:
        body = {"player_id": player_id, "amount": _amount(amount, "amount"), "ref": ref}
        return self._wallet("POST", "/api/v1/wallet/withdraw", body)

    def balance(self, player_id: str) -> WalletReply:
        return self._wallet("GET", f"/api/v1/wallet/balance/{path_segment(player_id, 'player id')}", None)

    def bet(self, player_id: str, round_id: str, amount: int) -> WalletReply:
        body = {"player_id": player_id, "round_id": round_id, "amount": _amount(amount, "amount")}
        return self._wallet("POST", "/api/v1/provider/bet", body)

    def settle(self, player_id: str, round_id: str, win_amount: int) -> WalletReply:
        body = {
            "player_id": player_id, "round_id": round_id,
            "win_amount": _amount(win_amount, "win_amount", allow_zero=True),
        }
        return self._wallet("POST", "/api/v1/provider/settle", body)

    def get_provider_ingress(self) -> ProviderIngress:
        return self._http.call_model(ProviderIngress, "GET", "/api/v1/ingress/provider")

    def set_provider_ingress(self, blocked: bool, reason: str) -> ProviderIngress:
        if not isinstance(blocked, bool):
            raise BadInputError(f"blocked must be a bool, got {type(blocked).__name__}")
        body = {"blocked": blocked, "reason": reason}
        return self._http.call_model(ProviderIngress, "PUT", "/api/v1/ingress/provider", json=body)

    def _wallet(self, method: str, path: str, body: dict[str, Any] | None) -> WalletReply:
        for name in ("player_id", "ref", "round_id"):
            if body is not None and name in body and (not isinstance(body[name], str) or not body[name]):
                raise BadInputError(f"{name} must be a non-empty string")
        response = self._http.send(method, path, json=body, auth=False)
        decoded: Any = None
        with contextlib.suppress(ValueError):
            decoded = response.json()
        if _is_envelope(decoded):
            # Any HTTP status: 404 "Player not found" and 503 "Provider ingress blocked" are answers.
            return WalletReply(
                status=decoded["status"], msg=decoded["msg"],
                data=decoded.get("data") if isinstance(decoded.get("data"), dict) else None,
                http_status=response.status_code,
            )
        # Not the platform speaking (502/504 from the gateway itself, a 422, a proxy page).
        error = self._http.error_for(method, path, response)
        if error is not None:
            raise error
        return self._http.parse(WalletReply, method, path, decoded)


def _is_envelope(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("status"), int) and not isinstance(body.get("status"), bool)
        and isinstance(body.get("msg"), str)
    )
