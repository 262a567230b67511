"""CliGitRepo against real git: temp bare remote, clones, revert and push, rejected pushes, injection."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from remediation.clients import CliGitRepo, GitRepo
from remediation.errors import (
    BadInputError,
    ConflictError,
    NotFoundError,
    PermanentError,
    PushRejectedError,
)

ENV = {**os.environ, "GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.test",
       "GIT_COMMITTER_NAME": "Dev", "GIT_COMMITTER_EMAIL": "dev@example.test", "GIT_TERMINAL_PROMPT": "0"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout


def commit_file(repo: Path, name: str, text: str, message: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare `origin` with three commits on main; the last is the 'bad deploy'."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(bare), str(seed))
    git(seed, "checkout", "-q", "-b", "main")
    commit_file(seed, "app.py", "VERSION = 1\n", "first")
    commit_file(seed, "README", "hello\n", "docs")
    commit_file(seed, "app.py", "VERSION = 2  # broken\n", "bad deploy")
    git(seed, "push", "-q", "origin", "main")
    return bare


@pytest.fixture
def repo(remote: Path, tmp_path: Path) -> CliGitRepo:
    return CliGitRepo.clone(str(remote), tmp_path / "work", "main")


def test_clone_gives_a_git_repo_on_the_branch(repo: CliGitRepo) -> None:
    assert isinstance(repo, GitRepo)
    assert repo.current_branch() == "main"
    assert len(repo.head()) == 40


def test_log_oneline_is_newest_first_with_times(repo: CliGitRepo) -> None:
    log = repo.log_oneline(5)
    assert [c.subject for c in log] == ["bad deploy", "docs", "first"]
    assert log[0].author == "Dev" and log[0].author_email == "dev@example.test"
    assert abs(datetime.now(UTC) - log[0].committed_at) < timedelta(minutes=5)
    assert repo.commit_time(log[0].sha) == log[0].committed_at
    assert "app.py" in repo.show_stat(log[0].sha)
    assert "VERSION = 2" in repo.show_patch(log[0].sha)


def test_resolve_and_ancestry(repo: CliGitRepo) -> None:
    first, *_ = reversed(repo.log_oneline(3))
    assert repo.resolve(first.sha[:10]) == first.sha
    assert repo.resolve("HEAD~2") == first.sha
    assert repo.is_ancestor(first.sha, "HEAD")
    assert not repo.is_ancestor("HEAD", first.sha)
    with pytest.raises(NotFoundError):
        repo.resolve("deadbeef" * 5)
    with pytest.raises(NotFoundError):
        repo.resolve("no-such-branch")


def test_revert_push_and_find_revert_of(repo: CliGitRepo, remote: Path) -> None:
    bad = repo.head()
    assert repo.find_revert_of(bad) is None
    new = repo.revert(bad, "Revert bad deploy (INC-42)")
    assert new != bad and repo.head() == new
    assert (repo.workdir / "app.py").read_text() == "VERSION = 1\n"
    top = repo.log_oneline(1)[0]
    assert top.subject == "Revert bad deploy (INC-42)"
    # The fixed identity, not whoever runs the worker.
    assert top.author == "remediation-pipelines"
    assert f"This reverts commit {bad}." in git(repo.workdir, "show", "-s", "--format=%B", new)
    repo.push("origin", "main")
    assert git(remote, "rev-parse", "main").strip() == new
    found = repo.find_revert_of(bad)
    assert found is not None and found.sha == new


def test_reverting_twice_is_refused(repo: CliGitRepo) -> None:
    bad = repo.head()
    repo.revert(bad, "")
    assert repo.log_oneline(1)[0].subject == 'Revert "bad deploy"'
    with pytest.raises(ConflictError):
        repo.revert(bad, "again")
    assert not git(repo.workdir, "status", "--porcelain").strip()


def test_a_reverted_revert_means_the_commit_is_live_again(repo: CliGitRepo) -> None:
    bad = repo.head()
    revert = repo.revert(bad, "revert it")
    repo.revert(revert, "reapply it")
    assert repo.find_revert_of(bad) is None


def test_push_rejected_when_someone_pushed_meanwhile(repo: CliGitRepo, remote: Path, tmp_path: Path) -> None:
    other = CliGitRepo.clone(str(remote), tmp_path / "other", "main")
    commit_file(other.workdir, "hotfix.txt", "x\n", "someone else's hotfix")
    other.push()
    repo.revert(repo.head(), "revert")
    before = git(remote, "rev-parse", "main").strip()
    with pytest.raises(PushRejectedError) as info:
        repo.push("origin", "main")
    assert isinstance(info.value, ConflictError)
    assert git(remote, "rev-parse", "main").strip() == before  # nothing forced
    # The caller's recovery: fetch, rebase, push.
    repo.fetch()
    git(repo.workdir, "rebase", "-q", "origin/main")
    repo.push()
    assert git(remote, "rev-parse", "main").strip() == repo.head()


@pytest.mark.parametrize(
    "rev",
    ["--upload-pack=touch /tmp/pwned", "HEAD; rm -rf /", "-n", "$(id)", "`id`", "HEAD|id", "a b",
     "main..HEAD", "HEAD\nid", "", "@{-1}", "HEAD:app.py"],
)
def test_injection_strings_are_refused_before_any_subprocess(
    repo: CliGitRepo, rev: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append(args))
    for call in (repo.resolve, repo.show_stat, repo.commit_time, repo.find_revert_of,
                 lambda r: repo.revert(r, "x"), lambda r: repo.is_ancestor(r, "HEAD")):
        with pytest.raises(BadInputError):
            call(rev)
    assert calls == []


@pytest.mark.parametrize("name", ["--force", "-f", "main;id", "main..x", "a b", "+main"])
def test_push_and_fetch_refuse_option_like_names(repo: CliGitRepo, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append(args))
    with pytest.raises(BadInputError):
        repo.push(name, "main")
    with pytest.raises(BadInputError):
        repo.push("origin", name)
    with pytest.raises(BadInputError):
        repo.fetch(name)
    assert calls == []


@pytest.mark.parametrize("remote_url", ["--upload-pack=id", "ext::sh -c id", ""])
def test_clone_refuses_option_or_command_remotes(tmp_path: Path, remote_url: str) -> None:
    with pytest.raises(BadInputError):
        CliGitRepo.clone(remote_url, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_revert_refuses_a_dirty_checkout(repo: CliGitRepo) -> None:
    (repo.workdir / "app.py").write_text("local edit\n")
    with pytest.raises(ConflictError, match="uncommitted"):
        repo.revert(repo.head(), "x")


def test_revert_conflict_is_aborted_cleanly(repo: CliGitRepo) -> None:
    first_bad = repo.resolve("HEAD")
    commit_file(repo.workdir, "app.py", "VERSION = 3\n", "later change to the same line")
    with pytest.raises(ConflictError, match="conflicts"):
        repo.revert(first_bad, "x")
    assert not git(repo.workdir, "status", "--porcelain").strip()
    assert not (repo.workdir / ".git" / "REVERT_HEAD").exists()


def test_detached_head_has_no_current_branch(repo: CliGitRepo) -> None:
    git(repo.workdir, "checkout", "-q", "--detach", "HEAD~1")
    with pytest.raises(ConflictError, match="detached"):
        repo.current_branch()


def test_clone_of_a_missing_remote_is_permanent_and_hides_credentials(tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as info:
        CliGitRepo.clone(str(tmp_path / "nope.git"), tmp_path / "x")
    assert "clone" in str(info.value)
    # userinfo in an URL never reaches an error message
    with pytest.raises(PermanentError) as info2:
        CliGitRepo.clone("file://user:hunter2@" + str(tmp_path / "nope.git"), tmp_path / "y")
    assert "hunter2" not in str(info2.value)


def test_patch_id_survives_a_revert_redone_on_a_moved_branch(repo: CliGitRepo, remote: Path, tmp_path: Path) -> None:
    bad = repo.head()
    assert repo.changed_files(bad) == ["app.py"]
    first = repo.revert(bad, "Revert bad deploy\n\nIncident: INC-42")
    assert "Incident: INC-42" in repo.message(first) and f"This reverts commit {bad}." in repo.message(first)
    # Someone pushes an unrelated commit; the revert redone on top of it is a new commit, same change.
    other = CliGitRepo.clone(str(remote), tmp_path / "other", "main")
    commit_file(other.workdir, "hotfix.txt", "x\n", "unrelated hotfix")
    other.push()
    again = CliGitRepo.clone(str(remote), tmp_path / "again", "main")
    second = again.revert(bad, "Revert bad deploy")
    assert second != first
    assert again.patch_id(second) == repo.patch_id(first)
    assert again.patch_id(second) != again.patch_id(again.resolve("HEAD~1"))
