"""Tasks against the admin service (seed 000 step 3 levers). Read-only ones here so far."""

from __future__ import annotations

from typing import Any

from prefect import task

from remediation import connect
from remediation.inventory import Target
from remediation.policy import READ_ONLY

__all__ = ["DEPOSIT_MAINTENANCE_STATUS", "get_lever_state"]

DEPOSIT_MAINTENANCE_STATUS = "DEPOSIT_MAINTENANCE_STATUS"


@task(name="get-lever-state", **READ_ONLY)
def get_lever_state(target: Target) -> dict[str, Any]:
    """Where each containment lever stands now: freeze, deposit halt, brand flags, provider ingress."""
    with connect.admin_api(target) as admin:
        maintenance = admin.get_maintenance()
        deposit_halt = admin.get_global_var(DEPOSIT_MAINTENANCE_STATUS)
        brands = {
            brand: {
                key: admin.get_brand_config(brand, key).value
                for key in ("payment_policy", "feature_policy")
            }
            for brand in target.brands
        }
    with connect.gateway(target) as gw:
        ingress = gw.get_provider_ingress()
    return {
        "maintenance": maintenance.model_dump(mode="json"),
        "deposit_maintenance_status": deposit_halt.value,
        "brands": brands,
        "provider_ingress": ingress.model_dump(mode="json"),
    }
