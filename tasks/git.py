"""Tasks on the service's git remote: plan a revert, and push it (never forced).

Every task works in its own fresh clone of the remote (a clean workspace that nothing else
writes to), so a retry starts from what the remote holds now, not from a half-done attempt.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import get_run_logger

from remediation.clients.git_repo import CliGitRepo, check_rev
from remediation.domain.commits import Commit
from remediation.domain.rollback import RevertPlan, RevertState, age_hours
from remediation.errors import BadInputError, ConflictError, NotFoundError, PushRejectedError
from remediation.evidence.scrub import for_target
from remediation.target.inventory import Target
from tasks.host import shown_rebuild_commands
from tasks.policy import READ_ONLY, SIDE_EFFECT, task

__all__ = ["MAX_PUSH_ATTEMPTS", "plan_revert", "push_revert"]

#: A busy branch may move between our fetch and our push; after this many tries a person looks.
MAX_PUSH_ATTEMPTS = 4
_TRAILER = "This reverts commit "


@contextmanager
def workspace(target: Target) -> Iterator[CliGitRepo]:
    """A fresh clone whose every text read (subjects, messages, diffs, errors) is redacted for the target."""
    with tempfile.TemporaryDirectory(prefix="rp-git-") as tmp:
        yield CliGitRepo.clone(target.git.remote, Path(tmp) / "work", target.git.branch,
                               redact=for_target(target).text)


def reverted_by(message: str) -> str | None:
    """The sha a revert commit's message says it reverts, if it is one."""
    for line in reversed(message.splitlines()):
        if line.startswith(_TRAILER):
            sha = line.removeprefix(_TRAILER).rstrip(".").strip()
            return sha if len(sha) == 40 else None
    return None


def _resolve_bad(repo: CliGitRepo, bad_commit: str | None, deployed_sha: str) -> tuple[str, bool]:
    if bad_commit is None:
        try:
            sha = repo.resolve(check_rev(deployed_sha, "deployed revision"))
        except NotFoundError:
            raise BadInputError(
                f"the host runs {deployed_sha[:12]}, which is not on {repo.current_branch()} of the remote; "
                "name the bad commit explicitly"
            ) from None
        # The last deploy being a revert means the rollback already happened: plan on what it reverted —
        # if its diff really undoes that commit. A message alone is anyone's to write.
        claimed = reverted_by(repo.message(sha))
        if claimed is not None and _truly_reverts(repo, sha, claimed):
            return claimed, True
        return sha, True
    try:
        return repo.resolve(check_rev(bad_commit, "bad commit")), False
    except NotFoundError:
        raise BadInputError(f"bad commit {bad_commit!r} does not exist on the remote") from None


def _truly_reverts(repo: CliGitRepo, revert_sha: str, of_sha: str) -> bool:
    try:
        return repo.patch_id(revert_sha) == repo.inverse_patch_id(repo.resolve(of_sha))
    except (NotFoundError, BadInputError, ConflictError):
        return False


def _deployed_contains(repo: CliGitRepo, sha: str, deployed_sha: str) -> bool:
    try:
        return repo.is_ancestor(sha, deployed_sha)
    except NotFoundError:
        return False


@task(name="plan-revert", **READ_ONLY)
def plan_revert(target: Target, bad_commit: str | None, deployed_sha: str) -> RevertPlan:
    """Seed 000 step 4's `git log --oneline -10` and the revert it leads to, tried in a scratch clone
    (committed there, never pushed) so the approver sees exactly which files change."""
    log = get_run_logger()
    branch = target.git.branch
    with workspace(target) as repo:
        recent = repo.log_oneline(10)
        sha, from_deploy = _resolve_bad(repo, bad_commit, deployed_sha)
        if not repo.is_ancestor(sha, "HEAD"):
            raise BadInputError(f"commit {sha[:12]} is not on {branch}: nothing of it is deployed from there")
        if len(repo.parents(sha)) != 1:
            raise BadInputError(f"commit {sha[:12]} is a merge; revert its parts, or fix forward")
        bad = repo.commit(sha)
        existing = repo.find_revert_of(sha)
        patch_id: str | None = None
        state: RevertState
        if existing is None:
            preview = repo.revert(sha, "preview (never pushed)")
            patch_id = repo.patch_id(preview)
            state = "to-revert"
        else:
            state = "reverted-and-deployed" if _deployed_contains(repo, existing.sha, deployed_sha) \
                else "reverted-not-deployed"
        plan = RevertPlan(
            target=target.name, branch=branch, bad=bad, bad_age_hours=age_hours(bad),
            max_age_hours=target.policy.rollback_max_age_hours, recent=recent, deployed_sha=deployed_sha,
            from_last_deploy=from_deploy, files=repo.changed_files(sha),
            diff_stat=_stat_only(repo.show_stat(sha)), state=state, revert_patch_id=patch_id,
            existing_revert=existing, host=_host(target), commands=shown_rebuild_commands(target),
        )
    log.info("bad commit %s (%s, %.1f h old): %s", bad.sha[:12], bad.subject, plan.bad_age_hours, state)
    return plan


def _stat_only(show_stat: str) -> str:
    # `git show --stat --format=fuller` puts the header first; the approver needs the file lines.
    lines = show_stat.splitlines()
    stat = [ln for ln in lines if "|" in ln or ("changed" in ln and ("insertion" in ln or "deletion" in ln))]
    return "\n".join(stat)


def _host(target: Target) -> str:
    h = target.deploy_host
    return f"{h.user}@{h.address}:{h.port}"


@task(name="push-revert", **SIDE_EFFECT)
def push_revert(target: Target, plan: RevertPlan, message: str) -> Commit:
    """Commit the approved revert on top of the remote branch and push it, fast-forward only.

    The remote is read first on every attempt: a revert already there (ours from an earlier try, or
    someone's) is used, never a second one. A push rejected because someone pushed meanwhile is
    retried from a fresh clone; the redone revert must be the same change (`git patch-id`) as the
    one approved, or nothing is pushed.
    """
    log = get_run_logger()
    for attempt in range(1, MAX_PUSH_ATTEMPTS + 1):
        with workspace(target) as repo:
            existing = repo.find_revert_of(plan.bad.sha)
            if existing is not None:
                log.info("%s is already reverted on %s by %s: not reverting twice",
                         plan.bad.sha[:12], target.git.branch, existing.sha[:12])
                return existing
            new = repo.revert(plan.bad.sha, message)
            if repo.patch_id(new) != plan.revert_patch_id:
                raise ConflictError(
                    f"reverting {plan.bad.sha[:12]} on today's {target.git.branch} is not the change that was "
                    "approved (later commits touch the same lines); nothing pushed — re-run to review it again"
                )
            try:
                repo.push("origin", target.git.branch)
            except PushRejectedError:
                log.warning("push rejected: %s moved meanwhile; fetching and redoing the revert (attempt %d of %d)",
                            target.git.branch, attempt, MAX_PUSH_ATTEMPTS)
                continue
            pushed = repo.commit(new)
            log.info("pushed revert %s to %s", pushed.sha[:12], target.git.branch)
            return pushed
    raise ConflictError(
        f"{target.git.branch} kept moving: {MAX_PUSH_ATTEMPTS} pushes rejected; nothing forced — try again"
    )
