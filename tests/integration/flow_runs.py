"""Start deployment runs and wait for them, for the flow-level tests."""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID, uuid4

from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from remediation.flowkit.resume import wait_for_final


def incident() -> str:
    return f"INC-T{uuid4().hex[:8]}"


def start(deployment: str, **params: Any) -> UUID:
    run = cast(FlowRun, run_deployment(deployment, parameters=params, timeout=0))
    return run.id


def finish(run_id: UUID, timeout_s: float = 180) -> FlowRun:
    return wait_for_final(run_id, timeout_s=timeout_s)


def result(run: FlowRun) -> dict[str, Any]:
    assert run.state is not None
    return cast(dict[str, Any], run.state.result(raise_on_failure=False))
