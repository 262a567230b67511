"""The admin service: maintenance record, global vars, brand config (sandbox/API.md, seed 000 step 3)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from remediation.clients._http import HealthResult, HttpSeam, health_of, path_segment
from remediation.errors import BadInputError

__all__ = ["AdminApi", "Brand", "BrandConfig", "GlobalVar", "HealthResult", "HttpxAdminApi", "Maintenance"]


class _Reply(BaseModel):
    # Extra fields are ignored so a newer server does not break an incident run.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Maintenance(_Reply):
    is_active: bool
    message: str = ""
    updated_at: datetime | None = None
    updated_by: str | None = None


class GlobalVar(_Reply):
    code: str
    value: str
    updated_at: datetime | None = None


class Brand(_Reply):
    brand_id: str
    name: str = ""


class BrandConfig(_Reply):
    brand_id: str
    key: str
    value: dict[str, Any]
    updated_at: datetime | None = None


@runtime_checkable
class AdminApi(Protocol):
    def health(self) -> HealthResult: ...
    def get_maintenance(self) -> Maintenance: ...
    def set_maintenance(self, is_active: bool, message: str = "") -> Maintenance: ...
    def get_global_var(self, code: str) -> GlobalVar: ...
    def set_global_var(self, code: str, value: str) -> GlobalVar: ...
    def list_brands(self) -> list[Brand]: ...
    def get_brand_config(self, brand_id: str, key: str) -> BrandConfig: ...
    def put_brand_config(self, brand_id: str, key: str, value: Mapping[str, Any]) -> BrandConfig: ...
    def patch_brand_config(self, brand_id: str, key: str, value: Mapping[str, Any]) -> BrandConfig: ...


class HttpxAdminApi:
    """`AdminApi` over an httpx.Client whose base_url is the admin service."""

    def __init__(self, client: httpx.Client, token: SecretStr, *, timeout: httpx.Timeout | None = None) -> None:
        self._http = HttpSeam(client, token, "admin API", timeout)

    def health(self) -> HealthResult:
        return health_of(self._http, "/health")

    def get_maintenance(self) -> Maintenance:
        return self._http.call_model(Maintenance, "GET", "/api/v1/maintenance")

    def set_maintenance(self, is_active: bool, message: str = "") -> Maintenance:
        if not isinstance(is_active, bool):
            raise BadInputError(f"is_active must be a bool, got {type(is_active).__name__}")
        body = {"is_active": is_active, "message": message}
        return self._http.call_model(Maintenance, "PUT", "/api/v1/maintenance", json=body)

    def get_global_var(self, code: str) -> GlobalVar:
        return self._http.call_model(GlobalVar, "GET", self._var_path(code))

    def set_global_var(self, code: str, value: str) -> GlobalVar:
        if not isinstance(value, str):
            # The platform stores strings; sending 1 instead of "1" would be a 422 at 03:00.
            raise BadInputError(f"global var value must be a string, got {type(value).__name__}")
        return self._http.call_model(GlobalVar, "PUT", self._var_path(code), json={"value": value})

    def list_brands(self) -> list[Brand]:
        path = "/api/v1/brands"
        body = self._http.call("GET", path)
        if not isinstance(body, list):
            body = [body]  # let the model validation below name the bad shape
        return [self._http.parse(Brand, "GET", path, item) for item in body]

    def get_brand_config(self, brand_id: str, key: str) -> BrandConfig:
        return self._http.call_model(BrandConfig, "GET", self._config_path(brand_id, key))

    def put_brand_config(self, brand_id: str, key: str, value: Mapping[str, Any]) -> BrandConfig:
        """Replace the whole value."""
        return self._write_config("PUT", brand_id, key, value)

    def patch_brand_config(self, brand_id: str, key: str, value: Mapping[str, Any]) -> BrandConfig:
        """Merge top-level keys into the value (the narrow lever: flip one flag, keep the rest)."""
        return self._write_config("PATCH", brand_id, key, value)

    def _write_config(self, method: str, brand_id: str, key: str, value: Mapping[str, Any]) -> BrandConfig:
        if not isinstance(value, Mapping):
            raise BadInputError(f"brand config value must be a mapping, got {type(value).__name__}")
        path = self._config_path(brand_id, key)
        return self._http.call_model(BrandConfig, method, path, json={"value": dict(value)})

    @staticmethod
    def _var_path(code: str) -> str:
        return f"/api/v1/global-vars/{path_segment(code, 'global var code')}"

    @staticmethod
    def _config_path(brand_id: str, key: str) -> str:
        return f"/api/v1/brands/{path_segment(brand_id, 'brand id')}/config/{path_segment(key, 'config key')}"
