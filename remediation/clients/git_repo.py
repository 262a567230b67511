"""A git checkout driven through the git CLI: argument lists only, never a shell, never force.

Every revision a caller passes is validated (a strict pattern, then
`git rev-parse --verify --end-of-options`) before it reaches a command that could
read it as an option, so `--upload-pack=…` or `HEAD; rm -rf /` is refused as bad input.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

from remediation.domain.commits import Commit
from remediation.errors import (
    AuthError,
    BadInputError,
    ClientError,
    ConflictError,
    NotFoundError,
    PermanentError,
    PushRejectedError,
    RetryableError,
)

__all__ = ["CliGitRepo", "GitRepo", "check_rev"]

_SEP, _END = "\x1f", "\x1e"
_FORMAT = f"%H{_SEP}%s{_SEP}%an{_SEP}%ae{_SEP}%cI{_END}"
# Revisions as runbooks name them: shas, branches, tags, HEAD~2, origin/main, main@{1}.
_REV = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./~^@{}+-]{0,199}")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./+-]{0,199}")
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_NETWORK = re.compile(
    r"could not resolve host|connection refused|connection timed out|operation timed out|"
    r"connection reset|early eof|the remote end hung up unexpectedly|failed to connect|"
    r"temporary failure in name resolution|http 50[234]",
    re.IGNORECASE,
)
_AUTH = re.compile(
    r"authentication failed|permission denied|could not read username|invalid username or password|"
    r"terminal prompts disabled|host key verification failed",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(
    r"unknown revision|bad revision|needed a single revision|bad object|not a valid object name|"
    r"invalid object name|does not appear to be a git repository|repository .* (?:not found|does not exist)",
    re.IGNORECASE,
)


def check_rev(rev: str, what: str = "revision") -> str:
    """Refuse anything that is not plainly a revision name (options, shell syntax, ranges)."""
    if not isinstance(rev, str) or not _REV.fullmatch(rev) or ".." in rev or "@{-" in rev:
        raise BadInputError(f"{what} {rev!r} is not a valid git revision")
    return rev


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name or name.endswith((".lock", "/")):
        raise BadInputError(f"{what} {name!r} is not a valid git name")
    return name


@runtime_checkable
class GitRepo(Protocol):
    workdir: Path

    def fetch(self, remote: str = "origin") -> None: ...
    def log_oneline(self, n: int = 20, ref: str = "HEAD") -> list[Commit]: ...
    def show_stat(self, sha: str) -> str: ...
    def show_patch(self, sha: str, max_chars: int = 100_000) -> str: ...
    def changed_files(self, sha: str) -> list[str]: ...
    def patch_id(self, sha: str) -> str: ...
    def inverse_patch_id(self, sha: str) -> str: ...
    def message(self, sha: str) -> str: ...
    def parents(self, sha: str) -> list[str]: ...
    def commit(self, rev: str) -> Commit: ...
    def commit_time(self, sha: str) -> datetime: ...
    def is_ancestor(self, sha: str, ref: str) -> bool: ...
    def resolve(self, rev: str) -> str: ...
    def revert(self, sha: str, message: str) -> str: ...
    def find_revert_of(self, sha: str, ref: str = "HEAD") -> Commit | None: ...
    def push(self, remote: str = "origin", branch: str | None = None) -> None: ...
    def current_branch(self) -> str: ...
    def head(self) -> str: ...


class CliGitRepo:
    """`GitRepo` over `subprocess.run([git, …])` in `workdir`, with a fixed committer identity.

    `redact` (the target's redactor) is applied to every text read out of the repository — commit
    subjects, authors, messages, diffs — and to error messages: a secret someone committed must
    not travel on into a plan, an artifact, a log or the revert's own message.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        git: str = "git",
        timeout: float = 120.0,
        author_name: str = "remediation-pipelines",
        author_email: str = "remediation-pipelines@localhost",
        env: Mapping[str, str] | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self._git = git
        self._timeout = timeout
        self._env = _git_env(author_name, author_email, env)
        self._redact: Callable[[str], str] = redact or _same

    @classmethod
    def clone(
        cls, remote: str, dest: Path, branch: str | None = None, *, git: str = "git", timeout: float = 300.0,
        author_name: str = "remediation-pipelines", author_email: str = "remediation-pipelines@localhost",
        env: Mapping[str, str] | None = None, redact: Callable[[str], str] | None = None,
    ) -> Self:
        # `ext::` runs a command and a leading `-` is an option; neither is a repository.
        if not isinstance(remote, str) or not remote or remote.startswith("-") or remote.lower().startswith("ext::"):
            shown = (redact or _same)(_redact(str(remote)))
            raise BadInputError(f"git remote {shown!r} is not a repository URL or path")
        args = ["clone", "--no-recurse-submodules"]
        if branch is not None:
            args += ["--branch", _check_name(branch, "branch")]
        dest = Path(dest).absolute()
        repo = cls(dest, git=git, timeout=timeout, author_name=author_name, author_email=author_email, env=env,
                   redact=redact)
        # Run from the parent: dest does not exist yet.
        repo._run([*args, "--", remote, str(dest)], cwd=dest.parent)
        return repo

    def fetch(self, remote: str = "origin") -> None:
        self._run(["fetch", "--prune", "--no-recurse-submodules", _check_name(remote, "remote")])

    def log_oneline(self, n: int = 20, ref: str = "HEAD") -> list[Commit]:
        if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= 10_000:
            raise BadInputError("n must be an integer between 1 and 10000")
        out = self._run(["log", f"-n{n}", f"--format={_FORMAT}", self.resolve(ref), "--"])
        return _parse_log(out, self._redact)

    def commit(self, rev: str) -> Commit:
        return self.log_oneline(1, rev)[0]

    def show_stat(self, sha: str) -> str:
        return self._redact(self._run(["show", "--stat", "--format=fuller", "--no-color", self.resolve(sha), "--"]))

    def show_patch(self, sha: str, max_chars: int = 100_000) -> str:
        """The commit's diff for an approver to read; long diffs are cut with a note saying so."""
        text = self._redact(
            self._run(["show", "--stat", "--patch", "--format=fuller", "--no-color", self.resolve(sha), "--"]))
        if len(text) > max_chars:
            return text[:max_chars] + f"\n… diff truncated at {max_chars} of {len(text)} characters\n"
        return text

    def changed_files(self, sha: str) -> list[str]:
        out = self._run(["show", "--name-only", "--format=", "--no-color", self.resolve(sha), "--"])
        return [line for line in out.splitlines() if line]

    def patch_id(self, sha: str) -> str:
        """The commit's diff identity: the same change re-applied on another parent keeps it, so a
        revert redone after the remote moved can be checked against the one that was approved."""
        diff = self._run(["show", "--format=", "--no-color", "--no-ext-diff", self.resolve(sha), "--"])
        return self._patch_id(diff, sha)

    def inverse_patch_id(self, sha: str) -> str:
        """The diff identity of undoing `sha`: what a true revert of it has, whatever its message says."""
        full = self.resolve(sha)
        parents = self.parents(full)
        if len(parents) != 1:
            raise BadInputError(f"git: {full[:12]} has {len(parents)} parents; only a plain commit has one inverse")
        return self._patch_id(self._run(["diff", "--no-color", "--no-ext-diff", full, parents[0], "--"]), sha)

    def _patch_id(self, diff: str, sha: str) -> str:
        out = self._run(["patch-id", "--stable"], stdin=diff).split()
        if not out:
            raise ConflictError(f"git: {sha[:12]} has an empty diff")
        return out[0]

    def message(self, sha: str) -> str:
        return self._redact(self._run(["show", "-s", "--format=%B", self.resolve(sha), "--"]))

    def parents(self, sha: str) -> list[str]:
        return self._run(["show", "-s", "--format=%P", self.resolve(sha), "--"]).split()

    def commit_time(self, sha: str) -> datetime:
        return datetime.fromisoformat(self._run(["show", "-s", "--format=%cI", self.resolve(sha), "--"]).strip())

    def is_ancestor(self, sha: str, ref: str) -> bool:
        proc = self._proc(["merge-base", "--is-ancestor", self.resolve(sha), self.resolve(ref)])
        if proc.returncode in (0, 1):
            return proc.returncode == 0
        raise self._error(["merge-base"], proc)

    def resolve(self, rev: str) -> str:
        """The full sha of a commit; BadInputError for a malformed rev, NotFoundError for an unknown one."""
        check_rev(rev)
        proc = self._proc(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"])
        sha = proc.stdout.strip()
        if proc.returncode != 0 or not _SHA.fullmatch(sha):
            raise NotFoundError(f"git: no commit {rev!r} in {self.workdir}")
        return sha

    def revert(self, sha: str, message: str) -> str:
        """Commit a revert of `sha` on the current branch and return the new commit's sha."""
        full = self.resolve(sha)
        if self._run(["status", "--porcelain", "--untracked-files=no"]).strip():
            raise ConflictError(f"git: {self.workdir} has uncommitted changes; refusing to revert on top of them")
        parents = self.parents(full)
        if len(parents) != 1:
            raise BadInputError(f"git: {full[:12]} has {len(parents)} parents; only a plain commit is reverted")
        proc = self._proc(["revert", "--no-commit", "--no-edit", full])
        if proc.returncode != 0:
            self._proc(["revert", "--abort"])
            raise ConflictError(
                f"git: reverting {full[:12]} conflicts with later changes: {self._tail(proc.stderr or proc.stdout)}"
            )
        if self._proc(["diff", "--cached", "--quiet"]).returncode == 0:
            self._proc(["revert", "--abort"])
            raise ConflictError(f"git: reverting {full[:12]} changes nothing (already reverted by hand?)")
        subject = message.strip() or f'Revert "{self.commit(full).subject}"'
        # The trailer is what find_revert_of looks for, so it is always there, whatever the message.
        body = f"{subject}\n\nThis reverts commit {full}.\n"
        self._run(["commit", "--file=-"], stdin=body)
        return self.head()

    def find_revert_of(self, sha: str, ref: str = "HEAD") -> Commit | None:
        """The commit on `ref` that reverts `sha`, unless that revert was itself reverted.

        A message saying "This reverts commit <sha>" only nominates a candidate: it counts when its
        diff is exactly the inverse of `sha`'s (same patch-id). Anyone can write the message.
        """
        full = self.resolve(sha)
        target = self.resolve(ref)
        out = self._run([
            "log", f"--format={_FORMAT}", "--fixed-strings", f"--grep=This reverts commit {full}", target, "--",
        ])
        candidates = _parse_log(out, self._redact)  # newest first
        if not candidates:
            return None
        inverse = self.inverse_patch_id(full)
        for revert in candidates:
            if len(self.parents(revert.sha)) == 1 and self._same_patch(revert.sha, inverse) \
                    and self.find_revert_of(revert.sha, target) is None:
                return revert
        return None

    def _same_patch(self, sha: str, patch_id: str) -> bool:
        try:
            return self.patch_id(sha) == patch_id
        except ConflictError:  # an empty commit reverts nothing
            return False

    def push(self, remote: str = "origin", branch: str | None = None) -> None:
        """Fast-forward `remote`'s branch to HEAD. A moved remote raises PushRejectedError; never forced."""
        branch = _check_name(branch or self.current_branch(), "branch")
        proc = self._proc(["push", "--porcelain", _check_name(remote, "remote"), f"HEAD:refs/heads/{branch}"])
        if proc.returncode == 0:
            return
        text = f"{proc.stdout}\n{proc.stderr}"
        if "[rejected]" in text and ("non-fast-forward" in text or "fetch first" in text):
            raise PushRejectedError(
                f"git: push to {remote}/{branch} rejected: the remote has commits this checkout lacks; "
                "fetch, rebase and push again"
            )
        if "[remote rejected]" in text:
            raise ConflictError(f"git: push to {remote}/{branch} refused by the remote: {self._tail(text)}")
        raise self._error(["push"], proc)

    def current_branch(self) -> str:
        proc = self._proc(["symbolic-ref", "--quiet", "--short", "HEAD"])
        if proc.returncode != 0:
            raise ConflictError(f"git: {self.workdir} is on a detached HEAD, not a branch")
        return proc.stdout.strip()

    def head(self) -> str:
        return self.resolve("HEAD")

    def _run(self, args: list[str], *, stdin: str | None = None, cwd: Path | None = None) -> str:
        proc = self._proc(args, stdin=stdin, cwd=cwd)
        if proc.returncode != 0:
            raise self._error(args, proc)
        return proc.stdout

    def _proc(
        self, args: list[str], *, stdin: str | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self._git, *args], cwd=cwd or self.workdir, env=self._env, input=stdin, capture_output=True,
                text=True, timeout=self._timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise RetryableError(f"git {args[0]} in {self.workdir} timed out after {self._timeout:g}s") from None
        except FileNotFoundError:
            raise PermanentError(f"git: {self._git!r} not found, or {self.workdir} does not exist") from None

    def _error(self, args: list[str], proc: subprocess.CompletedProcess[str]) -> ClientError:
        text = proc.stderr or proc.stdout
        message = f"git {args[0]} in {self.workdir} failed (exit {proc.returncode}): {self._tail(text)}"
        if _AUTH.search(text):
            return AuthError(message)
        if _NETWORK.search(text):
            return RetryableError(message)
        if _NOT_FOUND.search(text):
            return NotFoundError(message)
        return PermanentError(message)

    def _tail(self, text: str) -> str:
        return _tail(self._redact(text))

    def __repr__(self) -> str:
        return f"CliGitRepo({self.workdir})"


# Variables that would point git at another repository, index or config than `workdir`'s.
_REDIRECTING = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
    "GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM",
})


def _git_env(author_name: str, author_email: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if k not in _REDIRECTING and not k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
    }
    # e.g. GIT_SSH_COMMAND naming the deploy key for an SSH remote.
    env.update(extra or {})
    env.update({
        # Never wait for a password prompt at 03:00; fail and say so.
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
        "GIT_AUTHOR_NAME": author_name,
        "GIT_AUTHOR_EMAIL": author_email,
        "GIT_COMMITTER_NAME": author_name,
        "GIT_COMMITTER_EMAIL": author_email,
    })
    return env


def _same(text: str) -> str:
    return text


def _parse_log(out: str, redact: Callable[[str], str] = _same) -> list[Commit]:
    commits = []
    for record in out.split(_END):
        record = record.strip("\n")
        if not record:
            continue
        sha, subject, author, email, committed = record.split(_SEP, 4)
        commits.append(Commit(
            sha=sha, subject=redact(subject), author=redact(author), author_email=redact(email),
            committed_at=datetime.fromisoformat(committed.strip()),
        ))
    return commits


def _redact(text: str) -> str:
    return _USERINFO.sub(r"\1***@", text)


def _tail(text: str, limit: int = 600) -> str:
    text = _redact(text.strip())
    return text if len(text) <= limit else "…" + _from_a_line(text[-limit:])


def _from_a_line(cut: str) -> str:
    """A tail starting at a line: a cut through a secret would leave a piece no redaction can recognise."""
    rest = cut.partition("\n")[2]
    return rest or cut
