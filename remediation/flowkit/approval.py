"""Approvals for risky steps: a typed Resume form, bound to the exact plan shown, answered by
verified people, recorded for audit.

`request_approval` pauses the run (remediation.flowkit.pause) and shows the form in the Prefect
UI. The server validates an answer against the form's JSON Schema before it resumes the run:
`plan_hash` is a `const` (pre-filled, read-only), `confirm_target` a `pattern` only the target's
name matches, `approver` a handle, `code` six digits. The flow then checks what a schema cannot:
the approver is a declared person with the approver role, not the run's verified initiator
(four eyes), not someone who already signed this step off, and their code (or, from the CLI,
their signature over this very answer) is valid and unused. A step the policy gives N approvals
pauses again until N distinct people said yes. Anything refused is recorded as `invalid` and
asked again until the step's deadline; a timeout is a "no".
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import pydantic
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from remediation.domain.plan import plan_hash
from remediation.domain.text import md_inline
from remediation.flowkit.identity import check_proof, person_for
from remediation.flowkit.pause import attempt, pause_for_answer, pause_key
from remediation.target.inventory import HANDLE, Target

__all__ = ["Approval", "ApprovalForm", "Signoff", "confirm_pattern", "request_approval", "signed_fields"]

_TARGET_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
#: A reason ends up in commit messages and reports: one line, and nothing git or this tool would read as a
#: trailer — `Signed-off-by:`-style tokens, the revert commit's own keys, or "This reverts commit".
_TRAILER = re.compile(
    r"^\s*([A-Za-z0-9]+(-[A-Za-z0-9]+)+|Incident|Reason|Approved|Signed|Reviewed)\s*:|this reverts commit",
    re.IGNORECASE)
Decision = Literal["approve", "reject", "skip", "timeout", "invalid"]


class ApprovalForm(RunInput):
    """The base form; `request_approval` pins plan_hash and confirm_target to this plan and target."""

    decision: Literal["approve", "reject", "skip"] = Field(
        description="approve applies the plan shown; reject changes nothing and ends an incident loop; "
                    "skip changes nothing and lets the loop go on (say why)")
    approver: str = Field(pattern=HANDLE, description="your handle as the target declares it, e.g. `lead-bob`")
    reason: str = Field(pattern=r"^[^\r\n]{3,300}$",
                        description="why, in one line (3-300 characters); it goes into the audit trail")
    code: str = Field(default="", pattern=r"^([0-9]{6})?$",
                      description="the 6-digit code your authenticator shows now (each code counts once)")
    signature: str = Field(default="", max_length=4000,
                           description="CLI only, instead of a code: `remediation.cli approve --sign-key` fills it")
    confirm_target: str = Field(description="type the target's name to confirm")
    plan_hash: str = Field(description="the hash of the plan you reviewed (pre-filled)")


class Signoff(BaseModel):
    """One verified person's answer."""

    approver: str
    verified_by: Literal["totp", "ssh-signature"]
    reason: str
    at: datetime


class Approval(BaseModel):
    """What the auditor sees for every decision, including timeouts and refused answers."""

    step: str
    target: str
    decision: Decision
    #: The first approver (or the one who rejected or skipped); all of them are in `signoffs`.
    approver: str | None
    reason: str
    plan_hash: str
    requested_by: str | None
    requested_at: datetime
    decided_at: datetime
    flow_run_id: str | None
    run_attempt: int = 1
    required: int = 1
    signoffs: list[Signoff] = []

    @property
    def approved(self) -> bool:
        return self.decision == "approve"

    @property
    def approvers(self) -> list[str]:
        return [s.approver for s in self.signoffs]


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


def signed_fields(run_id: str, key: str, answer: dict[str, Any]) -> dict[str, str]:
    """What a CLI signature covers: the answer, the run and the pause it is for (so it counts nowhere else)."""
    return {"flow_run_id": run_id, "pause": key, **{k: str(answer.get(k, "")) for k in
            ("decision", "approver", "reason", "confirm_target", "plan_hash")}}


def _problem(target: Target, answer: ApprovalForm, requested_by: str | None, signed_off: list[Signoff]) -> str | None:
    """Why this answer does not count (checked before the second factor, which it would use up)."""
    if _TRAILER.search(answer.reason):
        return "the reason looks like a commit trailer (`Signed-off-by: …`, `This reverts commit …`); say it in words"
    person = person_for(target, answer.approver, "approver")
    if isinstance(person, str):
        return person
    if target.policy.four_eyes and requested_by and answer.approver == requested_by:
        return f"four eyes: {answer.approver} started this run and cannot approve it"
    if answer.approver in {s.approver for s in signed_off}:
        return f"{answer.approver} already approved this step; it needs someone else"
    return None


def request_approval(
    *,
    step: str,
    target: Target,
    plan: Any,
    summary_markdown: str,
    requested_by: str | None,
    timeout_s: float,
    pause: Callable[..., dict[str, Any] | None] = pause_for_answer,
) -> Approval:
    """Show the plan, pause until enough verified people decide, record it. Never raises for a "no"."""
    log = get_run_logger()
    digest = plan_hash(plan)
    form = _form_for(step, target.name, digest)
    required = target.approvals_required(step)
    requested_at = datetime.now(UTC)
    deadline = time.monotonic() + timeout_s
    run_id = str(flow_run.get_id()) if flow_run.get_id() else None
    record = _Recorder(step, target.name, digest, requested_by, requested_at, run_id, required)
    create_markdown_artifact(
        key=f"plan-{step}", description=f"plan awaiting approval: {step}",
        markdown=f"{summary_markdown}\n\n**Plan hash**: `{digest}`\n\n**Approvals needed**: {required}\n",
    )
    signed_off: list[Signoff] = []
    while len(signed_off) < required:
        remaining = int(deadline - time.monotonic())
        if remaining <= 0:
            return record("timeout", None, "no decision before the deadline", signed_off)
        have = f" ({len(signed_off)} of {required}: {', '.join(s.approver for s in signed_off)})" if signed_off else ""
        log.info("step %s waits for approval of plan %s%s (%d s left)", step, digest[:12], have, remaining)
        key = pause_key(step, digest)
        asks = f"Approve **{step}** on `{target.name}`?" + (
            f" This step needs {required} approvers;{have or ' none yet'}." if required > 1 else "")
        try:
            raw = pause(form.with_initial_data(description=f"{asks}\n\n{summary_markdown}", plan_hash=digest),
                        timeout_s=remaining, key=key)
        except FlowPauseTimeout:
            return record("timeout", None, "no decision before the deadline", signed_off)
        try:
            answer = form.model_validate(raw or {})
        except pydantic.ValidationError as exc:
            why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
            record("invalid", None, f"answer refused: {why or 'no answer'}", signed_off)
            log.warning("approval answer refused (%s); asking again", why)
            continue
        problem = _problem(target, answer, requested_by, signed_off)
        method = None
        if problem is None:
            person = target.people[answer.approver]
            method, problem = check_proof(
                target, answer.approver, person, code=answer.code or None, signature=answer.signature or None,
                signed=signed_fields(run_id or "", key, raw or {}), purpose=f"approval:{step}:{digest[:12]}",
                flow_run_id=run_id)
        if problem is not None or method is None:
            record("invalid", answer.approver, problem or "not verified", signed_off)
            log.warning("approval answer refused (%s); asking again", problem)
            continue
        signoff = Signoff(approver=answer.approver, verified_by=method, reason=answer.reason, at=datetime.now(UTC))
        if answer.decision != "approve":  # one verified "no" (or "skip") decides
            return record(answer.decision, answer.approver, answer.reason, [*signed_off, signoff])
        signed_off.append(signoff)
    return record("approve", signed_off[0].approver, "; ".join(f"{s.approver}: {s.reason}" for s in signed_off),
                  signed_off)


class _Recorder:
    """Writes each decision — final or refused — as a log line and an `approval-<step>` artifact."""

    def __init__(self, step: str, target: str, digest: str, requested_by: str | None, requested_at: datetime,
                 run_id: str | None, required: int) -> None:
        self.step, self.target, self.digest = step, target, digest
        self.requested_by, self.requested_at, self.run_id, self.required = requested_by, requested_at, run_id, required

    def __call__(self, decision: Decision, approver: str | None, reason: str, signoffs: list[Signoff]) -> Approval:
        approval = Approval(
            step=self.step, target=self.target, decision=decision, approver=approver, reason=reason,
            plan_hash=self.digest, requested_by=self.requested_by, requested_at=self.requested_at,
            decided_at=datetime.now(UTC), flow_run_id=self.run_id, run_attempt=attempt(),
            required=self.required, signoffs=signoffs,
        )
        get_run_logger().info(
            "approval %s: step=%s target=%s approver=%s plan=%s reason=%s signoffs=%s",
            decision, self.step, self.target, approver, self.digest[:12], reason,
            ", ".join(f"{s.approver} ({s.verified_by})" for s in signoffs) or "none",
        )
        rows = {k: v for k, v in approval.model_dump(mode="json").items() if k != "signoffs"}
        rows["signoffs"] = "; ".join(f"{s.approver} ({s.verified_by}, {s.at.isoformat()})" for s in signoffs) or "—"
        create_markdown_artifact(
            key=f"approval-{self.step}", description=f"approval record: {self.step} {decision}",
            markdown="| field | value |\n|---|---|\n" + "\n".join(
                f"| {k} | {md_inline(v, limit=2000)} |" for k, v in rows.items()) + "\n",
        )
        return approval
