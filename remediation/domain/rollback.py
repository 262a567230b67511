"""Rollback planning (seed 000 step 4): what would be reverted, whether policy allows it, what the host runs.

Pure data and rules; the git and host work lives in tasks/git.py and tasks/host.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from remediation.domain.commits import Commit
from remediation.domain.text import md_inline

__all__ = [
    "REVERT_PLACEHOLDER",
    "CommitSha",
    "RevertPlan",
    "RevertState",
    "age_hours",
    "host_commands",
    "revert_message",
    "summary_markdown",
]

#: A commit is named by its hex sha (7-40 characters) — never a ref name or anything an option parser
#: could read; Prefect validates this before the run is created.
CommitSha = Annotated[
    str,
    Field(pattern=r"^[0-9a-f]{7,40}$", description="the bad commit's sha (7-40 hex); empty = the last deploy"),
]
#: The revert's sha exists only once it is committed after approval; the approver sees this in its place.
REVERT_PLACEHOLDER = "<revert-sha>"

RevertState = Literal["to-revert", "reverted-not-deployed", "reverted-and-deployed"]


def host_commands(checkout: str, rebuild: list[list[str]], revert_sha: str = REVERT_PLACEHOLDER) -> list[list[str]]:
    """What runs on the deploy host, in order: fetch, fast-forward to exactly the revert, then the
    inventory's rebuild commands (those run in the checkout)."""
    return [
        ["git", "-C", checkout, "fetch", "--prune", "origin"],
        ["git", "-C", checkout, "merge", "--ff-only", revert_sha],
        *rebuild,
    ]


class RevertPlan(BaseModel):
    target: str
    branch: str
    bad: Commit
    bad_age_hours: float
    max_age_hours: float
    #: `git log --oneline -10` of the remote branch when planned.
    recent: list[Commit]
    #: What the deploy host runs now, and whether the bad commit came from "the last deploy".
    deployed_sha: str
    from_last_deploy: bool
    files: list[str]
    diff_stat: str
    state: RevertState
    #: Identity of the revert's diff (`git patch-id`); None when the commit is already reverted.
    revert_patch_id: str | None
    existing_revert: Commit | None
    host: str
    commands: list[str]

    @property
    def too_old(self) -> bool:
        return self.bad_age_hours > self.max_age_hours

    def approval_view(self) -> dict[str, Any]:
        """What the approver's plan hash covers: the change and where it goes, not when it was read."""
        return {
            "target": self.target, "branch": self.branch, "bad": self.bad.sha, "state": self.state,
            "revert_patch_id": self.revert_patch_id,
            "existing_revert": self.existing_revert.sha if self.existing_revert else None,
            "files": self.files, "host": self.host, "commands": self.commands, "too_old": self.too_old,
        }


def age_hours(commit: Commit, now: datetime | None = None) -> float:
    return round(((now or datetime.now(UTC)) - commit.committed_at).total_seconds() / 3600, 2)


def revert_message(plan: RevertPlan, incident_id: str, approver: str | None, reason: str, run_id: str | None) -> str:
    """Subject as `git revert` writes it, then who decided and why (the trailer is added by the client)."""
    # The reason was refused already if it looked like a trailer; one line, capped, all the same.
    reason = " ".join(reason.split())[:300]
    return (
        f'Revert "{plan.bad.subject}"\n\n'
        f"Incident: {incident_id}\nApproved-by: {approver or 'nobody'}\nReason: {reason}\n"
        f"Flow-run: {run_id or 'local'}"
    )


def summary_markdown(incident_id: str, plan: RevertPlan) -> str:
    lines = [f"### rollback on `{plan.target}` for {incident_id}", ""]
    lines += [
        f"- **bad commit**: `{plan.bad.sha[:12]}` {md_inline(plan.bad.subject)} — {md_inline(plan.bad.author)}, "
        f"{plan.bad.committed_at:%Y-%m-%d %H:%M} UTC ({plan.bad_age_hours:.1f} h old)"
        + (" — found as the last deploy" if plan.from_last_deploy else ""),
        f"- **deployed on {plan.host}**: `{plan.deployed_sha[:12]}`",
        f"- **state**: {plan.state}",
    ]
    if plan.too_old:
        lines += [
            "",
            f"> **Policy: forward fix recommended.** The commit is {plan.bad_age_hours:.1f} h old "
            f"(limit {plan.max_age_hours:g} h). Approving overrides the policy: say why in the reason.",
        ]
    if plan.existing_revert is not None:
        revert = plan.existing_revert
        lines += [f"- **already reverted by** `{revert.sha[:12]}` {md_inline(revert.subject)}"]
    lines += ["", f"**Files** ({len(plan.files)}): " + ", ".join(f"`{f}`" for f in plan.files), ""]
    lines += ["```", plan.diff_stat.strip(), "```", "", "**Host commands** (in order):", ""]
    lines += [f"{i}. `{c}`" for i, c in enumerate(plan.commands, 1)]
    lines += ["", "**Recent commits** (`git log --oneline -10`):", ""]
    lines += [f"- `{c.sha[:7]}` {md_inline(c.subject)}" for c in plan.recent]
    return "\n".join(lines) + "\n"
