"""The forms the on-call fills in the Prefect UI, as the UI gets them: the run form's JSON Schema
(from `parameter_schema`, what `prefect deploy` registers) and the approval (Resume) form's.

The browser tests in tests/ui/ prove the forms can be filled and submitted; these pin the schema
properties that make that possible, without a server.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import ValidationError, validate
from pydantic import Field

from remediation.domain.levers import LEVERS, LeverChange, apply_path
from remediation.flowkit.approval import _form_for, confirm_pattern
from remediation.flowkit.params import described

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
RISKY = {d["name"] for d in DEPLOYMENTS if "risky" in d["tags"]}


def _flow(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["name"])
def test_every_run_form_field_explains_itself(deployment: dict[str, Any]) -> None:
    schema = parameter_schema(_flow(deployment["entrypoint"])).model_dump()
    bare = [name for name, prop in schema["properties"].items() if len(prop.get("description") or "") < 20]
    assert not bare, f"{deployment['name']}: run form fields without a description: {bare}"


# Read-only runbooks may default initiated_by to "unknown" (an alert, or a person looking around).
@pytest.mark.parametrize("deployment", [d for d in DEPLOYMENTS if d["name"] in RISKY], ids=lambda d: d["name"])
def test_a_risky_run_cannot_start_without_saying_who_asked(deployment: dict[str, Any]) -> None:
    assert len(RISKY) >= 5
    schema = parameter_schema(_flow(deployment["entrypoint"])).model_dump()
    assert "initiated_by" in schema["required"] and "default" not in schema["properties"]["initiated_by"]


def test_the_lever_field_says_what_each_lever_does() -> None:
    schema = parameter_schema(_flow("flows/contain.py:contain")).model_dump()
    text = schema["properties"]["lever"]["description"]
    assert all(f"`{lever}`" in text for lever in LEVERS)
    assert "PUT /api/v1/maintenance" in text and "Finance maintenance" in text


def test_described_refuses_a_parameter_nobody_explained() -> None:
    def runbook(incident_id: Annotated[str, Field(description="the incident")], quiet: bool = False) -> None:
        """A runbook."""

    with pytest.raises(TypeError, match="'quiet' has no description"):
        described(runbook)


def test_described_writes_the_args_section_prefect_reads() -> None:
    def runbook(count: Annotated[int, Field(ge=1, description="how many, at least one")] | None = None) -> None:
        """A runbook."""

    schema = parameter_schema(described(runbook)).model_dump()
    assert schema["properties"]["count"]["description"] == "how many, at least one"


# --- the approval form -------------------------------------------------------------------------------
DIGEST = "ab" * 32
GOOD = {"decision": "approve", "approver": "bob", "reason": "looks right", "confirm_target": "sandbox",
        "plan_hash": DIGEST}


def _schema() -> dict[str, Any]:
    return _form_for("contain-deposit-halt", "sandbox", DIGEST).model_json_schema()


def test_confirm_target_is_a_field_a_person_can_type_into() -> None:
    prop = _schema()["properties"]["confirm_target"]
    # A `const` renders as a disabled, empty input in the Prefect UI: nobody could submit the form.
    assert "const" not in prop and "enum" not in prop
    assert prop["type"] == "string" and prop["pattern"] == "^sandbox$"
    plan = _schema()["properties"]["plan_hash"]
    assert plan["const"] == DIGEST and plan["default"] == DIGEST  # pre-filled, read-only


@pytest.mark.parametrize(("change", "why"), [
    ({"confirm_target": "production"}, "confirm_target"),
    ({"confirm_target": "sandbox2"}, "confirm_target"),
    ({"confirm_target": " sandbox"}, "confirm_target"),
    ({"approver": "bob smith"}, "approver"),
    ({"plan_hash": "cd" * 32}, "plan_hash"),
    ({"decision": "maybe"}, "decision"),
])
def test_the_server_refuses_a_bad_answer(change: dict[str, str], why: str) -> None:
    # The same validator the Prefect server runs on `POST /flow_runs/{id}/resume`.
    with pytest.raises(ValidationError, match=why):
        validate({**GOOD, **change}, _schema(), raise_on_error=True)
    validate(GOOD, _schema(), raise_on_error=True)


def test_confirm_pattern_takes_target_names_only() -> None:
    assert confirm_pattern("eu-prod-2") == "^eu-prod-2$"
    with pytest.raises(ValueError):
        confirm_pattern("prod|.*")


def _halt() -> LeverChange:
    return LeverChange(lever="deposit-halt", resource="global-var-deposit-maintenance-status",
                       description="global var DEPOSIT_MAINTENANCE_STATUS value '1'", before={"value": "0"},
                       after={"value": "1"})


def test_the_approver_sees_which_path_apply_takes() -> None:
    via_api = apply_path(_halt(), "admin-api")
    assert via_api.startswith("admin API `PUT /api/v1/global-vars/DEPOSIT_MAINTENANCE_STATUS`")
    assert "if the admin API is down then" in via_api and "UPDATE global_var SET value='1'" in via_api
    via_sql = apply_path(_halt(), "sql-fallback")
    assert via_sql.startswith("SQL fallback") and "admin API was down at planning" in via_sql
    brand = LeverChange(lever="brand-disable", resource="brand-beta-payment-policy", description="d",
                        before={"deposit_enabled": True}, after={"deposit_enabled": False})
    assert "PATCH /api/v1/brands/beta/config/payment_policy" in apply_path(brand, "admin-api")
    assert "no SQL fallback" in apply_path(brand, "admin-api")
