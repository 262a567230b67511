"""HttpxAdminApi against httpx.MockTransport: paths, headers, bodies, and the error taxonomy."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from remediation.clients import AdminApi, HttpxAdminApi, make_http_client
from remediation.errors import (
    AuthError,
    BadInputError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RetryableError,
)

TOKEN = "tok-super-secret-0123456789"
NOW = "2026-11-23T10:00:00+00:00"
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Routes on (method, path) and records every request."""

    def __init__(self, routes: dict[tuple[str, str], Handler | httpx.Response]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return httpx.Response(404, json={"detail": "no route"})
        return route(request) if callable(route) else route

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


def api(recorder: Recorder, **kw: Any) -> HttpxAdminApi:
    client = make_http_client("http://admin.test", transport=httpx.MockTransport(recorder))
    return HttpxAdminApi(client, SecretStr(TOKEN), **kw)


def maintenance(active: bool, message: str = "") -> dict[str, Any]:
    return {"is_active": active, "message": message, "updated_at": NOW, "updated_by": "super_admin"}


def test_is_an_admin_api() -> None:
    assert isinstance(api(Recorder({})), AdminApi)


def test_get_maintenance_sends_bearer_and_parses() -> None:
    rec = Recorder({("GET", "/api/v1/maintenance"): httpx.Response(200, json=maintenance(False))})
    got = api(rec).get_maintenance()
    assert got.is_active is False and got.updated_by == "super_admin"
    assert got.updated_at is not None and got.updated_at.isoformat() == NOW
    req = rec.requests[0]
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["accept"] == "application/json"


def test_set_maintenance_puts_the_exact_body() -> None:
    rec = Recorder({("PUT", "/api/v1/maintenance"): lambda r: httpx.Response(200, json=maintenance(True, "INC-1"))})
    got = api(rec).set_maintenance(True, "INC-1")
    assert got.is_active and got.message == "INC-1"
    assert rec.body() == {"is_active": True, "message": "INC-1"}


def test_global_var_roundtrip() -> None:
    var = {"code": "DEPOSIT_MAINTENANCE_STATUS", "value": "1", "updated_at": NOW}
    rec = Recorder({
        ("GET", "/api/v1/global-vars/DEPOSIT_MAINTENANCE_STATUS"): httpx.Response(200, json={**var, "value": "0"}),
        ("PUT", "/api/v1/global-vars/DEPOSIT_MAINTENANCE_STATUS"): httpx.Response(200, json=var),
    })
    client = api(rec)
    assert client.get_global_var("DEPOSIT_MAINTENANCE_STATUS").value == "0"
    assert client.set_global_var("DEPOSIT_MAINTENANCE_STATUS", "1").value == "1"
    assert rec.body() == {"value": "1"}


def test_global_var_value_must_be_a_string() -> None:
    rec = Recorder({})
    with pytest.raises(BadInputError):
        api(rec).set_global_var("DEPOSIT_MAINTENANCE_STATUS", 1)  # type: ignore[arg-type]
    assert rec.requests == []


def test_brands_and_brand_config() -> None:
    row = {"brand_id": "alpha", "key": "payment_policy", "value": {"deposit_enabled": False}, "updated_at": NOW}
    path = "/api/v1/brands/alpha/config/payment_policy"
    rec = Recorder({
        ("GET", "/api/v1/brands"): httpx.Response(200, json=[{"brand_id": "alpha", "name": "Alpha Casino"}]),
        ("GET", path): httpx.Response(200, json=row),
        ("PUT", path): httpx.Response(200, json=row),
        ("PATCH", path): httpx.Response(200, json=row),
    })
    client = api(rec)
    assert [b.brand_id for b in client.list_brands()] == ["alpha"]
    assert client.get_brand_config("alpha", "payment_policy").value == {"deposit_enabled": False}
    client.put_brand_config("alpha", "payment_policy", {"deposit_enabled": False, "withdraw_enabled": True})
    assert rec.requests[-1].method == "PUT"
    assert rec.body() == {"value": {"deposit_enabled": False, "withdraw_enabled": True}}
    client.patch_brand_config("alpha", "payment_policy", {"deposit_enabled": False})
    assert rec.requests[-1].method == "PATCH" and rec.body() == {"value": {"deposit_enabled": False}}


@pytest.mark.parametrize("brand", ["../maintenance", "alpha/../x", "a?b=1", "", "-x", "al pha", ".."])
def test_path_parameters_that_are_not_identifiers_are_refused_before_sending(brand: str) -> None:
    rec = Recorder({})
    with pytest.raises(BadInputError):
        api(rec).get_brand_config(brand, "payment_policy")
    assert rec.requests == []


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthError), (403, AuthError), (404, NotFoundError), (409, ConflictError),
        (422, PermanentError), (400, PermanentError), (429, RetryableError),
        (500, RetryableError), (502, RetryableError), (503, RetryableError),
    ],
)
def test_status_codes_map_to_the_taxonomy(status: int, error: type[Exception]) -> None:
    # The server echoes the token back to prove it never reaches the exception text.
    rec = Recorder({("GET", "/api/v1/maintenance"): httpx.Response(status, json={"detail": f"bad {TOKEN}"})})
    with pytest.raises(error) as info:
        api(rec).get_maintenance()
    text = str(info.value)
    assert TOKEN not in text and TOKEN not in repr(info.value)
    assert "GET /api/v1/maintenance" in text and str(status) in text


def test_403_is_auth_and_names_the_role_problem() -> None:
    body = {"detail": "role 'viewer' may not change maintenance"}
    rec = Recorder({("PUT", "/api/v1/maintenance"): httpx.Response(403, json=body)})
    with pytest.raises(AuthError, match="may not change maintenance"):
        api(rec).set_maintenance(True, "x")


def test_long_error_bodies_are_cut_short() -> None:
    rec = Recorder({("GET", "/api/v1/maintenance"): httpx.Response(500, text="x" * 10_000)})
    with pytest.raises(RetryableError) as info:
        api(rec).get_maintenance()
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"),
            httpx.RemoteProtocolError("server hung up")],
)
def test_transport_failures_are_retryable(exc: httpx.HTTPError) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        exc.request = request
        raise exc

    client = HttpxAdminApi(
        make_http_client("http://admin.test", transport=httpx.MockTransport(boom)), SecretStr(TOKEN)
    )
    with pytest.raises(RetryableError) as info:
        client.get_maintenance()
    assert TOKEN not in str(info.value)


def test_unexpected_shape_is_permanent_and_names_the_field() -> None:
    rec = Recorder({("GET", "/api/v1/maintenance"): httpx.Response(200, json={"message": "no flag"})})
    with pytest.raises(PermanentError, match="is_active"):
        api(rec).get_maintenance()


def test_non_json_success_is_permanent() -> None:
    rec = Recorder({("GET", "/api/v1/maintenance"): httpx.Response(200, text="<html>proxy</html>")})
    with pytest.raises(PermanentError, match="non-JSON"):
        api(rec).get_maintenance()


def test_timeout_override_reaches_the_request() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json=maintenance(False))

    client = make_http_client("http://admin.test", transport=httpx.MockTransport(handler))
    HttpxAdminApi(client, SecretStr(TOKEN)).get_maintenance()
    HttpxAdminApi(client, SecretStr(TOKEN), timeout=httpx.Timeout(3.0, connect=1.0)).get_maintenance()
    assert seen[0]["connect"] == 2.0 and seen[0]["read"] == 10.0  # make_http_client's defaults
    assert seen[1]["connect"] == 1.0 and seen[1]["read"] == 3.0


def test_health_is_data_even_when_failing() -> None:
    rec = Recorder({("GET", "/health"): httpx.Response(503, json={"status": "down"})})
    got = api(rec).health()
    assert got.http_status == 503 and got.body == {"status": "down"} and not got.ok
    assert "authorization" not in rec.requests[0].headers
