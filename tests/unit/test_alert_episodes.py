"""An alert group's incident keeps its name while the group fires, however its alerts come and go —
the sequence Alertmanager sends when the group's oldest alert resolves first — and across a restart."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from remediation.alerts.app import create_app
from remediation.alerts.journal import IntakeJournal
from remediation.alerts.starter import RecordingRunStarter
from tests.unit.test_alert_receiver import AUTH, CREDS, config, payload


def _post(app: Any, body: dict[str, Any]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client:
            resp = await client.post("/alerts/alertmanager", content=json.dumps(body).encode(), headers=AUTH)
        await app.state.intake.drain()
        assert resp.status_code == 202, resp.text
        return dict(resp.json())

    return asyncio.run(go())


def _notification(status: str, *alerts: tuple[dict[str, Any], str]) -> dict[str, Any]:
    body = payload("alertmanager")
    body["status"] = status
    body["alerts"] = [{**copy.deepcopy(a), "status": s} for a, s in alerts]
    return body


def test_the_oldest_alert_resolving_first_keeps_the_incident_and_resolved_is_filed_under_it(tmp_path: Path) -> None:
    oldest, newer = payload("alertmanager")["alerts"]
    newest = {**copy.deepcopy(newer), "fingerprint": "d9e8f7a6b5c4d3e2", "startsAt": "2026-03-14T03:20:00Z"}
    journal = tmp_path / "intake.sqlite"
    starter = RecordingRunStarter()
    app = create_app(config(), CREDS, starter, journal)

    fired = _post(app, _notification("firing", (oldest, "firing"), (newer, "firing")))
    # Alertmanager's next notifications: the oldest alert resolved (sent once), then gone; a third joins.
    steps = [
        _post(app, _notification("firing", (oldest, "resolved"), (newer, "firing"))),
        _post(app, _notification("firing", (newer, "firing"))),
        _post(app, _notification("firing", (newer, "firing"), (newest, "firing"))),
    ]
    assert {s["incident_id"] for s in steps} == {fired["incident_id"]}
    assert all(s["deduplicated"] for s in steps) and starter.created_runs == 1

    restarted = create_app(config(), CREDS, RecordingRunStarter(), journal)  # the receiver restarts
    resolved = _post(restarted, _notification("resolved", (newer, "resolved"), (newest, "resolved")))
    assert resolved["status"] == "resolved" and resolved["incident_id"] == fired["incident_id"]

    again = _post(restarted, _notification("firing", (newest, "firing")))  # fires anew after resolving
    assert again["incident_id"] != fired["incident_id"] and again["status"] in ("started", "accepted")


def test_a_new_groups_notifications_arriving_together_are_admitted_once_and_never_hold_up_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Opening an episode is a journal write, on the journal's thread: a slow one (a commit's fsync
    ahead of it) neither holds up other groups' repeats nor lets a second copy of the group in."""
    opened = IntakeJournal.open_episode

    def slow_open(self: IntakeJournal, fingerprint: str, seen: Any) -> Any:
        time.sleep(0.3)
        return opened(self, fingerprint, seen)

    starter = RecordingRunStarter()
    # A cap of three runs for three groups: one counted twice would leave none for the last.
    app = create_app(config(limits={"runs_per_target": 3}), CREDS, starter, tmp_path / "intake.sqlite")
    other = payload("alertmanager")
    other["groupKey"] = '{}:{alertname="Other"}'
    other["commonLabels"] = {**other["commonLabels"], "alertname": "Other"}
    third = copy.deepcopy(other)
    third["groupKey"] = '{}:{alertname="Third"}'
    third["commonLabels"] = {**third["commonLabels"], "alertname": "Third"}
    assert _post(app, other)["status"] in ("started", "accepted")
    monkeypatch.setattr(IntakeJournal, "open_episode", slow_open)

    async def go() -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client:
            async def post(body: dict[str, Any]) -> dict[str, Any]:
                resp = await client.post("/alerts/alertmanager", content=json.dumps(body).encode(), headers=AUTH)
                assert resp.status_code == 202, resp.text
                return dict(resp.json())

            async def timed_repeat() -> tuple[dict[str, Any], float]:
                out = await post(other)
                return out, time.monotonic() - began

            began = time.monotonic()
            together = [asyncio.create_task(post(payload("alertmanager"))) for _ in range(4)]
            (repeat, answered), *out = await asyncio.gather(timed_repeat(), *together)
            last = await post(third)
        await app.state.intake.drain()
        return [*out, repeat], answered, last

    out, answered, last = asyncio.run(go())
    assert answered < 0.2, f"another group's repeat waited {answered:.2f} s behind the journal write"
    assert len({o["incident_id"] for o in out[:4]}) == 1
    assert sum(not o["deduplicated"] for o in out[:4]) == 1 and out[4]["deduplicated"]
    assert last["status"] in ("started", "accepted"), "the group was counted once against the run cap"
    assert starter.created_runs == 3
