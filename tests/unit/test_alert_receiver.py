"""The receiver over ASGI with a recording RunStarter: what it starts, records and refuses."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter

from remediation.alerts import Credentials, RecordingRunStarter, StartError, create_app, load_config
from remediation.alerts.auth import sentry_signature
from remediation.alerts.routing import ReceiverConfig
from remediation.evidence.alert_context import AlertContext
from remediation.flowkit.params import IncidentId, Initiator, TargetName

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alerts"
TOKEN = "am-token-for-tests-0123456789"
SENTRY_SECRET = b"sentry-client-secret-for-tests"
CREDS = Credentials(
    bearer={"alertmanager": (TOKEN.encode(), b"next-rotation-token"), "grafana": (TOKEN.encode(),),
            "generic": (TOKEN.encode(),)},
    sentry_secret=SENTRY_SECRET,
)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def payload(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def config(**overrides: Any) -> ReceiverConfig:
    base = load_config().model_dump()
    base.update(overrides)
    return ReceiverConfig.model_validate(base)


class Receiver:
    def __init__(self, cfg: ReceiverConfig | None = None, creds: Credentials = CREDS) -> None:
        self.starter = RecordingRunStarter()
        self.app = create_app(cfg or config(), creds, self.starter)

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None,
             content: Any = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
                if content is None:
                    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
                    resp = await client.post(path, content=raw, headers=headers or {})
                else:
                    resp = await client.post(path, content=content, headers=headers or {})
            await self.app.state.intake.drain()
            return resp

        return asyncio.run(go())

    def nothing_happened(self) -> bool:
        return not self.starter.started and not self.starter.records


# --- happy paths -------------------------------------------------------------------------------
def test_alertmanager_group_starts_one_tagged_read_only_capture() -> None:
    rx = Receiver()
    resp = rx.post("/alerts/alertmanager", payload("alertmanager"), AUTH)
    assert resp.status_code == 202, resp.text
    out = resp.json()
    assert out["deduplicated"] is False and out["status"] == "started"
    assert out["route"] == "sandbox-money-path" and out["severity"] == "sev1" and out["target"] == "sandbox"
    (req,) = rx.starter.started
    assert out["flow_run_ids"] == [str(rx.starter.runs_by_key[req.idempotency_key])]
    assert req.deployment == "capture-evidence/capture-evidence"
    p = req.parameters
    assert p["incident_id"] == out["incident_id"]
    TypeAdapter(IncidentId).validate_python(p["incident_id"])
    TypeAdapter(TargetName).validate_python(p["target"])
    TypeAdapter(Initiator).validate_python(p["initiated_by"])
    assert re.fullmatch(r"alert:alertmanager:[0-9a-f]{12}", p["initiated_by"])
    assert p["profile"] == "default" and p["dry_run"] is False
    alert = AlertContext.model_validate(p["alert"])
    assert alert.source == "alertmanager" and alert.labels["alertname"] == "WalletDepositErrors"
    assert alert.starts_at is not None and alert.starts_at.isoformat() == "2026-03-14T02:58:11.123456+00:00"
    assert alert.summary == "Deposit error rate above 5% for 5 minutes"
    assert set(req.tags) >= {f"incident:{p['incident_id']}", "runbook:capture-evidence", "target:sandbox",
                             "alert:alertmanager"}
    # A newly started run is also an event on the alert group's resource.
    (rec,) = rx.starter.records
    assert rec.event == "remediation.alert.firing"
    assert rec.resource_id == f"remediation.alert.{alert.fingerprint}"
    assert str(rec.flow_run_id) == out["flow_run_ids"][0]


def test_incident_id_is_stable_and_pinned() -> None:
    # Changing the derivation would split running incidents in two: pin it.
    rx = Receiver()
    first = rx.post("/alerts/alertmanager", payload("alertmanager"), AUTH).json()
    assert first["incident_id"] == "INC-20260314-cad55135a4"
    assert Receiver().post("/alerts/alertmanager", payload("alertmanager"), AUTH).json()["incident_id"] == \
        first["incident_id"]


def test_repeats_and_growing_groups_reuse_the_run_a_new_start_does_not() -> None:
    rx = Receiver()
    body = payload("alertmanager")
    first = rx.post("/alerts/alertmanager", body, AUTH).json()
    again = rx.post("/alerts/alertmanager", body, AUTH).json()
    assert again["deduplicated"] is True and again["flow_run_ids"] == first["flow_run_ids"]
    grown = payload("alertmanager")
    grown["alerts"].append({**grown["alerts"][1], "fingerprint": "d9", "startsAt": "2026-03-14T03:10:00Z"})
    assert rx.post("/alerts/alertmanager", grown, AUTH).json()["incident_id"] == first["incident_id"]
    refired = payload("alertmanager")
    for a in refired["alerts"]:
        a["startsAt"] = "2026-03-15T08:00:00Z"
    # Still the open episode (its first alerts resolved and dropped out): same incident, same run.
    assert rx.post("/alerts/alertmanager", refired, AUTH).json()["incident_id"] == first["incident_id"]
    resolved = payload("alertmanager")
    resolved["status"] = "resolved"
    for a in resolved["alerts"]:
        a["status"] = "resolved"
    assert rx.post("/alerts/alertmanager", resolved, AUTH).json()["incident_id"] == first["incident_id"]
    later = rx.post("/alerts/alertmanager", refired, AUTH).json()  # fires again after it resolved
    assert later["incident_id"] != first["incident_id"] and later["deduplicated"] is False
    assert rx.starter.created_runs == 2
    firing = [r for r in rx.starter.records if r.event == "remediation.alert.firing"]
    assert len(firing) == 2, "only newly created runs are recorded as firing events"


def test_resolved_is_recorded_and_starts_nothing() -> None:
    rx = Receiver()
    firing = rx.post("/alerts/alertmanager", payload("alertmanager"), AUTH).json()
    resolved = payload("alertmanager")
    resolved["status"] = "resolved"
    for a in resolved["alerts"]:
        a["status"] = "resolved"
        a["endsAt"] = "2026-03-14T03:30:00Z"
    resp = rx.post("/alerts/alertmanager", resolved, AUTH)
    assert resp.status_code == 202
    out = resp.json()
    assert out["status"] == "resolved" and out["flow_run_ids"] == []
    assert out["incident_id"] == firing["incident_id"]
    assert len(rx.starter.started) == 1
    rec = rx.starter.records[-1]
    assert rec.event == "remediation.alert.resolved"
    assert re.fullmatch(r"remediation\.alert\.[0-9a-f]{16}", rec.resource_id)
    assert rec.resource_id == rx.starter.records[0].resource_id, "one resource per group: firing and resolved"
    assert rec.payload["incident_id"] == firing["incident_id"] and rec.flow_run_id is None


def test_grafana_and_generic_route_by_labels() -> None:
    rx = Receiver()
    g = rx.post("/alerts/grafana", payload("grafana"), AUTH)
    assert g.status_code == 202, g.text
    assert g.json()["route"] == "sandbox" and g.json()["severity"] == "sev3"
    assert rx.starter.started[-1].parameters["alert"]["source"] == "grafana"
    gen = rx.post("/alerts/generic", payload("generic"), AUTH)
    assert gen.status_code == 202, gen.text
    assert gen.json()["route"] == "sandbox"
    assert "alert:generic" in rx.starter.started[-1].tags


def _sentry_headers(body: bytes, secret: bytes = SENTRY_SECRET, resource: str = "event_alert") -> dict[str, str]:
    return {"Sentry-Hook-Signature": sentry_signature(secret, body), "Sentry-Hook-Resource": resource,
            "Content-Type": "application/json"}


def test_sentry_signed_issue_alert_starts_and_dedups_within_the_window() -> None:
    rx = Receiver()
    body = json.dumps(payload("sentry_issue_alert")).encode()
    resp = rx.post("/alerts/sentry", body, _sentry_headers(body))
    assert resp.status_code == 202, resp.text
    assert resp.json()["route"] == "sandbox-sentry" and resp.json()["severity"] == "sev2"
    later = payload("sentry_issue_alert")
    later["data"]["event"]["datetime"] = "2026-03-14T03:40:00Z"  # same hour window
    body2 = json.dumps(later).encode()
    assert rx.post("/alerts/sentry", body2, _sentry_headers(body2)).json()["deduplicated"] is True
    later["data"]["event"]["datetime"] = "2026-03-14T04:05:00Z"  # next window: a new incident
    body3 = json.dumps(later).encode()
    assert rx.post("/alerts/sentry", body3, _sentry_headers(body3)).json()["deduplicated"] is False
    assert rx.starter.created_runs == 2


def test_sentry_resources_other_than_issue_alerts_are_ignored() -> None:
    rx = Receiver()
    body = json.dumps({"action": "created", "data": {}}).encode()
    resp = rx.post("/alerts/sentry", body, _sentry_headers(body, resource="installation"))
    assert resp.status_code == 202 and resp.json()["status"] == "ignored"
    assert rx.nothing_happened()


# --- refusals: the right code, a clear message, nothing started -------------------------------
@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {TOKEN}x"},
])
@pytest.mark.parametrize("source", ["alertmanager", "grafana", "generic"])
def test_unauthenticated_posts_get_401(source: str, headers: dict[str, str]) -> None:
    rx = Receiver()
    resp = rx.post(f"/alerts/{source}", payload("alertmanager" if source != "generic" else "generic"), headers)
    assert resp.status_code == 401
    assert "nothing was started" in resp.json()["detail"]
    assert TOKEN not in resp.text
    assert resp.headers["www-authenticate"] == "Bearer"
    assert rx.nothing_happened()


def test_a_rotated_token_is_accepted() -> None:
    rx = Receiver()
    resp = rx.post("/alerts/alertmanager", payload("alertmanager"), {"Authorization": "Bearer next-rotation-token"})
    assert resp.status_code == 202


@pytest.mark.parametrize("mangle", ["wrong-secret", "tampered-body", "missing", "garbage"])
def test_wrongly_signed_sentry_posts_get_401(mangle: str) -> None:
    rx = Receiver()
    body = json.dumps(payload("sentry_issue_alert")).encode()
    headers = _sentry_headers(body, secret=b"someone-else" if mangle == "wrong-secret" else SENTRY_SECRET)
    if mangle == "tampered-body":
        body = body.replace(b"sandbox", b"prodenv")
    elif mangle == "missing":
        del headers["Sentry-Hook-Signature"]
    elif mangle == "garbage":
        headers["Sentry-Hook-Signature"] = "zz" * 40
    resp = rx.post("/alerts/sentry", body, headers)
    assert resp.status_code == 401, resp.text
    assert "nothing was started" in resp.json()["detail"]
    assert rx.nothing_happened()


def test_oversized_body_gets_413_from_content_length() -> None:
    rx = Receiver(config(max_body_bytes=4096))
    big = payload("alertmanager")
    big["commonAnnotations"]["description"] = "x" * 5000
    resp = rx.post("/alerts/alertmanager", big, AUTH)
    assert resp.status_code == 413 and "4096-byte limit" in resp.json()["detail"]
    assert rx.nothing_happened()


def test_oversized_streamed_body_is_cut_off_early() -> None:
    rx = Receiver(config(max_body_bytes=64 * 1024))
    sent = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(1000):  # ~16 MB offered, no Content-Length (chunked)
            sent.append(1)
            yield b"[" * 16384

    resp = rx.post("/alerts/alertmanager", headers=AUTH, content=chunks())
    assert resp.status_code == 413
    assert len(sent) < 10, f"the receiver read {len(sent)} chunks of an oversized body"
    assert rx.nothing_happened()


def test_unauthenticated_oversized_body_is_refused_before_reading_it() -> None:
    rx = Receiver(config(max_body_bytes=64 * 1024))
    sent = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            sent.append(1)
            yield b"{" * 16384

    resp = rx.post("/alerts/alertmanager", headers={}, content=chunks())
    assert resp.status_code == 401
    assert len(sent) <= 1


@pytest.mark.parametrize(("source", "body", "fragment"), [
    ("alertmanager", b"{not json", "json_invalid"),
    ("alertmanager", b"", "json_invalid"),
    ("alertmanager", b"[1, 2]", "model_type"),
    ("alertmanager", {**payload("alertmanager"), "version": "3"}, "version"),
    ("alertmanager", {**payload("alertmanager"), "alerts": []}, "alerts"),
    ("alertmanager", {**payload("alertmanager"), "status": "exploded"}, "status"),
    ("alertmanager", {**payload("alertmanager"), "alerts": [{"status": "firing", "labels": {}}]}, "startsAt"),
    ("grafana", {**payload("grafana"), "groupKey": ""}, "groupKey"),
    ("generic", {**payload("generic"), "starts_at": "2026-03-14T03:02:00"}, "starts_at"),
    ("generic", {**payload("generic"), "serverity": "high"}, "serverity"),
    ("generic", {**payload("generic"), "labels": {"bad label": "x"}}, "labels"),
])
def test_malformed_payloads_get_422_naming_the_problem(source: str, body: Any, fragment: str) -> None:
    rx = Receiver()
    resp = rx.post(f"/alerts/{source}", body, AUTH)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert "nothing was started" in json.dumps(detail)
    assert fragment in json.dumps(detail)
    assert rx.nothing_happened()


def test_malformed_sentry_event_gets_422_after_the_signature_holds() -> None:
    rx = Receiver()
    bad = payload("sentry_issue_alert")
    del bad["data"]["event"]["datetime"], bad["data"]["event"]["timestamp"]
    body = json.dumps(bad).encode()
    resp = rx.post("/alerts/sentry", body, _sentry_headers(body))
    assert resp.status_code == 422 and "timestamp" in resp.text
    assert rx.nothing_happened()


def test_validation_errors_do_not_echo_the_payload() -> None:
    rx = Receiver()
    body = {**payload("generic"), "starts_at": "password=hunter2-secret"}
    resp = rx.post("/alerts/generic", body, AUTH)
    assert resp.status_code == 422 and "hunter2" not in resp.text


def test_unrouted_alert_is_recorded_or_refused_as_configured() -> None:
    prod = payload("alertmanager")
    prod["commonLabels"]["env"] = "production"
    rx = Receiver()
    resp = rx.post("/alerts/alertmanager", prod, AUTH)
    assert resp.status_code == 202 and resp.json()["status"] == "unrouted"
    assert not rx.starter.started
    assert [r.event for r in rx.starter.records] == ["remediation.alert.unrouted"]
    strict = Receiver(config(unmatched="reject"))
    resp = strict.post("/alerts/alertmanager", prod, AUTH)
    assert resp.status_code == 422 and "no route matches" in resp.json()["detail"]
    assert strict.nothing_happened()
    catch_all = Receiver(config(default={"target": "sandbox", "severity": "sev4"}))
    out = catch_all.post("/alerts/alertmanager", prod, AUTH).json()
    assert out["route"] == "default" and out["status"] == "started"


def test_a_source_without_credentials_is_switched_off() -> None:
    rx = Receiver(creds=Credentials(bearer={"alertmanager": (TOKEN.encode(),)}))
    assert rx.post("/alerts/grafana", payload("grafana"), AUTH).status_code == 404
    body = json.dumps(payload("sentry_issue_alert")).encode()
    assert rx.post("/alerts/sentry", body, _sentry_headers(body)).status_code == 404
    assert rx.nothing_happened()


def test_prefect_unreachable_is_accepted_and_started_when_it_is_back() -> None:
    rx = Receiver()
    rx.starter.fail_with = StartError("Prefect API unreachable: ConnectError", retryable=True)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rx.app), base_url="http://r") as client:
            resp = await client.post("/alerts/alertmanager", content=json.dumps(payload("alertmanager")),
                                     headers=AUTH)
        assert rx.starter.created_runs == 0
        rx.starter.fail_with = None
        await rx.app.state.intake.drain(timeout_s=10)
        return resp

    resp = asyncio.run(go())
    assert resp.status_code == 202, resp.text
    out = resp.json()
    assert out["status"] == "accepted" and out["flow_run_ids"] == [] and "unreachable" in out["detail"]
    assert rx.starter.created_runs == 1, "journaled, retried, started once"
    assert [r.event for r in rx.starter.records] == ["remediation.alert.firing"]


def test_a_refusal_by_prefect_answers_502_and_starts_nothing() -> None:
    rx = Receiver()
    rx.starter.fail_with = StartError("Prefect refused the request (422): parameters", retryable=False)
    resp = rx.post("/alerts/alertmanager", payload("alertmanager"), AUTH)
    assert resp.status_code == 502 and "could not start the capture run" in resp.json()["detail"]
    assert "retry-after" not in resp.headers and rx.starter.created_runs == 0


def test_resolved_with_prefect_unreachable_answers_503_so_the_sender_retries() -> None:
    rx = Receiver()
    rx.starter.fail_with = StartError("Prefect API unreachable: ConnectError", retryable=True)
    body = payload("alertmanager")
    body["status"] = "resolved"
    for alert in body["alerts"]:
        alert["status"] = "resolved"
    resp = rx.post("/alerts/alertmanager", body, AUTH)
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5"


def test_healthz() -> None:
    rx = Receiver()

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rx.app), base_url="http://r") as c:
            return await c.get("/healthz")

    resp = asyncio.run(go())
    assert resp.status_code == 200
    assert resp.json()["sources"] == ["alertmanager", "grafana", "sentry", "generic"]
    assert resp.json()["deployment"] == "capture-evidence/capture-evidence"
