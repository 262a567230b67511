"""The one approve → plan again → ask again loop every risky flow runs before it changes anything.

An approval counts only for the plan it saw. After a yes the flow reads the state again and
re-plans: the same plan hash and it goes ahead; a changed plan (someone acted meanwhile)
voids the approval and the new plan is asked about, a few times at most — a plan that keeps
moving under the approver is a situation for a person, not something to chase. A flow may end
the loop early when the new plan says there is nothing left to do (`settled`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prefect import get_run_logger
from prefect.states import Completed, Failed, State

from remediation.domain.plan import plan_hash
from remediation.flowkit.approval import Approval, request_approval
from remediation.target.inventory import Target

__all__ = ["MAX_REPLANS", "Proposal", "Verdict", "approve_until_stable"]

#: How many times a changed plan is asked about before the flow gives up with nothing applied.
MAX_REPLANS = 3
P = TypeVar("P")


@dataclass(frozen=True)
class Proposal(Generic[P]):
    """A plan, what of it the approver sees and the hash binds (`view`), and its summary for the form."""

    plan: P
    view: Any
    summary: str

    @property
    def hash(self) -> str:
        return plan_hash(self.view)


@dataclass(frozen=True)
class Verdict(Generic[P]):
    """How the loop ended: go ahead with `proposal`, or stop (a no, or the flow's own `ended` state)."""

    proposal: Proposal[P]
    #: None when the target's policy lets this change go without an approval.
    approval: Approval | None
    ended: State | None = None

    @property
    def go(self) -> bool:
        return self.ended is None and (self.approval is None or self.approval.approved)

    def stopped(self, what: str = "not applied", data: dict[str, Any] | None = None, note: str = "") -> State | None:
        """The run's final state when it must not go ahead, else None: the flow's own `ended`, or a no —
        `Completed`, "not applied: reject by bob (why); nothing changed", the approval in its data."""
        if self.ended is not None:
            return self.ended
        a = self.approval
        if a is None or a.approved:
            return None
        told_no = f"{what}: {a.decision} by {a.approver or 'nobody'} ({a.reason}); nothing changed{note}"
        return Completed(message=told_no,
                         data={**(data or {}), "outcome": a.decision, "approval": a.model_dump(mode="json")})


def approve_until_stable(
    step: str,
    target: Target,
    first: Proposal[P],
    replan: Callable[[], Proposal[P]],
    *,
    requested_by: str | None,
    timeout_s: float | None = None,
    ask: bool = True,
    settled: Callable[[Proposal[P]], State | None] | None = None,
    max_replans: int = MAX_REPLANS,
    data: Callable[[Proposal[P]], dict[str, Any]] | None = None,
) -> Verdict[P]:
    """Ask about `first` (unless `ask` is off), re-plan after a yes, and repeat while the plan moves.

    `timeout_s` defaults to the target's policy; four eyes is the target's policy. `settled(new)`
    may end the loop with the flow's own state when a changed plan leaves nothing to approve.
    """
    log = get_run_logger()
    proposal = first
    for _ in range(max_replans):
        approval = None
        if ask:
            approval = request_approval(
                step=step, target=target, plan=proposal.view, summary_markdown=proposal.summary,
                requested_by=requested_by, timeout_s=timeout_s or target.policy.approval_timeout_s,
            )
            if not approval.approved:
                return Verdict(proposal, approval)
        again = replan()
        if again.hash == proposal.hash:
            return Verdict(proposal, approval)
        log.warning("the %s plan changed since it was shown (%s → %s); asking again", step, proposal.hash[:12],
                    again.hash[:12])
        proposal = again
        stop = settled(proposal) if settled is not None else None
        if stop is not None:
            return Verdict(proposal, approval, ended=stop)
    return Verdict(proposal, None, ended=Failed(
        message=f"the {step} plan kept changing across {max_replans} approvals; nothing applied",
        data=data(proposal) if data is not None else None))
