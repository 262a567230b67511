"""Escalation against the real channel and the real postmortem flow: the sandbox's SEV1 ladder (seed 001: the
engineering manager at 30 min, the CTO at 1 h) taken on the loop's clock moved forward, each step posted
once to its contact's webhook (the admin service's stand-in channel), and the postmortem drafted from the
incident's runs carries both escalations in its timeline and the target's deadline."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from flows.postmortem import postmortem
from remediation.flowkit.incident_loop import Loop
from remediation.target.inventory import load_target
from sandbox.stack.info import StackInfo
from tests.integration.flow_runs import incident

pytestmark = pytest.mark.integration


def test_the_ladder_posts_each_step_once_and_the_postmortem_carries_them(stack: StackInfo) -> None:
    inv, inc = load_target("sandbox"), incident()
    loop = Loop(inv, inc, "SEV1", "deposits failing", "deposits down on every brand", 1800)
    assert loop.escalate_due(loop.started + timedelta(minutes=29)) == []
    first = loop.escalate_due(loop.started + timedelta(minutes=31))
    again = loop.escalate_due(loop.started + timedelta(minutes=45))
    second = loop.escalate_due(loop.started + timedelta(minutes=61))
    assert [(e["role"], e["posted"]) for e in first + again + second] == [("engineering-manager", True),
                                                                         ("cto", True)]
    token = stack.admin_tokens["viewer"].get_secret_value()
    posts = httpx.get(f"{stack.admin_url}/hooks/status", headers={"Authorization": f"Bearer {token}"}).json()
    sent = [p["text"] for p in posts if f"Incident: {inc}" in p["text"]]
    assert [t.splitlines()[2] for t in sent] == ["To: Erin, engineering manager (engineering-manager)",
                                                 "To: Frank, CTO (cto)"], sent
    assert all(t.startswith("⏫ Incident Escalation - SEV1") for t in sent)

    state = postmortem(incident_id=inc, target="sandbox", severity="SEV1", title="deposits failing",
                       initiated_by="oncall-alice", escalated=loop.escalated_lines(), dry_run=True,
                       return_state=True)
    text = state.result()["markdown"]
    # Literal text in markdown: the contact's parentheses escaped.
    assert r"escalated to engineering-manager \(Erin, engineering manager\) after 30 min open" in text
    assert r"escalated to cto \(Frank, CTO\) after 60 min open" in text
    assert "business days after" in text and "the target's rule for SEV1" in text
