"""Start deployment runs, answer them as the sandbox's declared people, and wait for them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast
from uuid import UUID, uuid4

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from remediation.flowkit import resume
from remediation.flowkit.resume import wait_for_final
from sandbox.config import SandboxSettings
from sandbox.stack import people

#: The sandbox's people (runbooks/targets/sandbox.toml): who starts runs, who approves them.
ONCALL, LEAD, SRE = "oncall-alice", "lead-bob", "sre-carol"


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


def signing_key(handle: str) -> Path:
    """The person's SSH key: signed answers need no wait for a fresh TOTP code."""
    return people.key_path(SandboxSettings().home, handle)


def confirm_initiator(run_id: UUID, handle: str | None = None, wait_s: float = 120) -> None:
    """Answer "who started this run?" as its initiator (signed), if that is what the run waits for."""
    run = resume.wait_for_pause(run_id, timeout_s=wait_s)
    if resume.pending_form(run)["kind"] == "initiator":
        who = handle or str(run.parameters["initiated_by"])
        resume.confirm_initiator(run_id, handle=who, sign_key=signing_key(who), wait_s=wait_s)


def answer(run_id: UUID, *, decision: str = "approve", approver: str = LEAD, reason: str = "pytest drill",
           **kwargs: Any) -> dict[str, Any]:
    """Answer the run's pending approval as `approver`, signed — confirming its initiator first if it asks."""
    confirm_initiator(run_id)
    return resume.answer(run_id, decision=decision, approver=approver, reason=reason,  # type: ignore[arg-type]
                         sign_key=signing_key(approver), **kwargs)


def answer_until_done(run_id: UUID, *, decision: str = "approve", approvers: tuple[str, ...] = (LEAD, SRE),
                      reason: str = "pytest drill", timeout_s: float = 180) -> FlowRun:
    """Answer each pause of the run — one distinct approver each, as a step needing two asks twice —
    until it is final."""
    import time

    from prefect.client.orchestration import get_client

    deadline, answered = time.monotonic() + timeout_s, 0
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            if run.state is not None and run.state.is_paused() and run.state.state_details.run_input_keyset:
                if resume.pending_form(run)["kind"] == "initiator":
                    confirm_initiator(run_id)
                else:
                    answer(run_id, decision=decision, approver=approvers[answered % len(approvers)], reason=reason)
                    answered += 1
            time.sleep(0.2)
    raise TimeoutError(f"run {run_id} not final after {timeout_s:.0f} s")


def approval_records(run_id: UUID) -> list[dict[str, str]]:
    """Every approval record of the run (its `approval-*` artifacts, refused answers included), oldest
    first, each table cell as a reader sees it: split on unescaped pipes, markdown escapes undone."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[run_id])))
    out = []
    for a in sorted(artifacts, key=lambda a: a.created or 0):
        if (a.key or "").startswith("approval-"):
            rows = [re.split(r"(?<!\\)\|", line.strip().strip("|")) for line in str(a.data).splitlines()[2:]
                    if line.startswith("|")]
            out.append({k.strip(): re.sub(r"\\(.)", r"\1", v.strip()) for k, v in rows})
    return out
