"""Escalation per target: the ladder taken on time and once, what the contact is told, postmortem deadlines."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from remediation.domain.escalation import EscalationStep, PostmortemDue, due_rule, due_steps, postmortem_due
from remediation.flowkit import incident_loop
from remediation.target.escalation import Escalation
from remediation.target.inventory import TARGETS_DIR, Target


def _sandbox(**escalation: Any) -> Target:
    raw = tomllib.loads((TARGETS_DIR / "sandbox.toml").read_text())
    raw.pop("notifications", None)  # no status channel: only the contacts are posted to
    raw["escalation"] = {**raw["escalation"], **escalation}
    return Target.model_validate(raw)


def test_the_sandbox_declares_seed_001s_matrix() -> None:
    ladder = _sandbox().escalation.ladder
    assert [(s.after_s, s.role) for s in ladder["SEV1"]] == [(1800, "engineering-manager"), (3600, "cto")]
    assert [(s.after_s, s.role) for s in ladder["SEV3"]] == [(1800, "team-lead"), (3600, "engineering-manager")]
    assert [s.role for s in ladder["SEV4"]] == ["team-lead"]


def test_a_ladder_role_needs_a_contact_and_a_deadline_one_unit() -> None:
    with pytest.raises(ValidationError, match=r"roles without a contact: \['vp'\]"):
        Escalation.model_validate({"ladder": {"SEV1": [{"after_s": 60, "role": "vp"}]}})
    with pytest.raises(ValidationError, match="either business_days or hours"):
        PostmortemDue(business_days=2, hours=48)
    assert Escalation().postmortem_due["SEV1"].business_days == 5  # seed 000 when the target says nothing


def test_steps_are_due_in_order_once() -> None:
    steps = [EscalationStep(after_s=1800, role="em"), EscalationStep(after_s=3600, role="cto")]
    assert due_steps(steps, 1799, set()) == []
    assert [i for i, _ in due_steps(steps, 1800, set())] == [0]
    assert [i for i, _ in due_steps(steps, 4000, {0})] == [1]
    assert due_steps(steps, 9999, {0, 1}) == []


def test_postmortem_deadlines_in_business_days_or_hours() -> None:
    friday = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    assert postmortem_due(friday, PostmortemDue(business_days=2)) == datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    assert postmortem_due(friday, PostmortemDue(hours=48)) == friday + timedelta(hours=48)  # seed 004
    when, how = due_rule("SEV3", None)(friday)
    assert when is None and how == "the target sets no deadline for SEV3"


def test_the_loop_escalates_on_time_records_it_and_never_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[str] = []

    class Contact:
        def __init__(self, ok: bool) -> None:
            self.ok = ok

        def send(self, text: str) -> bool:
            posted.append(text)
            return self.ok

    monkeypatch.setattr(incident_loop, "contact_channel", lambda c: Contact(ok=c.name != "Frank, CTO"))
    loop = incident_loop.Loop(_sandbox(), "INC-7", "SEV1", "deposits failing", "deposits down", 1800)
    assert loop.escalate_due(loop.started + timedelta(minutes=29)) == []
    assert [e["role"] for e in loop.escalate_due(loop.started + timedelta(minutes=31))] == ["engineering-manager"]
    assert loop.escalate_due(loop.started + timedelta(minutes=40)) == []
    assert [e["role"] for e in loop.escalate_due(loop.started + timedelta(minutes=61))] == ["cto"]
    assert "⏫ Incident Escalation - SEV1" in posted[0] and "To: Erin, engineering manager" in posted[0]
    assert "Open for: 31 min" in posted[0] and "Incident: INC-7" in posted[0]
    rows = [r for r in loop.table() if r["step"] == "escalate"]
    assert [r["outcome"] for r in rows] == ["engineering-manager (Erin, engineering manager)", "cto (Frank, CTO)"]
    assert rows[1]["message"].endswith("NOT delivered: the contact's webhook failed")
    lines = loop.escalated_lines()
    assert lines[0].endswith("escalated to engineering-manager (Erin, engineering manager) after 30 min open")
    assert lines[1].endswith("— NOT delivered")


def test_the_loop_takes_due_steps_by_itself_while_open_and_stops_when_it_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    posted: list[str] = []

    class Contact:
        def send(self, text: str) -> bool:
            posted.append(text)
            return True

    monkeypatch.setattr(incident_loop, "contact_channel", lambda _c: Contact())
    target = _sandbox(ladder={"SEV4": [{"after_s": 0, "role": "team-lead"}, {"after_s": 3600, "role": "cto"}]})
    loop = incident_loop.Loop(target, "INC-8", "SEV4", "t", "i", 1800)
    monkeypatch.setattr(incident_loop, "get_run_logger", lambda: __import__("logging").getLogger("t"))
    loop.start("alice")
    deadline = time.monotonic() + 10
    while not loop.escalated and time.monotonic() < deadline:
        time.sleep(0.1)
    loop.finish()
    assert [e["role"] for e in loop.escalated] == ["team-lead"], "the 1 h step is not due; the loop has ended"
    assert sum("Incident Escalation - SEV4" in p for p in posted) == 1


def test_a_dry_run_posts_nothing_and_pages_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from prefect.states import Completed

    posted: list[str] = []

    class Channel:
        def send(self, text: str) -> bool:
            posted.append(text)
            return True

    monkeypatch.setattr(incident_loop, "contact_channel", lambda _c: Channel())
    monkeypatch.setattr(incident_loop, "status_channel", lambda _t: Channel())
    monkeypatch.setattr(incident_loop, "get_run_logger", lambda: __import__("logging").getLogger("t"))
    target = _sandbox(ladder={"SEV1": [{"after_s": 0, "role": "cto"}]})  # due at once
    loop = incident_loop.Loop(target, "INC-10", "SEV1", "t", "i", 0.05, dry_run=True)
    loop.start("alice")
    assert loop.run(incident_loop.Step("snapshot-context", lambda: Completed(message="read"), risky=False))
    time.sleep(1.5)  # a real run would have escalated and sent periodic updates by now
    loop.finish()
    assert posted == [] and loop.updates_sent == 0 and loop.escalated == []
    assert len(loop.would_post) == 3, "initial, after the step, and the closing update: shown, not sent"
    assert loop.would_post[0].startswith("🚨 Incident Alert - SEV1") and "Incident: INC-10" in loop.would_post[0]

    live = incident_loop.Loop(target, "INC-11", "SEV1", "t", "i", 1800)
    live.start("alice")
    deadline = time.monotonic() + 5
    while not live.escalated and time.monotonic() < deadline:
        time.sleep(0.05)
    live.finish()
    assert [e["role"] for e in live.escalated] == ["cto"] and live.updates_sent == 2 and not live.would_post
