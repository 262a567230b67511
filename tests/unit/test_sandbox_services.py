"""Sandbox service logic that needs no database: auth, validation, release loading, proxying."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from sandbox import admin, gateway, wallet
from sandbox.config import SandboxSettings
from sandbox.release_faults import bad_deploy_patch, import_error_patch

TOKENS = {"t-super": "super_admin", "t-brand": "brand_admin", "t-view": "viewer"}
TEMPLATE = Path(__file__).resolve().parents[2] / "sandbox" / "release_template"


def _settings(**kw: object) -> SandboxSettings:
    base: dict[str, object] = {"admin_tokens": SecretStr(json.dumps(TOKENS)), "dsn": SecretStr("")}
    return SandboxSettings(**{**base, **kw})  # type: ignore[arg-type]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- auth ---------------------------------------------------------------------------------------

def test_token_auth_maps_tokens_to_roles() -> None:
    auth = admin.TokenAuth(TOKENS)
    assert auth.role_of("Bearer t-super") == "super_admin"
    assert auth.role_of("bearer t-view") == "viewer"
    for header in (None, "", "Bearer", "Bearer ", "Basic t-super", "Bearer t-super2", "t-super"):
        assert auth.role_of(header) is None


def test_token_auth_refuses_unknown_roles() -> None:
    with pytest.raises(ValueError, match="unknown roles"):
        admin.TokenAuth({"t": "root"})


@pytest.fixture
def admin_client() -> Iterator[TestClient]:
    # No lifespan: no pool exists, so any request that reached the database would fail with 500.
    yield TestClient(admin.create_app(_settings()), raise_server_exceptions=False)


def test_admin_refuses_before_touching_the_database(admin_client: TestClient) -> None:
    body = {"is_active": True, "message": "x"}
    resp = admin_client.put("/api/v1/maintenance", json=body)
    assert (resp.status_code, resp.json()) == (401, {"detail": "missing or invalid bearer token"})
    assert resp.headers["www-authenticate"] == "Bearer"
    resp = admin_client.put("/api/v1/maintenance", json=body, headers=_bearer("t-view"))
    assert (resp.status_code, resp.json()) == (403, {"detail": "role 'viewer' may not change maintenance"})
    resp = admin_client.put("/api/v1/global-vars/X", json={"value": "1"}, headers=_bearer("t-brand"))
    assert resp.json() == {"detail": "role 'brand_admin' may not change global vars"}
    resp = admin_client.patch("/api/v1/brands/alpha/config/payment_policy", json={"value": {}},
                              headers=_bearer("t-view"))
    assert resp.json() == {"detail": "role 'viewer' may not change brand config"}
    assert admin_client.get("/api/v1/brands").status_code == 401
    assert admin_client.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize(("path", "method", "body"), [
    ("/api/v1/maintenance", "PUT", {"is_active": "true"}),
    ("/api/v1/maintenance", "PUT", {"message": "x"}),
    ("/api/v1/maintenance", "PUT", {"is_active": True, "extra": 1}),
    ("/api/v1/global-vars/DEPOSIT_MAINTENANCE_STATUS", "PUT", {"value": 1}),
    ("/api/v1/brands/alpha/config/payment_policy", "PUT", {"value": ["deposit_enabled"]}),
    ("/api/v1/brands/alpha/config/payment_policy", "PATCH", {"value": {"deposit_enabled": "false"}}),
    ("/api/v1/brands/alpha/config/feature_policy", "PATCH", {"value": {"bets_enabled": 0}}),
])
def test_admin_rejects_invalid_bodies(admin_client: TestClient, path: str, method: str, body: dict) -> None:
    resp = admin_client.request(method, path, json=body, headers=_bearer("t-super"))
    assert resp.status_code == 422, resp.text
    assert isinstance(resp.json()["detail"], list)


# --- wallet -------------------------------------------------------------------------------------

@pytest.mark.parametrize("amount", [0, -5, "100", 1.5, True, 10**13])
def test_wallet_amounts_are_strict_positive_integers(amount: object) -> None:
    with pytest.raises(ValidationError):
        wallet.MoneyIn.model_validate({"player_id": "alpha-0001", "amount": amount, "ref": "r"})


def test_wallet_requests_need_their_keys() -> None:
    with pytest.raises(ValidationError):
        wallet.MoneyIn.model_validate({"player_id": "alpha-0001", "amount": 5, "ref": ""})
    with pytest.raises(ValidationError):
        wallet.BetIn.model_validate({"player_id": "p", "amount": 5})
    settle = wallet.SettleIn.model_validate({"player_id": "p", "round_id": "r", "win_amount": 0})
    assert settle.win_amount == 0


def test_writes_carry_the_ledger_sign_and_key() -> None:
    money = wallet.MoneyIn(player_id="p", amount=70, ref="r1")
    assert wallet.deposit(money) == wallet.Write("deposit", "p", 70, "r1")
    assert wallet.withdraw(money).amount == -70
    assert wallet.withdraw(money).key_column == "ref"
    b = wallet.bet(wallet.BetIn(player_id="p", round_id="rd", amount=30))
    assert (b.amount, b.key_column) == (-30, "round_id")
    assert wallet.settle(wallet.SettleIn(player_id="p", round_id="rd", win_amount=0)).amount == 0


@pytest.mark.parametrize(("values", "blocked"), [
    ([], False), ([None], False), (["true"], False), ([None, "true"], False),
    (["false"], True), ([None, "false"], True), (["true", "false"], True), ([" False "], True),
])
def test_brand_flag_false_in_either_key_blocks(values: list[str | None], blocked: bool) -> None:
    assert wallet.blocked_by_flags(values) is blocked


# --- gateway: releases ----------------------------------------------------------------------------

def _release(tmp_path: Path, patch: dict[str, str] | None = None, *, git: bool = True) -> Path:
    d = tmp_path / "servers_v2"
    subprocess.run(["cp", "-r", str(TEMPLATE), str(d)], check=True)
    for rel, content in (patch or {}).items():
        (d / rel).write_text(content)
    if git:
        cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@example.test", "-C", str(d)]
        subprocess.run([*cmd, "init", "-q"], check=True)
        subprocess.run([*cmd, "add", "-A"], check=True)
        subprocess.run([*cmd, "commit", "-qm", "release"], check=True)
    return d


def test_good_release_is_healthy_and_reports_its_sha(tmp_path: Path) -> None:
    d = _release(tmp_path)
    release = gateway.load_release(d)
    head = subprocess.run(["git", "-C", str(d), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert release.sha == head.strip() and len(release.sha) == 40
    assert release.health() is None
    client = TestClient(gateway.create_app(_settings(release_dir=d)))
    assert client.get("/health").json() == {"status": "ok", "release": release.sha}


def test_bad_deploy_turns_health_into_500(tmp_path: Path) -> None:
    d = _release(tmp_path, bad_deploy_patch())
    client = TestClient(gateway.create_app(_settings(release_dir=d)))
    resp = client.get("/health")
    assert resp.status_code == 500
    body = resp.json()
    assert body["status"] == "error" and len(body["release"]) == 40
    assert "KeyError" in body["error"] and "wallet_timeout_s" in body["error"]
    assert (d / "VERSION").read_text().strip() != (TEMPLATE / "VERSION").read_text().strip()


def test_release_that_does_not_import_is_reported(tmp_path: Path) -> None:
    d = _release(tmp_path, import_error_patch())
    release = gateway.load_release(d)
    assert release.hooks is None
    assert release.health() is not None and "ModuleNotFoundError" in str(release.health())


@pytest.mark.parametrize("setup", ["unset", "missing_hooks", "no_git"])
def test_release_without_hooks_or_git(tmp_path: Path, setup: str) -> None:
    if setup == "unset":
        release = gateway.load_release(None)
    elif setup == "missing_hooks":
        (tmp_path / "empty").mkdir()
        release = gateway.load_release(tmp_path / "empty")
    else:
        release = gateway.load_release(_release(tmp_path, git=False))
        assert release.sha == "unknown" and release.health() is None
        return
    assert release.health() is not None


def test_proxy_drops_hop_by_hop_headers() -> None:
    kept = [("Authorization", "Bearer a"), ("content-type", "application/json")]
    headers = [("Host", "x"), ("Connection", "keep-alive"), ("Content-Length", "3"), *kept,
               ("Transfer-Encoding", "chunked")]
    assert gateway.proxy_headers(headers) == kept


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gateway_maps_upstream_failures(tmp_path: Path) -> None:
    dead = _closed_port()
    # A listener that never accepts: the connection opens, the answer never comes.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    dsn = SecretStr(f"host=127.0.0.1 port={dead} dbname=x user=x connect_timeout=1")
    try:
        with TestClient(gateway.create_app(_settings(dsn=dsn, wallet_port=dead, wallet_2_port=dead))) as client:
            resp = client.post("/api/v1/wallet/deposit", json={})
            assert (resp.status_code, resp.json()) == (502, {"detail": "upstream unavailable"})
        slow = _settings(dsn=dsn, wallet_port=silent.getsockname()[1], wallet_2_port=silent.getsockname()[1],
                         wallet_lock_timeout_s=0.05)
        with TestClient(gateway.create_app(slow)) as client:
            resp = client.get("/api/v1/wallet/balance/alpha-0001")
            assert (resp.status_code, resp.json()) == (504, {"detail": "upstream timeout"})
            deep = client.get("/health/deep")
            assert deep.status_code == 503 and deep.json()["status"] == "degraded"
            assert deep.json()["checks"]["database"]["ok"] is False
    finally:
        silent.close()


def test_gateway_sends_to_the_other_wallet_when_one_refuses_the_connection() -> None:
    """Blue/green: while one instance restarts, every request reaches the other — only a refused
    connection moves on (nothing was sent), a timeout or an answer never does."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Wallet(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"served_by": "wallet-2"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Wallet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dsn = SecretStr(f"host=127.0.0.1 port={_closed_port()} dbname=x user=x connect_timeout=1")
        settings = _settings(dsn=dsn, wallet_port=_closed_port(), wallet_2_port=server.server_address[1])
        with TestClient(gateway.create_app(settings)) as client:
            answers = [client.get("/api/v1/wallet/balance/alpha-0001") for _ in range(4)]
        assert [(r.status_code, r.json()) for r in answers] == [(200, {"served_by": "wallet-2"})] * 4
    finally:
        server.shutdown()


def test_gateway_ingress_needs_super_admin() -> None:
    client = TestClient(gateway.create_app(_settings()), raise_server_exceptions=False)
    assert client.get("/api/v1/ingress/provider").status_code == 401
    resp = client.put("/api/v1/ingress/provider", json={"blocked": True, "reason": "x"},
                      headers=_bearer("t-brand"))
    assert resp.status_code == 403
    assert resp.json() == {"detail": "role 'brand_admin' may not change provider ingress"}
