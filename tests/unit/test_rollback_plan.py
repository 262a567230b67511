"""Rollback planning rules: the age policy, the exact host commands, what the plan hash covers."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from remediation.domain.commits import Commit
from remediation.domain.plan import plan_hash
from remediation.domain.rollback import (
    REVERT_PLACEHOLDER,
    CommitSha,
    RevertPlan,
    age_hours,
    revert_message,
    summary_markdown,
)
from remediation.target.inventory import load_target
from tasks.git import reverted_by
from tasks.host import shown_rebuild_commands

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def _plan(age_h: float, **changes: object) -> RevertPlan:
    bad = Commit(sha="a" * 40, subject="gateway: new config", author="Dev", committed_at=NOW - timedelta(hours=age_h))
    inv = load_target("sandbox")
    base = RevertPlan(
        target="sandbox", branch="main", bad=bad, bad_age_hours=age_hours(bad, NOW), max_age_hours=24,
        recent=[bad], deployed_sha=bad.sha, from_last_deploy=True, files=["VERSION", "gateway_hooks.py"],
        diff_stat=" VERSION | 2 +-", state="to-revert", revert_patch_id="p" * 40, existing_revert=None,
        host="root@127.0.0.1:12222", commands=shown_rebuild_commands(inv),
    )
    return base.model_copy(update=changes)


def test_the_24_hour_policy_recommends_a_forward_fix() -> None:
    assert not _plan(23.9).too_old
    old = _plan(30)
    assert old.too_old and old.approval_view()["too_old"]
    text = summary_markdown("INC-1", old)
    assert "forward fix recommended" in text and "30.0 h old" in text and "override" in text
    assert "forward fix" not in summary_markdown("INC-1", _plan(2))


def test_host_commands_are_exact_and_quoted() -> None:
    inv = load_target("sandbox")
    cmds = shown_rebuild_commands(inv)
    checkout = inv.deploy_host.checkout_dir
    assert cmds[0] == f"git -C {checkout} fetch --prune origin"
    assert cmds[1] == f"git -C {checkout} merge --ff-only {shlex.quote(REVERT_PLACEHOLDER)}"
    assert cmds[2].startswith(f"cd {checkout} && ")
    assert cmds[2].endswith(shlex.join(inv.deploy_host.rebuild[0]))


def test_the_plan_hash_covers_the_change_not_when_it_was_read() -> None:
    a, b = _plan(2), _plan(3, recent=[], deployed_sha="b" * 40)
    assert plan_hash(a.approval_view()) == plan_hash(b.approval_view())
    assert plan_hash(a.approval_view()) != plan_hash(_plan(2, revert_patch_id="q" * 40).approval_view())
    assert plan_hash(a.approval_view()) != plan_hash(_plan(2, files=["other"]).approval_view())


def test_the_revert_message_names_incident_approver_and_reason() -> None:
    msg = revert_message(_plan(1), "INC-7", "bob", "bad deploy", "run-1")
    assert msg.startswith('Revert "gateway: new config"\n\n')
    assert "Incident: INC-7" in msg and "Approved-by: bob" in msg and "Reason: bad deploy" in msg


@pytest.mark.parametrize("bad", ["HEAD", "main", "abc", "$(reboot)", "a" * 41, "ABCDEF1", "--all"])
def test_only_hex_shas_are_accepted_as_the_bad_commit(bad: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(CommitSha).validate_python(bad)
    assert TypeAdapter(CommitSha).validate_python("abc1234") == "abc1234"


def test_reverted_by_reads_the_trailer_git_writes() -> None:
    sha = "c" * 40
    assert reverted_by(f'Revert "x"\n\nIncident: INC-1\n\nThis reverts commit {sha}.\n') == sha
    assert reverted_by("fix: something\n") is None
    assert reverted_by("This reverts commit abc.\n") is None
