"""An alert group's incident keeps its name while the group fires, however its alerts come and go —
the sequence Alertmanager sends when the group's oldest alert resolves first — and across a restart."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import httpx

from remediation.alerts.app import create_app
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
