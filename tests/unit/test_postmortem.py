"""The postmortem draft: deadlines in business days, a timeline from recorded states and approvals."""

from __future__ import annotations

from datetime import date
from typing import Any

from remediation.domain.postmortem import business_days_after, due_date, render_postmortem, timeline
from remediation.domain.text import md_inline


def _run(flow: str, start: str, end: str, final: str = "COMPLETED", message: str = "", **result: Any) -> dict[str, Any]:
    return {"kind": "flow-run", "data": {
        "flow": flow, "parameters": {"initiated_by": result.pop("who", "alice"), "severity": "SEV1"},
        "states": [{"at": start, "type": "RUNNING", "name": "Running", "message": None},
                   {"at": end, "type": final, "name": final.title(), "message": message}],
        "final": {"type": final, "name": final.title(), "message": message}, "result": result or None}}


RECORDS = [
    _run("capture-evidence", "2026-11-20T09:00:05+00:00", "2026-11-20T09:00:09+00:00", who="alert:ab12",
         message="bundle uploaded", s3="s3://b/p/"),
    _run("rollback", "2026-11-20T09:05:00+00:00", "2026-11-20T09:06:00+00:00", message="health is back",
         plan={"bad": {"sha": "a" * 40, "subject": "gateway: config", "author": "Dev"}, "bad_age_hours": 2.5,
               "host": "root@h:22"}, revert={"sha": "b" * 40}),
    {"kind": "approval", "data": {"data": "| field | value |\n|---|---|\n| step | rollback |\n| decision | approve |\n"
                                          "| approver | bob |\n| reason | bad deploy |\n"
                                          "| decided_at | 2026-11-20T09:05:30+00:00 |\n"}},
]


def test_deadlines_count_business_days_from_the_incident_day() -> None:
    assert business_days_after(date(2026, 11, 20), 5) == date(2026, 11, 27)  # a Friday: skips the weekend
    assert due_date("SEV1", date(2026, 11, 20)) == date(2026, 11, 27)
    assert due_date("SEV2", date(2026, 11, 20)) == date(2026, 12, 4)
    assert due_date("SEV3", date(2026, 11, 20)) is None


def test_the_timeline_is_in_time_order_from_states_and_approvals() -> None:
    events = timeline(RECORDS)
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    texts = [e[1] for e in events]
    assert texts[0] == "alert fired (alert:ab12); evidence capture auto-started"
    assert "approval approve: rollback by bob (bad deploy)" in texts
    assert any(t.startswith(f"rollback: reverted `{'a' * 12}` with `{'b' * 12}`") for t in texts)


def test_the_template_is_filled_from_the_records() -> None:
    text = render_postmortem("INC-9", "SEV1", "health 500 after deploy", RECORDS, ["alice"], outcome="all-clear")
    assert text.startswith("# Postmortem: SEV1 health 500 after deploy\n\n## Date\n2026-11-20\n")
    assert "- 2026-11-20 09:00:05 — alert fired" in text
    assert 'Commit `aaaaaaaaaaaa` "gateway: config" by Dev (2.5 h old when found)' in text
    assert "Alert `alert:ab12` started evidence capture" in text
    assert "## Resolution\nall-clear" in text and "due 2026-11-27" in text
    for heading in ("## Impact", "## Root Cause", "## Detection", "## Action Items (must have owners + due dates)"):
        assert heading in text


def test_escalations_join_the_timeline_and_the_target_sets_the_deadline() -> None:
    from remediation.domain.escalation import PostmortemDue, due_rule

    text = render_postmortem("INC-9", "SEV1", "deposits failing", RECORDS, authors=["alice"],
                             escalated=["2026-11-20T09:31:00+00:00 escalated to engineering-manager (Erin) after 30 "
                                        "min open"],
                             due_rule=due_rule("SEV1", PostmortemDue(hours=48)))
    lines = text.splitlines()
    # Literal text (a contact's name is the inventory's), so its parentheses are escaped markdown.
    at = lines.index(r"- 2026-11-20 09:31:00 — escalated to engineering-manager \(Erin\) after 30 min open")
    assert "rollback: reverted" in lines[at - 1], "in time order, after the rollback"
    assert ("Postmortem due: 2026-11-22 09:00 UTC (48 hours after 2026-11-20 09:00 UTC, the target's rule for "
            "SEV1).") in text


def test_text_from_outside_cannot_format_or_link_in_the_postmortem() -> None:
    hostile = "**ok** [docs](javascript:alert(1)) <img src=x>"
    records = [
        _run("contain", "2026-11-20T09:01:00+00:00", "2026-11-20T09:02:00+00:00", message=hostile),
        {"kind": "approval", "data": {"data": "| field | value |\n|---|---|\n| step | contain |\n"
                                              "| decision | approve |\n| approver | bob |\n"
                                              f"| reason | {hostile} |\n| decided_at | 2026-11-20T09:01:30+00:00 |\n"}},
    ]
    text = render_postmortem("INC-9", "SEV1", hostile, records, ["alice"], outcome=f"loop ended: {hostile}",
                             escalated=[f"2026-11-20T09:31:00+00:00 escalated to cto ({hostile})"])
    assert text.startswith(f"# Postmortem: SEV1 {md_inline(hostile)}\n")
    assert f"## Resolution\nloop ended: {md_inline(hostile)}\n" in text
    timeline_lines = [ln for ln in text.splitlines() if ln.startswith("- 2026-11-20")]
    assert len(timeline_lines) == 3
    for line in timeline_lines:
        assert hostile not in line and md_inline(hostile) in line, line
