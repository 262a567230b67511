"""HttpxGateway against httpx.MockTransport: health as data, the wallet envelope as data, ingress."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from remediation.clients import Gateway, HttpxGateway, make_http_client
from remediation.errors import AuthError, BadInputError, NotFoundError, PermanentError, RetryableError

TOKEN = "gw-token-very-secret-42"


class Recorder:
    def __init__(self, routes: dict[tuple[str, str], httpx.Response]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.routes.get((request.method, request.url.path), httpx.Response(404, json={"detail": "Not Found"}))

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


def gw(rec: Recorder, token: str | None = TOKEN) -> HttpxGateway:
    client = make_http_client("http://gw.test", transport=httpx.MockTransport(rec))
    return HttpxGateway(client, SecretStr(token) if token else None)


def test_is_a_gateway() -> None:
    assert isinstance(gw(Recorder({})), Gateway)


@pytest.mark.parametrize("status", [200, 500])
def test_health_returns_status_and_body_even_when_failing(status: int) -> None:
    body = {"status": "ok" if status == 200 else "error", "release": "abc123", "error": None}
    rec = Recorder({("GET", "/health"): httpx.Response(status, json=body)})
    got = gw(rec).health()
    assert got.http_status == status and got.body == body and got.ok is (status == 200)
    assert "authorization" not in rec.requests[0].headers


def test_deep_health_503_is_data() -> None:
    body = {"status": "degraded", "release": "abc", "checks": {"database": {"ok": False}}}
    got = gw(Recorder({("GET", "/health/deep"): httpx.Response(503, json=body)})).health_deep()
    assert got.http_status == 503 and got.body["status"] == "degraded"


def test_health_with_a_non_json_body_keeps_an_excerpt() -> None:
    got = gw(Recorder({("GET", "/health"): httpx.Response(502, text="Bad Gateway")})).health()
    assert got.http_status == 502 and got.body == {"raw": "Bad Gateway"}


def test_health_unreachable_is_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client = HttpxGateway(make_http_client("http://gw.test", transport=httpx.MockTransport(refuse)), None)
    with pytest.raises(RetryableError, match="GET /health"):
        client.health()


def test_health_404_is_an_error_not_data() -> None:
    with pytest.raises(NotFoundError):
        gw(Recorder({})).health()


def test_deposit_success_envelope() -> None:
    data = {"player_id": "p1", "balance": 1500, "ledger_id": 7}
    rec = Recorder({("POST", "/api/v1/wallet/deposit"): httpx.Response(
        200, json={"status": 0, "msg": "success", "data": data})})
    reply = gw(rec).deposit("p1", 500, "INC-1-dep")
    assert reply.ok and reply.data == data and reply.http_status == 200
    assert rec.body() == {"player_id": "p1", "amount": 500, "ref": "INC-1-dep"}
    # Wallet traffic is proxied onwards: the gateway's admin bearer never rides along.
    assert "authorization" not in rec.requests[0].headers


def test_finance_maintenance_is_data() -> None:
    rec = Recorder({("POST", "/api/v1/wallet/deposit"): httpx.Response(
        200, json={"status": 1, "msg": "Finance maintenance"})})
    reply = gw(rec).deposit("p1", 100, "r1")
    assert not reply.ok and reply.is_finance_maintenance and reply.data is None


@pytest.mark.parametrize(
    ("route", "status", "body"),
    [
        (("GET", "/api/v1/wallet/balance/ghost"), 404, {"status": 3, "msg": "Player not found"}),
        (("POST", "/api/v1/provider/bet"), 503, {"status": 503, "msg": "Provider ingress blocked"}),
        (("POST", "/api/v1/wallet/withdraw"), 200, {"status": 2, "msg": "Insufficient balance"}),
        (("POST", "/api/v1/provider/settle"), 200, {"status": 4, "msg": "Unknown round"}),
    ],
)
def test_platform_refusals_are_data_whatever_the_http_status(
    route: tuple[str, str], status: int, body: dict[str, Any]
) -> None:
    g = gw(Recorder({route: httpx.Response(status, json=body)}))
    calls = {
        "/api/v1/wallet/balance/ghost": lambda: g.balance("ghost"),
        "/api/v1/provider/bet": lambda: g.bet("p1", "round-1", 100),
        "/api/v1/wallet/withdraw": lambda: g.withdraw("p1", 10**9, "w1"),
        "/api/v1/provider/settle": lambda: g.settle("p1", "round-x", 0),
    }
    reply = calls[route[1]]()
    assert (reply.status, reply.msg, reply.http_status) == (body["status"], body["msg"], status)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (502, {"detail": "upstream unavailable"}, RetryableError),
        (504, {"detail": "upstream timeout"}, RetryableError),
        (422, {"detail": [{"loc": ["body", "amount"], "msg": "bad"}]}, PermanentError),
    ],
)
def test_non_envelope_errors_map_to_the_taxonomy(status: int, body: dict[str, Any], error: type[Exception]) -> None:
    rec = Recorder({("POST", "/api/v1/wallet/deposit"): httpx.Response(status, json=body)})
    with pytest.raises(error, match=f"POST /api/v1/wallet/deposit answered {status}"):
        gw(rec).deposit("p1", 100, "r1")


@pytest.mark.parametrize("amount", [0, -5, True, 1.5, "100"])
def test_bad_amounts_are_refused_before_sending(amount: Any) -> None:
    rec = Recorder({})
    with pytest.raises(BadInputError):
        gw(rec).deposit("p1", amount, "r1")
    assert rec.requests == []


def test_settle_accepts_a_zero_win_and_empty_ids_are_refused() -> None:
    rec = Recorder({("POST", "/api/v1/provider/settle"): httpx.Response(
        200, json={"status": 0, "msg": "success", "data": {"balance": 1}})})
    assert gw(rec).settle("p1", "round-1", 0).ok
    assert rec.body() == {"player_id": "p1", "round_id": "round-1", "win_amount": 0}
    with pytest.raises(BadInputError):
        gw(rec).bet("p1", "", 10)


def test_balance_player_id_cannot_escape_the_path() -> None:
    rec = Recorder({})
    with pytest.raises(BadInputError):
        gw(rec).balance("../../ingress/provider")
    assert rec.requests == []


def test_provider_ingress_get_and_set_send_the_bearer() -> None:
    state = {"blocked": True, "reason": "INC-7 abuse", "updated_at": "2026-11-23T10:00:00+00:00"}
    rec = Recorder({
        ("GET", "/api/v1/ingress/provider"): httpx.Response(200, json={**state, "blocked": False}),
        ("PUT", "/api/v1/ingress/provider"): httpx.Response(200, json=state),
    })
    g = gw(rec)
    assert g.get_provider_ingress().blocked is False
    got = g.set_provider_ingress(True, "INC-7 abuse")
    assert got.blocked and got.reason == "INC-7 abuse"
    assert rec.body() == {"blocked": True, "reason": "INC-7 abuse"}
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in rec.requests)


def test_ingress_without_a_token_fails_before_sending() -> None:
    rec = Recorder({})
    with pytest.raises(AuthError, match=r"no.*token|none is configured"):
        gw(rec, token=None).set_provider_ingress(True, "x")
    assert rec.requests == []


def test_ingress_403_is_auth_and_hides_the_token() -> None:
    rec = Recorder({("PUT", "/api/v1/ingress/provider"): httpx.Response(
        403, json={"detail": f"role 'viewer' may not change provider ingress ({TOKEN})"})})
    with pytest.raises(AuthError) as info:
        gw(rec).set_provider_ingress(True, "x")
    assert TOKEN not in str(info.value) and "PUT /api/v1/ingress/provider" in str(info.value)


def test_read_timeout_on_a_wallet_write_is_retryable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = HttpxGateway(make_http_client("http://gw.test", transport=httpx.MockTransport(slow)), SecretStr(TOKEN))
    with pytest.raises(RetryableError, match="ReadTimeout"):
        client.deposit("p1", 100, "r1")
