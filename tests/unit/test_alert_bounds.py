"""Receiver bounds: payload caps, what is stored, rate limits, the run cap, the start queue, a token per source."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import pytest

from remediation.alerts import Credentials, RecordingRunStarter, StartError, create_app, load_config
from remediation.alerts.journal import IntakeJournal
from remediation.alerts.routing import AuthConfig, BearerAuth
from remediation.errors import InventoryError
from remediation.target.secrets import SecretRef
from tests.unit.test_alert_receiver import AUTH, CREDS, Receiver, _sentry_headers, config, payload


def _group(n: int, **labels: str) -> dict[str, Any]:
    body = payload("alertmanager")
    body["groupKey"] = f'{{}}:{{shard="s{n}"}}'
    body["commonLabels"] = {**body["commonLabels"], "shard": f"s{n}", **labels}
    return body


def _limits(**limits: Any) -> Any:
    return config(limits=limits)


async def _post_many(app: Any, posts: list[tuple[str, Any, dict[str, str]]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client:
        return [await client.post(path, content=json.dumps(body).encode(), headers=headers)
                for path, body, headers in posts]


# --- payload caps: 413 naming the limit, never the input, nothing started ------------------------------
@pytest.mark.parametrize(("mutate", "limit"), [
    (lambda b: b["alerts"][0]["labels"].update({f"l{i}": "v" for i in range(10_000)}), "max_labels"),
    (lambda b: b["commonLabels"].update({"big": "s3cr3t-" + "x" * 3000}), "max_label_value_bytes"),
    (lambda b: b["commonLabels"].update({"n" * 200: "v"}), "max_label_name_bytes"),
    (lambda b: b["alerts"][1]["annotations"].update({f"a{i}": "v" for i in range(40)}), "max_annotations"),
    (lambda b: b["commonAnnotations"].update({"description": "y" * 20_000}), "max_annotation_value_bytes"),
    (lambda b: b["alerts"].extend([b["alerts"][0]] * 1000), "max_alerts"),
])
def test_over_a_payload_cap_is_413_naming_the_limit_and_nothing_is_started(mutate: Any, limit: str) -> None:
    rx = Receiver()
    body = payload("alertmanager")
    mutate(body)
    resp = rx.post("/alerts/alertmanager", body, AUTH)
    assert resp.status_code == 413, resp.text
    detail = resp.json()["detail"]
    assert detail["limit"] == limit and detail["found"] > detail["max"] and "nothing was started" in detail["message"]
    assert "s3cr3t" not in resp.text and "l9999" not in resp.text
    assert rx.nothing_happened()
    assert rx.app.state.intake.journal.counts()["pending"] == 0 and not rx.app.state.intake.journal.pending()


def test_generic_labels_and_sentry_tags_are_capped_too() -> None:
    rx = Receiver(_limits(max_labels=4))
    generic = {**payload("generic"), "labels": {f"l{i}": "v" for i in range(5)}}
    assert rx.post("/alerts/generic", generic, AUTH).json()["detail"]["limit"] == "max_labels"
    sentry = payload("sentry_issue_alert")
    sentry["data"]["event"]["tags"] = [[f"t{i}", "v"] for i in range(5)]
    raw = json.dumps(sentry).encode()
    resp = rx.post("/alerts/sentry", raw, _sentry_headers(raw))
    assert resp.status_code == 413 and resp.json()["detail"]["where"] == "data.event.tags"
    assert rx.nothing_happened()


# --- what is stored: a bounded, redacted subset ------------------------------------------------------------
def test_parameters_journal_and_events_get_a_bounded_redacted_subset_of_labels() -> None:
    rx = Receiver()
    body = payload("alertmanager")
    extra = {f"z{i:02d}": "v" for i in range(40)}
    body["commonLabels"] = {**body["commonLabels"], **extra, "db_password": "hunter2",
                            "note": "login with password=hunter2", "aaa_long": "w" * 2000}
    resp = rx.post("/alerts/alertmanager", body, AUTH)
    assert resp.status_code == 202 and resp.json()["status"] == "started"
    (req,) = rx.starter.started
    labels = req.parameters["alert"]["labels"]
    assert len(labels) == 16
    # The route's own labels first, then well-known ones; long values cut short.
    assert list(labels)[:2] == ["env", "alertname"] and {"service", "severity"} <= set(labels)
    assert all(len(v) <= 256 for v in labels.values())
    (rec,) = rx.starter.records
    assert rec.payload["labels"] == labels and rec.payload["labels_left_out"] == len(body["commonLabels"]) - 16
    stored = json.dumps([req.parameters, rec.payload])
    assert "hunter2" not in stored
    # Over-cap labels never reach the journal either.
    journal = rx.app.state.intake.journal
    row = journal._reader.execute("SELECT request || coalesce(record, '') FROM intake").fetchone()[0]
    assert "hunter2" not in row and "z39" not in row and "w" * 300 not in row


def test_redaction_reaches_labels_by_name_and_by_value() -> None:
    rx = Receiver()
    body = payload("alertmanager")
    body["commonLabels"] = {**body["commonLabels"], "db_password": "hunter2", "dsn": "postgres://u:hunter2@db/x"}
    rx.post("/alerts/alertmanager", body, AUTH)
    labels = rx.starter.started[0].parameters["alert"]["labels"]
    assert labels["db_password"] == "[REDACTED]" and labels["dsn"] == "postgres://u:[REDACTED]@db/x"


def test_unrouted_labels_are_neither_logged_in_full_nor_echoed(caplog: pytest.LogCaptureFixture) -> None:
    body = payload("alertmanager")
    body["commonLabels"] = {"env": "elsewhere", "token": "tok-hunter2", **{f"z{i:02d}": "v" for i in range(40)}}
    caplog.set_level(logging.WARNING, "remediation.alerts")
    rx = Receiver()
    assert rx.post("/alerts/alertmanager", body, AUTH).json()["status"] == "unrouted"
    (line,) = [r.getMessage() for r in caplog.records if "unrouted" in r.getMessage()]
    assert "hunter2" not in line and "z39" not in line and "(+26 more)" in line
    rejecting = Receiver(config(unmatched="reject"))
    resp = rejecting.post("/alerts/alertmanager", body, AUTH)
    assert resp.status_code == 422 and "elsewhere" not in resp.text and "hunter2" not in resp.text


# --- rate limits: 429 + Retry-After, recorded, repeats free -------------------------------------------
def test_per_source_rate_limit_answers_429_records_it_and_repeats_still_dedup() -> None:
    rx = Receiver(_limits(source_rate={"rate_per_s": 0.01, "burst": 2}))

    async def go() -> list[httpx.Response]:
        out = await _post_many(rx.app, [("/alerts/alertmanager", _group(i), AUTH) for i in range(4)]
                               + [("/alerts/alertmanager", _group(0), AUTH)])
        await rx.app.state.intake.drain()
        return out

    resps = asyncio.run(go())
    assert [r.status_code for r in resps] == [202, 202, 429, 429, 202]
    assert int(resps[2].headers["retry-after"]) >= 1 and "source 'alertmanager'" in resps[2].json()["detail"]
    assert resps[4].json()["deduplicated"] is True, "a repeat of a started group is never limited"
    assert rx.starter.created_runs == 2
    (throttled,) = [r for r in rx.starter.records if r.event == "remediation.alert.throttled"]
    assert throttled.payload["reason"] == "source-rate" and throttled.payload["count"] == 2
    assert len(throttled.payload["incident_ids_sample"]) == 2
    # Other sources have their own bucket.
    assert rx.post("/alerts/generic", payload("generic"), AUTH).status_code == 202


def test_per_route_rate_limit_answers_429() -> None:
    rx = Receiver(_limits(route_rate={"rate_per_s": 0.01, "burst": 1}))
    codes = [r.status_code for r in asyncio.run(
        _post_many(rx.app, [("/alerts/alertmanager", _group(i), AUTH) for i in range(2)]))]
    assert codes == [202, 429]
    assert rx.app.state.intake.overflow.totals == {"route-rate": 1}


# --- the run cap per target: recorded, not started ---------------------------------------------------
def test_run_cap_per_target_records_the_overflow_once_per_group_and_starts_at_most_the_cap() -> None:
    rx = Receiver(_limits(runs_per_target=3, runs_window_s=600))

    async def go() -> list[httpx.Response]:
        posts = [("/alerts/alertmanager", _group(i), AUTH) for i in range(6)]
        posts += [("/alerts/alertmanager", _group(0), AUTH), ("/alerts/alertmanager", _group(5), AUTH)]
        out = await _post_many(rx.app, posts)
        await rx.app.state.intake.drain()
        return out

    resps = asyncio.run(go())
    assert all(r.status_code == 202 for r in resps)
    statuses = [r.json()["status"] for r in resps]
    assert statuses == ["started"] * 3 + ["capped"] * 3 + ["deduplicated", "capped"]
    assert rx.starter.created_runs == 3
    capped = [r for r in rx.starter.records if r.event == "remediation.alert.capped"]
    assert len(capped) == 3, "one event per capped group, not one per repeat"
    assert capped[0].payload["target"] == "sandbox" and capped[0].payload["runs_per_target"] == 3
    assert "recorded, not started" in resps[3].json()["detail"]
    assert rx.app.state.intake.journal.counts()["started"] == 3


def test_the_run_cap_survives_a_restart(tmp_path: Any) -> None:
    path = tmp_path / "intake.sqlite"
    first = create_app(_limits(runs_per_target=2), CREDS, RecordingRunStarter(), path)
    asyncio.run(_post_many(first, [("/alerts/alertmanager", _group(i), AUTH) for i in range(2)]))
    again = create_app(_limits(runs_per_target=2), CREDS, RecordingRunStarter(), path)
    (resp,) = asyncio.run(_post_many(again, [("/alerts/alertmanager", _group(9), AUTH)]))
    assert resp.json()["status"] == "capped"


# --- the start queue: 503 before journaling --------------------------------------------------------------
def test_a_full_start_queue_sheds_new_groups_with_503_before_journaling() -> None:
    starter = RecordingRunStarter(fail_with=StartError("Prefect API unreachable", retryable=True))
    app = create_app(_limits(max_queue=2), CREDS, starter)

    async def go() -> list[httpx.Response]:
        out = await _post_many(app, [("/alerts/alertmanager", _group(i), AUTH) for i in range(3)]
                               + [("/alerts/alertmanager", _group(0), AUTH)])
        await app.state.intake.dispatcher.close()
        return out

    resps = asyncio.run(go())
    assert [r.status_code for r in resps] == [202, 202, 503, 202]
    assert resps[2].headers["retry-after"] == "5" and "queue is full" in resps[2].json()["detail"]
    assert app.state.intake.journal.counts()["pending"] == 2
    assert app.state.intake.overflow.totals == {"queue-full": 1}


# --- a token per source --------------------------------------------------------------------------------
def test_a_token_of_one_source_is_refused_on_another() -> None:
    creds = Credentials(bearer={"alertmanager": (b"am-token-0123",), "grafana": (b"gf-token-0123",),
                                "generic": (b"gen-token-0123",)})
    rx = Receiver(creds=creds)
    am, gf = {"Authorization": "Bearer am-token-0123"}, {"Authorization": "Bearer gf-token-0123"}
    assert rx.post("/alerts/grafana", payload("grafana"), am).status_code == 401
    assert rx.post("/alerts/generic", payload("generic"), gf).status_code == 401
    assert rx.post("/alerts/alertmanager", payload("alertmanager"), gf).status_code == 401
    assert rx.nothing_happened()
    assert rx.post("/alerts/grafana", payload("grafana"), gf).status_code == 202


def test_a_token_shared_by_two_sources_stops_the_receiver_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RP_T_ONE", "one-token")
    monkeypatch.setenv("RP_T_TWO", "two-token")
    one, two = BearerAuth(tokens=[SecretRef(env="RP_T_ONE")]), BearerAuth(tokens=[SecretRef(env="RP_T_TWO")])
    assert Credentials.resolve(AuthConfig(alertmanager=one, grafana=two)).enabled("grafana")
    with pytest.raises(InventoryError, match=r"auth\.alertmanager and auth\.grafana") as err:
        Credentials.resolve(AuthConfig(alertmanager=one, grafana=one))
    assert "one-token" not in str(err.value)
    # The shipped routes file names a distinct secret per source.
    auth = load_config().auth
    refs = [json.dumps(getattr(auth, s).model_dump(mode="json")) for s in ("alertmanager", "grafana", "generic")]
    assert len(set(refs)) == 3


# --- the journal stays bounded ------------------------------------------------------------------------
def test_journal_prunes_closed_rows_and_stale_episodes() -> None:
    book = IntakeJournal(":memory:", keep_s=60, episode_keep_s=120)
    old = time.time() - 1000
    db = book._db
    for key, run, failed in (("started", "00000000-0000-0000-0000-000000000001", None), ("refused", None, "422"),
                             ("pending", None, None)):
        db.execute("INSERT INTO intake (key, incident_id, request, accepted_at, run_id, started_at, failed)"
                   " VALUES (?, 'INC', '{}', ?, ?, ?, ?)", (key, old, run, old if run else None, failed))
    db.execute("INSERT INTO episode VALUES ('resolved', '2026-01-01T00:00:00+00:00', ?, ?)", (old, old))
    db.execute("INSERT INTO episode VALUES ('stale', '2026-01-01T00:00:00+00:00', NULL, ?)", (old,))
    db.execute("INSERT INTO episode VALUES ('open', '2026-01-01T00:00:00+00:00', NULL, ?)", (time.time(),))
    assert book.prune() == 4
    assert [r[0] for r in db.execute("SELECT key FROM intake")] == ["pending"]
    assert [r[0] for r in db.execute("SELECT fingerprint FROM episode")] == ["open"]
