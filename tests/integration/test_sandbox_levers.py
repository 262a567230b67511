"""The sandbox platform answers the seed-000 levers exactly, against the running stack.

Each test starts from the seeded state (`reset_platform`) and goes through the real
services: admin directly, wallet and provider routes through the gateway.
"""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration

FINANCE_MAINTENANCE = {"status": 1, "msg": "Finance maintenance"}


def _auth(stack: StackInfo, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.admin_tokens[role].get_secret_value()}"}


def _ref() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _wallet(stack: StackInfo, op: str, player: str, amount: int = 100) -> httpx.Response:
    return httpx.post(f"{stack.gateway_url}/api/v1/wallet/{op}",
                      json={"player_id": player, "amount": amount, "ref": _ref()}, timeout=30)


def _bet(stack: StackInfo, player: str, round_id: str, amount: int = 100) -> httpx.Response:
    return httpx.post(f"{stack.gateway_url}/api/v1/provider/bet",
                      json={"player_id": player, "round_id": round_id, "amount": amount}, timeout=30)


def _settle(stack: StackInfo, player: str, round_id: str, win: int = 0) -> httpx.Response:
    return httpx.post(f"{stack.gateway_url}/api/v1/provider/settle",
                      json={"player_id": player, "round_id": round_id, "win_amount": win}, timeout=30)


def _admin(stack: StackInfo, method: str, path: str, role: str = "super_admin", **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{stack.admin_url}{path}", headers=_auth(stack, role), timeout=30, **kw)


def _ok(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == 0 and body["msg"] == "success", body
    return dict(body["data"])


def test_platform_freeze_blocks_every_write_until_lifted(reset_platform: StackInfo) -> None:
    stack = reset_platform
    _ok(_bet(stack, "beta-0001", "round-open"))  # a bet placed before the freeze
    put = _admin(stack, "PUT", "/api/v1/maintenance",
                 json={"is_active": True, "message": "Emergency maintenance — INC-1"})
    assert put.status_code == 200
    assert put.json()["is_active"] is True and put.json()["updated_by"] == "super_admin"
    got = _admin(stack, "GET", "/api/v1/maintenance", role="viewer").json()
    assert got["is_active"] is True and got["message"] == "Emergency maintenance — INC-1"

    for resp in (_wallet(stack, "deposit", "alpha-0001"), _wallet(stack, "withdraw", "beta-0002"),
                 _bet(stack, "gamma-0003", "round-frozen"), _settle(stack, "beta-0001", "round-open", 50)):
        assert (resp.status_code, resp.json()) == (200, FINANCE_MAINTENANCE)

    lift = _admin(stack, "PUT", "/api/v1/maintenance", json={"is_active": False, "message": ""})
    assert lift.status_code == 200
    _ok(_wallet(stack, "deposit", "alpha-0001"))
    _ok(_settle(stack, "beta-0001", "round-open", 50))


def test_deposit_global_var_halts_deposits_only(reset_platform: StackInfo) -> None:
    stack = reset_platform
    put = _admin(stack, "PUT", "/api/v1/global-vars/DEPOSIT_MAINTENANCE_STATUS", json={"value": "1"})
    assert put.status_code == 200 and put.json()["value"] == "1"
    assert _wallet(stack, "deposit", "alpha-0001").json() == FINANCE_MAINTENANCE
    assert _wallet(stack, "deposit", "gamma-0001").json() == FINANCE_MAINTENANCE
    _ok(_wallet(stack, "withdraw", "alpha-0001"))
    _ok(_bet(stack, "alpha-0001", _ref()))


def test_deposit_global_var_sql_fallback_is_honoured(reset_platform: StackInfo) -> None:
    stack = reset_platform
    with psycopg.connect(stack.platform_dsn.get_secret_value()) as conn:
        conn.execute(
            "UPDATE global_var SET value = '1', updated_at = now() WHERE code = 'DEPOSIT_MAINTENANCE_STATUS'"
        )
    assert _wallet(stack, "deposit", "beta-0004").json() == FINANCE_MAINTENANCE


def test_brand_flag_blocks_only_that_brand(reset_platform: StackInfo) -> None:
    stack = reset_platform
    patch = _admin(stack, "PATCH", "/api/v1/brands/alpha/config/payment_policy", role="brand_admin",
                   json={"value": {"deposit_enabled": False}})
    assert patch.status_code == 200, patch.text
    assert patch.json()["value"] == {"deposit_enabled": False, "withdraw_enabled": True}  # merged

    assert _wallet(stack, "deposit", "alpha-0001").json() == FINANCE_MAINTENANCE
    _ok(_wallet(stack, "deposit", "beta-0001"))
    _ok(_wallet(stack, "withdraw", "alpha-0001"))

    # withdraw_enabled may live under either key; false in either blocks.
    patch = _admin(stack, "PATCH", "/api/v1/brands/alpha/config/feature_policy",
                   json={"value": {"withdraw_enabled": False}})
    assert patch.status_code == 200
    assert _wallet(stack, "withdraw", "alpha-0002").json() == FINANCE_MAINTENANCE
    _ok(_wallet(stack, "withdraw", "gamma-0002"))

    # PUT replaces the whole value.
    put = _admin(stack, "PUT", "/api/v1/brands/alpha/config/payment_policy",
                 json={"value": {"deposit_enabled": True, "withdraw_enabled": True}})
    assert put.json()["value"] == {"deposit_enabled": True, "withdraw_enabled": True}
    _ok(_wallet(stack, "deposit", "alpha-0001"))
    put = _admin(stack, "PUT", "/api/v1/brands/alpha/config/feature_policy",
                 json={"value": {"bets_enabled": True}})
    assert put.json()["value"] == {"bets_enabled": True}
    _ok(_wallet(stack, "withdraw", "alpha-0002"))


def test_admin_auth_and_roles(reset_platform: StackInfo) -> None:
    stack = reset_platform
    body = {"is_active": True, "message": "x"}
    no_token = httpx.put(f"{stack.admin_url}/api/v1/maintenance", json=body, timeout=10)
    assert (no_token.status_code, no_token.json()) == (401, {"detail": "missing or invalid bearer token"})
    bad = httpx.get(f"{stack.admin_url}/api/v1/maintenance", headers={"Authorization": "Bearer nope"},
                    timeout=10)
    assert bad.status_code == 401
    viewer = _admin(stack, "PUT", "/api/v1/maintenance", role="viewer", json=body)
    assert viewer.status_code == 403
    assert viewer.json() == {"detail": "role 'viewer' may not change maintenance"}
    brand_admin = _admin(stack, "PUT", "/api/v1/global-vars/DEPOSIT_MAINTENANCE_STATUS", role="brand_admin",
                         json={"value": "1"})
    assert brand_admin.status_code == 403
    assert _admin(stack, "PATCH", "/api/v1/brands/beta/config/payment_policy", role="viewer",
                  json={"value": {"deposit_enabled": False}}).status_code == 403
    # Nothing changed.
    assert _admin(stack, "GET", "/api/v1/maintenance", role="viewer").json()["is_active"] is False
    assert _wallet(stack, "deposit", "beta-0001").json()["status"] == 0
    assert httpx.get(f"{stack.admin_url}/health", timeout=10).json() == {"status": "ok"}


def test_unknown_names_are_404_and_never_created(reset_platform: StackInfo) -> None:
    stack = reset_platform
    assert _admin(stack, "GET", "/api/v1/global-vars/WITHDRAW_MAINTENANCE_STATUS").status_code == 404
    put = _admin(stack, "PUT", "/api/v1/global-vars/WITHDRAW_MAINTENANCE_STATUS", json={"value": "1"})
    assert put.status_code == 404
    with psycopg.connect(stack.platform_dsn.get_secret_value()) as conn:
        assert conn.execute("SELECT count(*) FROM global_var").fetchone() == (1,)
    assert _admin(stack, "GET", "/api/v1/brands/delta/config/payment_policy").status_code == 404
    unknown_key = _admin(stack, "PUT", "/api/v1/brands/alpha/config/risk_policy", json={"value": {}})
    assert unknown_key.status_code == 404
    brands = _admin(stack, "GET", "/api/v1/brands", role="viewer").json()
    assert brands[0] == {"brand_id": "alpha", "name": "Alpha Casino"} and len(brands) == 3


def test_invalid_bodies_are_422_and_change_nothing(reset_platform: StackInfo) -> None:
    stack = reset_platform
    assert _admin(stack, "PUT", "/api/v1/maintenance", json={"is_active": "yes"}).status_code == 422
    assert _admin(stack, "PATCH", "/api/v1/brands/alpha/config/payment_policy",
                  json={"value": {"deposit_enabled": "false"}}).status_code == 422
    for body in ({"player_id": "alpha-0001", "amount": 0, "ref": "r"},
                 {"player_id": "alpha-0001", "amount": "100", "ref": "r"},
                 {"player_id": "alpha-0001", "amount": 1.5, "ref": "r"}):
        resp = httpx.post(f"{stack.gateway_url}/api/v1/wallet/deposit", json=body, timeout=10)
        assert resp.status_code == 422
    _ok(_wallet(stack, "deposit", "alpha-0001"))


def test_provider_ingress_block_spares_wallet_routes(reset_platform: StackInfo) -> None:
    stack = reset_platform
    url = f"{stack.gateway_url}/api/v1/ingress/provider"
    viewer = httpx.put(url, json={"blocked": True, "reason": "x"}, headers=_auth(stack, "viewer"), timeout=10)
    assert viewer.status_code == 403
    put = httpx.put(url, json={"blocked": True, "reason": "INC-7 provider storm"},
                    headers=_auth(stack, "super_admin"), timeout=10)
    assert put.status_code == 200 and put.json()["blocked"] is True
    state = httpx.get(url, headers=_auth(stack, "viewer"), timeout=10).json()
    assert state["blocked"] is True and state["reason"] == "INC-7 provider storm"

    for resp in (_bet(stack, "alpha-0001", _ref()), _settle(stack, "alpha-0001", _ref())):
        assert (resp.status_code, resp.json()) == (503, {"status": 503, "msg": "Provider ingress blocked"})
    _ok(_wallet(stack, "deposit", "alpha-0001"))
    _ok(_wallet(stack, "withdraw", "alpha-0001"))

    httpx.put(url, json={"blocked": False, "reason": ""}, headers=_auth(stack, "super_admin"), timeout=10)
    _ok(_bet(stack, "alpha-0001", _ref()))


def test_ledger_is_append_only(reset_platform: StackInfo) -> None:
    stack = reset_platform
    for stmt in ("UPDATE ledger SET amount = amount + 1 WHERE player_id = 'alpha-0001'",
                 "DELETE FROM ledger WHERE player_id = 'alpha-0001'",
                 "DELETE FROM ledger WHERE false",
                 "TRUNCATE ledger CASCADE"):
        with psycopg.connect(stack.platform_dsn.get_secret_value()) as conn, \
                pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(stmt)


def test_writes_are_idempotent_and_balanced(reset_platform: StackInfo) -> None:
    stack = reset_platform
    player, ref = "gamma-0007", _ref()
    before = _ok(httpx.get(f"{stack.gateway_url}/api/v1/wallet/balance/{player}", timeout=10))["balance"]
    body = {"player_id": player, "amount": 1234, "ref": ref}
    first = httpx.post(f"{stack.gateway_url}/api/v1/wallet/deposit", json=body, timeout=10)
    again = httpx.post(f"{stack.gateway_url}/api/v1/wallet/deposit", json=body, timeout=10)
    assert first.json() == again.json() and _ok(first)["balance"] == before + 1234
    reused = httpx.post(f"{stack.gateway_url}/api/v1/wallet/deposit", json={**body, "amount": 1}, timeout=10)
    assert reused.status_code == 409

    round_id = _ref()
    assert _bet(stack, player, round_id, 200).json() == _bet(stack, player, round_id, 200).json()
    assert _settle(stack, player, round_id, 500).json() == _settle(stack, player, round_id, 500).json()
    assert _settle(stack, player, _ref(), 5).json() == {"status": 4, "msg": "Unknown round"}
    assert _wallet(stack, "withdraw", player, 10**9).json() == {"status": 2, "msg": "Insufficient balance"}
    missing = _wallet(stack, "deposit", "nobody-0001")
    assert (missing.status_code, missing.json()) == (404, {"status": 3, "msg": "Player not found"})

    final = _ok(httpx.get(f"{stack.gateway_url}/api/v1/wallet/balance/{player}", timeout=10))
    assert final == {"player_id": player, "brand_id": "gamma", "balance": before + 1234 - 200 + 500}
    with psycopg.connect(stack.platform_dsn.get_secret_value()) as conn:
        rows = conn.execute("SELECT kind, amount FROM ledger WHERE player_id = %s ORDER BY ledger_id",
                            (player,)).fetchall()
        total = conn.execute("SELECT balance FROM bucket WHERE player_id = %s", (player,)).fetchone()
    assert [k for k, _ in rows] == ["deposit", "deposit", "bet", "settle"]
    assert total == (sum(a for _, a in rows),)


def test_gateway_health_reports_the_deployed_release(reset_platform: StackInfo) -> None:
    stack = reset_platform
    head = subprocess.run(["git", "-C", str(stack.host_checkout), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    health = httpx.get(f"{stack.gateway_url}/health", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok", "release": head})
    deep = httpx.get(f"{stack.gateway_url}/health/deep", timeout=10)
    assert deep.status_code == 200, deep.text
    checks = deep.json()["checks"]
    assert checks["database"]["ok"] and checks["wallet_writer"]["ok"]
    assert checks["wallet_writer"]["error"] is None and checks["database"]["latency_ms"] >= 0


def test_concurrent_writes_keep_bucket_equal_to_ledger(reset_platform: StackInfo) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stack = reset_platform
    player, ref = "beta-0010", _ref()
    body = {"player_id": player, "amount": 300, "ref": ref}

    def same_ref(_: int) -> dict[str, Any]:
        return dict(httpx.post(f"{stack.gateway_url}/api/v1/wallet/deposit", json=body, timeout=60).json())

    def fresh(i: int) -> int:
        op = "deposit" if i % 2 else "withdraw"
        return int(_wallet(stack, op, player, 50).json()["status"])

    with ThreadPoolExecutor(max_workers=12) as pool:
        repeats = list(pool.map(same_ref, range(12)))
        statuses = list(pool.map(fresh, range(24)))
    assert all(r == repeats[0] for r in repeats) and repeats[0]["status"] == 0
    assert statuses == [0] * 24
    with psycopg.connect(stack.platform_dsn.get_secret_value()) as conn:
        assert conn.execute("SELECT count(*) FROM ledger WHERE ref = %s", (ref,)).fetchone() == (1,)
        bucket, total = conn.execute(
            "SELECT b.balance, (SELECT sum(amount) FROM ledger WHERE player_id = %s) FROM bucket b"
            " WHERE b.player_id = %s", (player, player),
        ).fetchone() or (None, None)
    assert bucket == total
