"""A risky run starts by proving who started it.

`initiated_by` is a form field anyone can fill; before a risky run (not a dry run) touches
anything, it pauses and asks that person for their code (or, from the CLI, a signature). The
verified initiator is what four eyes compares approvers with. A subflow of a run whose
initiator was verified (respond's steps) trusts that verification instead of asking again.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

import pydantic
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed, State
from pydantic import BaseModel, Field

from remediation.errors import BadInputError
from remediation.flowkit.identity import check_proof, person_for
from remediation.flowkit.pause import pause_for_answer, pause_key
from remediation.records.identity_uses import IdentityUses
from remediation.target import connect
from remediation.target.inventory import Target

__all__ = ["IdentityForm", "VerifiedInitiator", "not_confirmed", "verify_initiator"]


class IdentityForm(RunInput):
    handle: str = Field(description="type your handle to confirm it is you who started this run")
    code: str = Field(default="", pattern=r"^([0-9]{6})?$",
                      description="the 6-digit code your authenticator shows now (each code counts once)")
    signature: str = Field(default="", max_length=4000,
                           description="CLI only, instead of a code: `remediation.cli approve --sign-key` fills it")


class VerifiedInitiator(BaseModel):
    handle: str
    verified_by: Literal["totp", "ssh-signature", "parent-run", "not-required"]
    at: datetime


def not_confirmed(handle: str, what: str = "not applied", **data: Any) -> State:
    """The run's end when its initiator did not confirm starting it: `Completed`, nothing changed."""
    return Completed(message=f"{what}: {handle} did not confirm starting this run; nothing changed",
                     data={**data, "outcome": "timeout"})


def verify_initiator(target: Target, handle: str, *, timeout_s: float) -> VerifiedInitiator | None:
    """Prove `handle` started this run; None when nobody did before the deadline (nothing may change).

    Raises BadInputError for a handle the target does not declare with a role that may start
    risky runs: that is bad input, refused before anything is touched.
    """
    log = get_run_logger()
    if not target.policy.verify_initiator:
        return VerifiedInitiator(handle=handle, verified_by="not-required", at=datetime.now(UTC))
    person = person_for(target, handle, ("on-call", "incident-commander"))
    if isinstance(person, str):
        raise BadInputError(f"initiated_by: {person}; a risky run is started by a declared on-call or "
                            "incident-commander")
    run_id = str(flow_run.get_id() or "")
    root = str(flow_run.get_root_flow_run_id() or "")
    if root and root != run_id and IdentityUses(connect.database(target, "rp-identity")).verified_initiator(root) \
            == handle:
        log.info("initiator %s was verified by the run this one is part of (%s)", handle, root)
        return _record(VerifiedInitiator(handle=handle, verified_by="parent-run", at=datetime.now(UTC)))
    pinned: type[IdentityForm] = pydantic.create_model(
        "VerifyInitiator", __base__=IdentityForm,
        handle=(str, Field(pattern="^" + handle.replace(".", "\\.") + "$",
                           description=f"type `{handle}` to confirm it is you")))
    form = pinned.with_initial_data(
        description=f"This risky run was started as **{handle}** on `{target.name}`. Before it touches anything, "
                    f"{handle}: type your handle and your current 6-digit code.")
    deadline = time.monotonic() + timeout_s
    while (remaining := int(deadline - time.monotonic())) > 0:
        key = pause_key("verify-initiator", run_id.replace("-", "") or "0" * 12)
        log.info("waiting for %s to confirm they started this run (%d s left)", handle, remaining)
        try:
            raw = pause_for_answer(form, timeout_s=remaining, key=key)
        except FlowPauseTimeout:
            break
        try:
            answer = form.model_validate(raw or {})
        except pydantic.ValidationError as exc:
            log.warning("initiator answer refused: %s; asking again", exc.errors(include_input=False)[0]["msg"])
            continue
        method, problem = check_proof(
            target, handle, person, code=answer.code or None, signature=answer.signature or None,
            signed={"flow_run_id": run_id, "pause": key, "handle": handle}, purpose="initiator", flow_run_id=run_id)
        if method is None:
            log.warning("initiator not verified (%s); asking again", problem)
            continue
        return _record(VerifiedInitiator(handle=handle, verified_by=method, at=datetime.now(UTC)))
    log.warning("%s did not confirm starting this run before the deadline: nothing will be done", handle)
    return None


def _record(who: VerifiedInitiator) -> VerifiedInitiator:
    create_markdown_artifact(
        key="initiator", description=f"verified initiator: {who.handle}",
        markdown=f"| field | value |\n|---|---|\n| initiator | {who.handle} |\n| verified by | {who.verified_by} |\n"
                 f"| at | {who.at.isoformat()} |\n")
    get_run_logger().info("initiator %s verified (%s)", who.handle, who.verified_by)
    return who
