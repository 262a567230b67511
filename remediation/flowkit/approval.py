"""Approvals for risky steps: a typed resume form, bound to the exact plan shown, recorded for audit.

`request_approval` pauses the flow run waiting for typed input (Prefect's
`pause_flow_run(wait_for_input=...)` mechanism, with our own deadline); the Prefect UI
renders the form. The server validates an answer against the form's JSON Schema before it
resumes the run: `plan_hash` is a `const` (pre-filled, shown read-only), `confirm_target` a
`pattern` that only the target's own name matches (typed by the approver: a `const` would
render as a disabled, empty input that nobody can fill), the approver a handle. So a wrong
target, another plan or a bad handle is refused with the run still paused.
What JSON Schema cannot say (four eyes) is checked after the resume; an invalid answer
is recorded and the flow pauses again until the step's deadline. A timeout is a "no".
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, cast

import pydantic
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_paused_state
from prefect.runtime import flow_run
from prefect.states import Paused, Running, State
from prefect.utilities.engine import propose_state_sync
from pydantic import BaseModel, Field

from remediation.domain.plan import plan_hash

__all__ = ["Approval", "ApprovalForm", "confirm_pattern", "request_approval"]

_TARGET_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
#: How often a paused run checks whether it was resumed (Prefect's default is 10 s).
POLL_S = 1
#: The server's own pause deadline is set this much later than ours. Past the server's deadline
#: Prefect turns any exit from Paused into "Failed: never resumed"; leaving at ours first lets a
#: timeout end as a clean, recorded "no".
SERVER_GRACE_S = 120


def pause_for_input(form: type[RunInput], *, timeout_s: float, key: str) -> RunInput:
    """Like `prefect.flow_runs.pause_flow_run(wait_for_input=...)`, but a timeout leaves the run
    Running (and raises FlowPauseTimeout) instead of letting the server fail it."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("approvals can only be requested inside a flow run")
    run_id = ctx.flow_run.id
    proposed: State[Any] = Paused(timeout_seconds=int(timeout_s) + SERVER_GRACE_S, reschedule=False, pause_key=key)
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = {str(k): v for k, v in keyset.items()}
    with get_client(sync_client=True) as client:
        state = propose_state_sync(client, proposed, flow_run_id=run_id)
        if state.is_running():  # this pause key was already answered (a retried flow)
            return cast(RunInput, form.load(keyset))
        if not state.is_paused():
            raise RuntimeError(f"the run could not pause for approval: {state}")
        form.save(keyset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(POLL_S)
            current = client.read_flow_run(run_id).state
            if current is not None and current.is_running():
                return cast(RunInput, form.load(keyset))
        back = propose_state_sync(client, Running(), flow_run_id=run_id)
        if not back.is_running():
            raise RuntimeError(f"could not leave the pause after the approval deadline: {back}")
    raise FlowPauseTimeout(f"no decision within {timeout_s:.0f} s")


class ApprovalForm(RunInput):
    """The base form; `request_approval` pins plan_hash and confirm_target to this plan and target."""

    decision: Literal["approve", "reject", "skip"] = Field(
        description="approve applies the plan shown; reject changes nothing and ends an incident loop; "
                    "skip changes nothing and lets the loop go on (say why)")
    approver: str = Field(pattern=r"^[A-Za-z0-9_.@+-]{2,80}$", description="your handle, e.g. alice")
    reason: str = Field(min_length=3, max_length=1000, description="why; it goes into the audit trail")
    confirm_target: str = Field(description="type the target's name to confirm")
    plan_hash: str = Field(description="the hash of the plan you reviewed (pre-filled)")


class Approval(BaseModel):
    """What the auditor sees for every decision, including timeouts and refused answers."""

    step: str
    target: str
    decision: Literal["approve", "reject", "skip", "timeout", "invalid"]
    approver: str | None
    reason: str
    plan_hash: str
    requested_by: str | None
    requested_at: datetime
    decided_at: datetime
    flow_run_id: str | None

    @property
    def approved(self) -> bool:
        return self.decision == "approve"


def confirm_pattern(target: str) -> str:
    """The `confirm_target` pattern: the target's name and nothing else. Target names are
    `[a-z][a-z0-9-]*`, literal in both Python's and the browser's regex dialects (no escaping,
    which JavaScript's unicode mode would reject)."""
    if not _TARGET_NAME.fullmatch(target):
        raise ValueError(f"not a target name: {target!r}")
    return f"^{target}$"


def _form_for(step: str, target: str, digest: str) -> type[ApprovalForm]:
    fields: dict[str, Any] = {
        "confirm_target": (str, Field(pattern=confirm_pattern(target), examples=[target],
                                      description=f"type `{target}` (the target's name) to confirm")),
        # A Literal with a default: JSON Schema `const`, pre-filled and read-only in the UI.
        "plan_hash": (Literal[digest], Field(default=digest, description="the plan you reviewed (pre-filled)")),
    }
    return pydantic.create_model(f"Approve_{step.replace('-', '_')}", __base__=ApprovalForm, **fields)


def _problem(answer: ApprovalForm, requested_by: str | None, four_eyes: bool) -> str | None:
    if four_eyes and requested_by and answer.approver.lower() == requested_by.lower():
        return f"four eyes: {answer.approver} requested this run and cannot approve it"
    return None


def request_approval(
    *,
    step: str,
    target: str,
    plan: Any,
    summary_markdown: str,
    requested_by: str | None,
    four_eyes: bool,
    timeout_s: float,
    pause: Callable[..., Any] = pause_for_input,
) -> Approval:
    """Show the plan, pause for a decision, record it. Never raises for a "no"."""
    log = get_run_logger()
    digest = plan_hash(plan)
    form = _form_for(step, target, digest)
    requested_at = datetime.now(UTC)
    deadline = time.monotonic() + timeout_s
    run_id = str(flow_run.get_id()) if flow_run.get_id() else None
    create_markdown_artifact(
        key=f"plan-{step}", description=f"plan awaiting approval: {step}",
        markdown=f"{summary_markdown}\n\n**Plan hash**: `{digest}`\n",
    )
    attempt = 0
    while True:
        remaining = int(deadline - time.monotonic())
        if remaining <= 0:
            return _record(step, target, "timeout", None, "no decision before the deadline", digest,
                           requested_by, requested_at, run_id)
        attempt += 1
        log.info("step %s waits for approval of plan %s (%d s left)", step, digest[:12], remaining)
        try:
            answer = pause(
                form.with_initial_data(
                    description=f"Approve **{step}** on `{target}`?\n\n{summary_markdown}",
                    plan_hash=digest,
                ),
                timeout_s=remaining, key=f"{step}-{digest[:12]}-{attempt}",
            )
        except FlowPauseTimeout:
            return _record(step, target, "timeout", None, "no decision before the deadline", digest,
                           requested_by, requested_at, run_id)
        problem = _problem(answer, requested_by, four_eyes)
        if problem is None:
            return _record(step, target, answer.decision, answer.approver, answer.reason, digest,
                           requested_by, requested_at, run_id)
        _record(step, target, "invalid", answer.approver, problem, digest, requested_by, requested_at, run_id)
        log.warning("approval answer refused (%s); asking again", problem)


Decision = Literal["approve", "reject", "skip", "timeout", "invalid"]


def _record(
    step: str, target: str, decision: Decision, approver: str | None, reason: str, digest: str,
    requested_by: str | None, requested_at: datetime, run_id: str | None,
) -> Approval:
    approval = Approval(
        step=step, target=target, decision=decision, approver=approver,
        reason=reason, plan_hash=digest, requested_by=requested_by, requested_at=requested_at,
        decided_at=datetime.now(UTC), flow_run_id=run_id,
    )
    get_run_logger().info(
        "approval %s: step=%s target=%s approver=%s plan=%s reason=%s",
        decision, step, target, approver, digest[:12], reason,
    )
    create_markdown_artifact(
        key=f"approval-{step}", description=f"approval record: {step} {decision}",
        markdown="| field | value |\n|---|---|\n" + "\n".join(
            f"| {k} | {v} |" for k, v in approval.model_dump(mode="json").items()
        ) + "\n",
    )
    return approval
