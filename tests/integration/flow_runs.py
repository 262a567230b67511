"""Start deployment runs and wait for them, for the flow-level tests."""

from __future__ import annotations

import time
from typing import Any, cast
from uuid import UUID, uuid4

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment


def incident() -> str:
    return f"INC-T{uuid4().hex[:8]}"


def start(deployment: str, **params: Any) -> UUID:
    run = cast(FlowRun, run_deployment(deployment, parameters=params, timeout=0))
    return run.id


def finish(run_id: UUID, timeout_s: float = 180) -> FlowRun:
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run.state} after {timeout_s:.0f} s")
            time.sleep(0.5)


def result(run: FlowRun) -> dict[str, Any]:
    assert run.state is not None
    return cast(dict[str, Any], run.state.result(raise_on_failure=False))
