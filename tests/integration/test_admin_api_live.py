"""HttpxAdminApi against the stack's real admin service."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from remediation.clients import HttpxAdminApi, make_http_client
from remediation.errors import AuthError, NotFoundError, PermanentError, RetryableError
from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration


@pytest.fixture
def http(stack: StackInfo) -> Iterator[httpx.Client]:
    with make_http_client(stack.admin_url) as client:
        yield client


def test_maintenance_roundtrip_restores_state(reset_platform: StackInfo, http: httpx.Client) -> None:
    admin = HttpxAdminApi(http, reset_platform.admin_tokens["super_admin"])
    before = admin.get_maintenance()
    assert before.is_active is False
    try:
        after = admin.set_maintenance(True, "INC-0001 client test")
        assert after.is_active and after.message == "INC-0001 client test" and after.updated_by == "super_admin"
        assert admin.get_maintenance().is_active is True
    finally:
        restored = admin.set_maintenance(before.is_active, before.message)
    assert restored.is_active is False


def test_global_var_and_brand_config(reset_platform: StackInfo, http: httpx.Client) -> None:
    admin = HttpxAdminApi(http, reset_platform.admin_tokens["super_admin"])
    assert admin.get_global_var("DEPOSIT_MAINTENANCE_STATUS").value == "0"
    assert admin.set_global_var("DEPOSIT_MAINTENANCE_STATUS", "1").value == "1"
    brands = [b.brand_id for b in admin.list_brands()]
    assert "alpha" in brands
    cfg = admin.patch_brand_config("alpha", "payment_policy", {"deposit_enabled": False})
    assert cfg.value == {"deposit_enabled": False, "withdraw_enabled": True}
    with pytest.raises(NotFoundError, match="404"):
        admin.get_global_var("WITHDRAW_MAINTENANCE_STATUS")
    with pytest.raises(PermanentError, match="422"):
        admin.put_brand_config("alpha", "payment_policy", {"deposit_enabled": "no"})


def test_viewer_is_refused_with_403_and_the_token_stays_secret(stack: StackInfo, http: httpx.Client) -> None:
    token = stack.admin_tokens["viewer"]
    viewer = HttpxAdminApi(http, token)
    assert viewer.get_maintenance().is_active in (True, False)
    with pytest.raises(AuthError, match="403") as info:
        viewer.set_maintenance(True, "should not happen")
    assert token.get_secret_value() not in str(info.value)


def test_unknown_token_is_401(stack: StackInfo, http: httpx.Client) -> None:
    with pytest.raises(AuthError, match="401"):
        HttpxAdminApi(http, SecretStr("not-a-token")).get_maintenance()


def test_admin_down_is_retryable(stack: StackInfo) -> None:
    with make_http_client("http://127.0.0.1:1") as client, pytest.raises(RetryableError):
        HttpxAdminApi(client, stack.admin_tokens["super_admin"]).get_maintenance()
