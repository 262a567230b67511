"""rollback against the sandbox: a bad deploy reverted, pushed, rebuilt over real SSH, healthy and verified.

Also: no second revert on a re-run, a rejected push retried (never forced), a connection dropped
mid-rebuild retried without pulling twice, a wrong host key refused, bad input refused up front.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from flows.rollback import rollback
from remediation.clients.git_repo import CliGitRepo
from remediation.errors import BadInputError, ConflictError, HostKeyError
from remediation.target.inventory import Target, load_target
from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from tasks.gateway import wait_for_health
from tasks.git import plan_revert, push_revert
from tasks.host import get_deployed_revision, rebuild_on_host, release_failure_evidence
from tests.integration.flow_runs import LEAD, ONCALL, answer, finish, incident, result, start

pytestmark = pytest.mark.integration
ROLLBACK = "rollback/rollback"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _remote_head(st: Stack) -> str:
    return _git(st.host.remote, "rev-parse", "main")


def _health(stack: StackInfo) -> httpx.Response:
    return httpx.get(f"{stack.gateway_url}/health", timeout=5)


def _with_host(inv: Target, **changes: Any) -> Target:
    host = inv.deploy_host.model_copy(update=changes)
    return inv.model_copy(update={"hosts": {**inv.hosts, inv.git.deploy_host: host}})


def test_bad_deploy_is_reverted_rebuilt_and_verified_and_a_rerun_changes_nothing(
    stack: StackInfo, deployments: list[str], reset_platform: StackInfo, release: Stack,
) -> None:
    bad = release.bad_deploy()
    assert _health(stack).status_code == 500
    inv = load_target("sandbox")
    # What the flow reports when health never returns: the last body and the service's log tail.
    unhealthy = wait_for_health(inv, deadline_s=1.5, first_delay_s=0.2)
    assert not unhealthy["ok"] and unhealthy["http_status"] == 500 and unhealthy["attempts"] >= 2
    assert "wallet_timeout_s" in unhealthy["body"]["error"]
    why = release_failure_evidence(inv)
    assert why["host_head"] == bad and why["log_tail"]

    inc = incident()
    run_id = start(ROLLBACK, incident_id=inc, initiated_by=ONCALL, dry_run=False, health_deadline_s=60)
    decision = answer(run_id, decision="approve", approver=LEAD, reason="bad deploy under 24 h old")
    run = finish(run_id, timeout_s=240)
    out = result(run)
    assert run.state is not None and run.state.is_completed(), run.state and run.state.message
    assert out["plan"]["bad"]["sha"] == bad and out["plan"]["from_last_deploy"]
    assert out["plan"]["files"] == ["VERSION", "gateway_hooks.py"]
    assert out["approval"]["approver"] == LEAD and out["approval"]["plan_hash"] == decision["plan_hash"]
    revert = out["revert"]["sha"]
    assert _remote_head(release) == revert == release.host.head()
    message = _git(release.host.remote, "show", "-s", "--format=%B", revert)
    assert inc in message and f"Approved-by: {LEAD}" in message and f"This reverts commit {bad}." in message
    assert out["rebuild"]["host_head"] == revert and out["rebuild"]["commands"][0]["exit_code"] == 0
    assert out["health"]["ok"] and _health(stack).json()["release"] == revert
    assert out["verify"]["ok"], out["verify"]

    # Run again: already reverted and deployed, so nothing is reverted, pushed or rebuilt.
    state = rollback(incident_id=inc, initiated_by=ONCALL, dry_run=False, verify=False, return_state=True)
    again = cast(dict[str, Any], state.result())
    assert again["outcome"] == "already-reverted" and again["plan"]["state"] == "reverted-and-deployed"
    assert "revert" not in again and "rebuild" not in again and again["health"]["ok"]
    assert _remote_head(release) == revert == release.host.head()
    assert _git(release.host.remote, "log", "--format=%s", f"{bad}..main").splitlines() == [
        'Revert "gateway: read upstream settings from the release config"'
    ]


@pytest.fixture
def scratch_remote(release: Stack, tmp_path: Path) -> tuple[Target, Path, str]:
    """A copy of the sandbox remote with a bad commit on top, and the target pointed at it."""
    remote = tmp_path / "servers_v2.git"
    _git(tmp_path, "clone", "-q", "--bare", str(release.host.remote), str(remote))
    work = tmp_path / "dev"
    _git(tmp_path, "clone", "-q", str(remote), str(work))
    (work / "VERSION").write_text("9.9.9\n")
    _git(work, "-c", "user.name=Dev", "-c", "user.email=dev@example.test", "commit", "-qam", "bump version")
    _git(work, "push", "-q", "origin", "main")
    inv = load_target("sandbox")
    target = inv.model_copy(update={"git": inv.git.model_copy(update={"remote": str(remote)})})
    return target, remote, _git(work, "rev-parse", "HEAD")


def _someone_pushes(remote: Path, tmp_path: Path, name: str) -> None:
    work = tmp_path / name
    _git(tmp_path, "clone", "-q", str(remote), str(work))
    (work / f"{name}.txt").write_text("hotfix\n")
    _git(work, "add", ".")
    _git(work, "-c", "user.name=Other", "-c", "user.email=o@example.test", "commit", "-qm", f"hotfix {name}")
    _git(work, "push", "-q", "origin", "main")


def test_a_rejected_push_is_redone_on_the_new_head_never_forced(
    scratch_remote: tuple[Target, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    target, remote, bad = scratch_remote
    plan = plan_revert(target, bad, bad)
    assert plan.state == "to-revert" and plan.files == ["VERSION"] and plan.revert_patch_id
    real_push, calls = CliGitRepo.push, []

    def racing_push(self: CliGitRepo, remote_name: str = "origin", branch: str | None = None) -> None:
        calls.append(branch)
        if len(calls) == 1:  # someone pushes between our clone and our push
            _someone_pushes(remote, tmp_path, "racer")
        real_push(self, remote_name, branch)

    monkeypatch.setattr(CliGitRepo, "push", racing_push)
    pushed = push_revert(target, plan, 'Revert "bump version"\n\nIncident: INC-T1')
    assert len(calls) == 2
    subjects = _git(remote, "log", "--format=%s", "-3", "main").splitlines()
    assert subjects == ['Revert "bump version"', "hotfix racer", "bump version"]  # nothing overwritten
    assert _git(remote, "rev-parse", "main") == pushed.sha
    # A retry of the task finds the revert on the remote and does not make a second one.
    assert push_revert(target, plan, "again").sha == pushed.sha
    assert len(calls) == 2


def test_a_revert_that_is_not_the_approved_change_is_not_pushed(scratch_remote: tuple[Target, Path, str]) -> None:
    target, remote, bad = scratch_remote
    plan = plan_revert(target, bad, bad).model_copy(update={"revert_patch_id": "0" * 40})
    before = _git(remote, "rev-parse", "main")
    with pytest.raises(ConflictError, match="not the change that was approved"):
        push_revert(target, plan, "revert")
    assert _git(remote, "rev-parse", "main") == before


def test_bad_commit_input_is_refused_before_anything_is_touched(
    scratch_remote: tuple[Target, Path, str], tmp_path: Path,
) -> None:
    target, remote, bad = scratch_remote
    with pytest.raises(BadInputError, match="does not exist on the remote"):
        plan_revert(target, "deadbeef12", bad)
    with pytest.raises(BadInputError, match="not a valid git revision"):
        plan_revert(target, "--upload-pack=touch /tmp/x", bad)
    work = tmp_path / "side"
    _git(tmp_path, "clone", "-q", str(remote), str(work))
    _git(work, "checkout", "-qb", "feature")
    (work / "feature.txt").write_text("x\n")
    _git(work, "add", ".")
    _git(work, "-c", "user.name=Dev", "-c", "user.email=d@example.test", "commit", "-qm", "feature work")
    _git(work, "push", "-q", "origin", "feature")
    with pytest.raises(BadInputError, match="not on main"):
        plan_revert(target, _git(work, "rev-parse", "HEAD"), bad)


@pytest.mark.parametrize("params", [
    {"bad_commit": "HEAD; reboot"},
    {"bad_commit": "$(touch /tmp/pwned)"},
    {"incident_id": "INC-1; rm -rf /"},
    {"target": "../../etc/passwd"},
])
def test_injection_in_any_parameter_fails_validation_before_the_run_body(
    stack: StackInfo, release: Stack, params: dict[str, str],
) -> None:
    before = (_remote_head(release), release.host.head())
    state = rollback(**{"incident_id": incident(), "initiated_by": ONCALL, "dry_run": False, **params},
                     return_state=True)
    assert state.is_failed() and "alidation" in str(state.message)
    assert (_remote_head(release), release.host.head()) == before


def test_a_commit_older_than_the_policy_gets_a_forward_fix_recommendation(stack: StackInfo, release: Stack) -> None:
    old = _git(release.host.remote, "rev-parse", "main")  # the seeded history is two days old
    state = rollback(incident_id=incident(), initiated_by=ONCALL, bad_commit=old, return_state=True)
    assert state.is_completed() and "forward fix recommended" in str(state.message)
    out = cast(dict[str, Any], state.result())
    assert out["plan"]["bad_age_hours"] > 24 and out["outcome"] == "dry-run"


def test_a_dropped_connection_during_the_rebuild_is_retried_without_pulling_twice(
    stack: StackInfo, release: Stack, tmp_path: Path,
) -> None:
    sha = release.host.push_commit({"NOTES.md": "harmless\n"}, "docs: release notes")
    attempts = tmp_path / "attempts"
    # First attempt: kill our own sshd session (the nearest sshd ancestor), as a network drop would.
    drop_once = (
        f'echo attempt >> {attempts}; if [ "$(wc -l < {attempts})" -eq 1 ]; then echo rebuilding; sleep 0.3; '
        'p=$PPID; while ! grep -q "^sshd" /proc/$p/comm; do p=$(cut -d" " -f4 /proc/$p/stat); done; '
        'kill -9 $p; sleep 5; fi; echo rebuilt'
    )
    target = _with_host(load_target("sandbox"), rebuild=[["sh", "-c", drop_once]])
    out = rebuild_on_host(target, sha)
    assert attempts.read_text().count("attempt") == 2
    assert out["host_head"] == sha == release.host.head()
    assert out["commands"][0]["tail"] == ["rebuilt"]


def test_a_wrong_host_key_is_refused_before_any_command(stack: StackInfo, release: Stack, tmp_path: Path) -> None:
    key = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kind, blob = Path(f"{key}.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[{stack.host}]:{stack.ssh_port} {kind} {blob}\n")
    target = _with_host(load_target("sandbox"), known_hosts=known)
    head = release.host.head()
    with pytest.raises(HostKeyError, match="does not match"):
        get_deployed_revision(target)
    with pytest.raises(HostKeyError, match="does not match"):
        rebuild_on_host(target, head)
    assert release.host.head() == head


def test_a_fake_revert_trailer_is_reverted_like_any_other_bad_commit(
    scratch_remote: tuple[Target, Path, str], tmp_path: Path,
) -> None:
    """Anyone can write "This reverts commit <sha>" in a message: only a diff that undoes it counts."""
    target, remote, bad = scratch_remote
    work = tmp_path / "fake"
    _git(tmp_path, "clone", "-q", str(remote), str(work))
    (work / "gateway_hooks.py").write_text("raise RuntimeError('broken')\n")
    _git(work, "add", ".")
    _git(work, "-c", "user.name=Dev", "-c", "user.email=d@example.test", "commit", "-qm",
         f'Revert "bump version"\n\nThis reverts commit {bad}.')
    _git(work, "push", "-q", "origin", "main")
    fake = _git(work, "rev-parse", "HEAD")

    # The deployed commit claims to revert `bad`: it is the bad commit itself, to be reverted.
    plan = plan_revert(target, None, fake)
    assert plan.bad.sha == fake and plan.state == "to-revert" and plan.existing_revert is None
    # Asked for `bad` directly: its "revert" is not one, so `bad` is still to revert.
    plan = plan_revert(target, bad, fake)
    assert plan.bad.sha == bad and plan.state == "to-revert" and plan.existing_revert is None
