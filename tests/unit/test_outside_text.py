"""Text from outside is shown, never obeyed: no Slack mention or link, no markdown formatting or link, one line."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr

from remediation.clients.status_webhook import StatusWebhook
from remediation.domain.rollback import Commit, summary_markdown
from remediation.domain.text import for_slack, md_inline
from remediation.flowkit import approval
from tests.unit.test_rollback_plan import NOW, _plan

HOSTILE = "<!channel> fix <https://evil.example|docs> **now** [x](javascript:alert(1)) | `rm` & co\n# heading"


def test_slack_gets_entities_for_every_markup_character() -> None:
    escaped = for_slack(HOSTILE)
    assert "<" not in escaped and ">" not in escaped
    assert "&lt;!channel&gt;" in escaped and "&amp; co" in escaped
    assert for_slack("plain text: deposits 0 → 1") == "plain text: deposits 0 → 1"


def test_markdown_inline_is_one_escaped_line() -> None:
    shown = md_inline(HOSTILE)
    assert "\n" not in shown
    for raw in ("**now**", "[x](", "<!channel>", "| `rm`"):
        assert raw not in shown, raw
    assert r"\# heading" in shown  # never at a line's start, and escaped
    assert r"\*\*now\*\*" in shown and r"\[x\]\(javascript:alert\(1\)\)" in shown
    assert md_inline("x" * 500, limit=10) == "x" * 10 + "…"


def test_the_channel_receives_the_escaped_text() -> None:
    sent: list[bytes] = []

    def hook(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(hook))
    channel = StatusWebhook(SecretStr("https://hooks.example/T/B/secret"), client)
    assert channel.send(f"Root Cause: {HOSTILE}")
    assert b"<!channel>" not in sent[0] and b"&lt;!channel&gt;" in sent[0]


def test_a_hostile_commit_subject_cannot_format_the_rollback_summary() -> None:
    bad = Commit(sha="b" * 40, subject=HOSTILE, author="[Mallory](https://evil.example)",
                 committed_at=NOW - timedelta(hours=1))
    text = summary_markdown("INC-1", _plan(1, bad=bad, recent=[bad]))
    assert "[Mallory](" not in text and "<!channel>" not in text and "**now**" not in text
    assert "\n# heading" not in text
    assert r"\[Mallory\]\(https://evil.example\)" in text


def test_an_approvers_reason_cannot_format_or_break_the_approval_record(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(approval, "create_markdown_artifact", lambda **kw: shown.append(kw["markdown"]))
    monkeypatch.setattr(approval, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(approval, "attempt", lambda: 1)
    record = approval._Recorder("contain-deposit-halt", "sandbox", "d" * 64, "oncall-alice", NOW, None, 1)
    record("approve", "lead-bob", HOSTILE, [])
    rows = shown[0].splitlines()
    reason = next(r for r in rows if r.startswith("| reason |"))
    assert len(rows) == 2 + len(approval.Approval.model_fields), "one row per field: the reason added none"
    assert "**now**" not in reason and "<!channel>" not in reason and "[x](" not in reason
    assert reason.count("|") - reason.count(r"\|") == 3  # the reason's own pipe split no cell
