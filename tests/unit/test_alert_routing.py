"""Routes file and identities, without a server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from remediation.alerts import Credentials, RecordingRunStarter, identify, load_config
from remediation.alerts.auth import sentry_signature
from remediation.alerts.models import AlertGroup
from remediation.alerts.routing import DEFAULT_ROUTES_FILE
from remediation.alerts.starter import CaptureRequest
from remediation.errors import InventoryError


def group(labels: dict[str, str], source: str = "alertmanager", key: str = "g1",
          start: datetime | None = datetime(2026, 3, 14, 3, 0, tzinfo=UTC)) -> AlertGroup:
    return AlertGroup(source=source, group_key=key, status="firing", starts_at=start, labels=labels)  # type: ignore[arg-type]


def test_the_committed_routes_file_loads_and_routes() -> None:
    cfg = load_config(DEFAULT_ROUTES_FILE)
    assert cfg.deployment == "capture-evidence/capture-evidence"
    assert cfg.max_body_bytes == 1024 * 1024 and cfg.unmatched == "ignore"
    money = cfg.route(group({"env": "sandbox", "alertname": "WalletDepositErrors"}))
    assert money is not None and money[0] == "sandbox-money-path" and money[1].severity == "sev1"
    # Regexes match the whole value, as in Alertmanager.
    other = cfg.route(group({"env": "sandbox", "alertname": "MyWalletThing"}))
    assert other is not None and other[0] == "sandbox"
    sentry = cfg.route(group({"environment": "sandbox"}, source="sentry"))
    assert sentry is not None and sentry[0] == "sandbox-sentry"
    assert cfg.route(group({"environment": "sandbox"}, source="generic")) is None
    assert cfg.route(group({"env": "production"})) is None


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "routes.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(("text", "fragment"), [
    ('unmatchd = "ignore"', "unmatchd"),
    ('[[routes]]\nname = "x"\nmatch = { env = "a" }\ntarget = "sandbox"\nseverty = "sev1"', "routes.0.severty"),
    ('[[routes]]\nname = "x"\nmatch = { env = "a" }\ntarget = "nowhere"', "nowhere"),
    ('[[routes]]\nname = "x"\nmatch_re = { env = "(" }\ntarget = "sandbox"', "not a regular expression"),
    ('[[routes]]\nname = "x"\ntarget = "sandbox"', "matches everything"),
    ('deployment = "rollback/rollback"', "deployment"),
    ('[[routes]]\nname = "x"\nmatch = { env = "a" }\ntarget = "sandbox"\nseverity = "p1"', "severity"),
    ('[auth.alertmanager]\ntoken = { env = "X" }', "auth.alertmanager"),
    ('[[routes]]\nname = "x"\nmatch = { a = "b" }\ntarget = "sandbox"\n'
     '[[routes]]\nname = "x"\nmatch = { a = "c" }\ntarget = "sandbox"', "unique"),
    ("this is = not toml =", "not valid TOML"),
])
def test_a_bad_routes_file_fails_naming_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InventoryError) as err:
        load_config(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_credentials_resolve_from_env_and_fail_loudly_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(DEFAULT_ROUTES_FILE)
    monkeypatch.delenv("RP_ALERT_TOKEN", raising=False)
    monkeypatch.setenv("RP_SENTRY_CLIENT_SECRET", "s3cret")
    with pytest.raises(InventoryError, match="RP_ALERT_TOKEN"):
        Credentials.resolve(cfg.auth)
    monkeypatch.setenv("RP_ALERT_TOKEN", "tok")
    monkeypatch.setenv("RP_GRAFANA_ALERT_TOKEN", "grafana-tok")
    monkeypatch.setenv("RP_GENERIC_ALERT_TOKEN", "generic-tok")
    creds = Credentials.resolve(cfg.auth)
    assert creds.check_bearer("alertmanager", "Bearer tok") is None
    assert creds.check_bearer("alertmanager", "bearer tok") is None
    assert creds.check_bearer("generic", "Bearer nope") == "bearer token not accepted"
    body = b'{"a": 1}'
    assert creds.check_sentry(body, sentry_signature(b"s3cret", body)) is None
    assert creds.check_sentry(body, sentry_signature(b"s3cret", body + b" ")) is not None


def test_sentry_signature_is_hex_hmac_sha256_of_the_raw_body() -> None:
    import hashlib
    import hmac

    body = b'{"action":"triggered"}'
    assert sentry_signature(b"k", body) == hmac.new(b"k", body, hashlib.sha256).hexdigest()


def test_identity_depends_on_source_group_and_start_only() -> None:
    a = identify(group({"x": "1"}))
    assert a == identify(group({"y": "2"}))
    assert a.incident_id.startswith("INC-20260314-") and len(a.incident_id) == 23
    assert a.idempotency_key.startswith("alert-capture:v1:") and len(a.idempotency_key) == 17 + 64
    later = identify(group({}, start=datetime(2026, 3, 14, 3, 0, 1, tzinfo=UTC)))
    assert later.incident_id != a.incident_id and later.idempotency_key != a.idempotency_key
    assert later.fingerprint == a.fingerprint, "one fingerprint per group across its incidents"
    assert identify(group({}, source="grafana")).incident_id != a.incident_id
    assert identify(group({}, key="g2")).fingerprint != a.fingerprint
    assert identify(group({}, start=None)).incident_id.startswith("INC-0-")


def _req(key: str) -> CaptureRequest:
    return CaptureRequest(deployment="capture-evidence/capture-evidence", idempotency_key=key,
                          run_name="capture-x", parameters={}, tags=())


def test_recording_starter_mimics_server_idempotency() -> None:
    s = RecordingRunStarter()
    r1 = asyncio.run(s.start(_req("k")))
    r2 = asyncio.run(s.start(_req("k")))
    assert r1.created and not r2.created and r1.flow_run_id == r2.flow_run_id
    assert uuid4() != r1.flow_run_id
