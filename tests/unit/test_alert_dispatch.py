"""The intake journal and start dispatcher, without a server: durable acceptance, one start per
key, retries with backoff until Prefect takes the request, replay after a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from remediation.alerts import Credentials, RecordingRunStarter, StartError, create_app, load_config
from remediation.alerts.dispatch import StartDispatcher
from remediation.alerts.journal import IntakeJournal, JournalEntry
from remediation.alerts.routing import ReceiverConfig
from remediation.alerts.starter import AlertRecord, CaptureRequest, StartedRun

TOKEN = "am-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CREDS = Credentials(bearer={"alertmanager": (TOKEN.encode(),)})
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alerts"


def entry(key: str, *, record: bool = True) -> JournalEntry:
    req = CaptureRequest(deployment="capture-evidence/capture-evidence", idempotency_key=key,
                         run_name=f"capture-{key}", parameters={"incident_id": key}, tags=("incident:x",))
    rec = AlertRecord(event="remediation.alert.firing", resource_id=f"remediation.alert.{key}",
                      resource_labels={}, payload={"k": key}) if record else None
    return JournalEntry(req, rec)


class SlowStarter(RecordingRunStarter):
    delay_s = 0.05

    async def start(self, request: CaptureRequest) -> StartedRun:
        await asyncio.sleep(self.delay_s)
        return await super().start(request)


def test_journal_round_trips_requests_and_keeps_a_started_key_started(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    book = IntakeJournal(path)
    assert book.accept(entry("a"), "INC-a") is None
    assert book.accept(entry("a"), "INC-a") is None, "a repeat of a pending key is one row"
    (pending,) = book.pending()
    assert pending == entry("a")
    book.close()
    again = IntakeJournal(path)  # what a restarted receiver sees
    assert [e.request.idempotency_key for e in again.pending()] == ["a"]
    run = uuid4()
    again.started("a", run)
    assert again.pending() == [] and again.accept(entry("a"), "INC-a") == run
    assert again.counts()["started"] == 1 and again.counts()["pending"] == 0


def test_concurrent_submissions_of_one_key_start_it_once_and_repeats_come_from_memory() -> None:
    starter = SlowStarter()
    recorded: list[AlertRecord] = []

    async def go() -> list[Any]:
        d = StartDispatcher(starter, IntakeJournal(":memory:"), concurrency=2, record=recorded.append)
        tickets = await asyncio.gather(*(d.submit(entry(f"k{i % 3}"), "INC") for i in range(30)))
        await d.drain()
        return [*tickets, await d.submit(entry("k0"), "INC"), await d.submit(entry("k1"), "INC")]

    tickets = asyncio.run(go())
    assert len(starter.started) == 3, "one server call per key"
    assert sum(t.first for t in tickets) == 3
    assert [t.immediate for t in tickets if t.first] == [True, True, False], "two slots, the third queued"
    assert {t.run_id for t in tickets[-2:]} == {starter.runs_by_key["k0"], starter.runs_by_key["k1"]}
    assert sorted(r.payload["k"] for r in recorded) == ["k0", "k1", "k2"]
    assert all(r.flow_run_id == starter.runs_by_key[r.payload["k"]] for r in recorded)


def test_retryable_failures_are_retried_with_backoff_until_prefect_takes_the_run() -> None:
    starter = RecordingRunStarter(fail_with=StartError("Prefect API unreachable: ConnectError", retryable=True))
    book = IntakeJournal(":memory:")

    async def go() -> Any:
        d = StartDispatcher(starter, book, backoff_s=0.01, max_backoff_s=0.05)
        ticket = await d.submit(entry("k"), "INC")
        first = await ticket.first_attempt
        assert isinstance(first, StartError) and first.retryable
        await asyncio.sleep(0.1)
        assert book.counts()["pending"] == 1 and starter.created_runs == 0
        starter.fail_with = None
        await d.drain(timeout_s=5)
        return d

    asyncio.run(go())
    assert starter.created_runs == 1
    assert book.counts() | {"oldest_pending_s": None} == {"pending": 0, "refused": 0, "started": 1,
                                                          "oldest_pending_s": None}
    assert book.run_id("k") == starter.runs_by_key["k"]


def test_a_refusal_is_journaled_and_never_replayed(tmp_path: Path) -> None:
    starter = RecordingRunStarter(fail_with=StartError("Prefect refused the request (422): bad", retryable=False))
    book = IntakeJournal(tmp_path / "j.sqlite")

    async def go() -> None:
        d = StartDispatcher(starter, book)
        await d.submit(entry("k"), "INC")
        await d.drain()
        assert d.resume() == 0

    asyncio.run(go())
    assert book.counts()["refused"] == 1 and book.pending() == []


def test_what_a_killed_receiver_accepted_is_started_once_by_the_next(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    down = RecordingRunStarter(fail_with=StartError("Prefect API unreachable", retryable=True))

    async def accept_then_die() -> None:
        d = StartDispatcher(down, IntakeJournal(path), backoff_s=60)
        await d.submit(entry("k1"), "INC-1")
        await d.submit(entry("k2", record=False), "INC-2")
        await asyncio.sleep(0.05)
        await d.close()  # killed while its retries wait

    asyncio.run(accept_then_die())
    up = RecordingRunStarter()
    recorded: list[AlertRecord] = []

    async def restart() -> int:
        d = StartDispatcher(up, IntakeJournal(path), record=recorded.append)
        resumed = d.resume()
        await d.drain()
        assert d.resume() == 0, "nothing left to replay"
        return resumed

    assert asyncio.run(restart()) == 2
    assert sorted(up.runs_by_key) == ["k1", "k2"] and len(up.started) == 2
    assert [r.payload["k"] for r in recorded] == ["k1"], "the firing event survives the restart"


def _am(group: int, instance: int) -> bytes:
    body = json.loads((FIXTURES / "alertmanager.json").read_text())
    body["groupKey"] = f'{{}}:{{shard="s{group}"}}'
    body["alerts"][0]["fingerprint"] = f"{instance:016x}"
    return json.dumps(body).encode()


def test_a_storm_is_answered_at_once_while_runs_follow_one_per_group() -> None:
    """Only a first notification with a free start slot waits for its run id; the rest are accepted."""
    cfg = ReceiverConfig.model_validate({**load_config().model_dump(), "start_concurrency": 2})
    starter = SlowStarter()
    starter.delay_s = 0.2
    app = create_app(cfg, CREDS, starter)

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as client:
            answers = await asyncio.gather(*(client.post("/alerts/alertmanager", content=_am(i % 10, i),
                                                         headers=AUTH) for i in range(60)))
        await app.state.intake.drain()
        return list(answers)

    answers = asyncio.run(storm())
    assert {a.status_code for a in answers} == {202}
    statuses = [a.json()["status"] for a in answers]
    assert statuses.count("started") == 2, "the two that found a free slot waited for their run id"
    assert statuses.count("accepted") == 58
    assert len(starter.started) == 10 and starter.created_runs == 10
    accepted_first = [a.json() for a in answers if a.json()["status"] == "accepted" and not a.json()["deduplicated"]]
    assert len(accepted_first) == 8 and all("incident:" in a["detail"] for a in accepted_first)


@pytest.mark.parametrize("wait_s", [0.0, 5.0])
def test_start_wait_decides_whether_a_lone_alert_waits_for_its_run_id(wait_s: float) -> None:
    cfg = ReceiverConfig.model_validate({**load_config().model_dump(), "start_wait_s": wait_s})
    starter = RecordingRunStarter()
    app = create_app(cfg, CREDS, starter)

    async def one() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as client:
            resp = await client.post("/alerts/alertmanager", content=_am(1, 1), headers=AUTH)
        await app.state.intake.drain()
        return resp

    out = asyncio.run(one()).json()
    assert out["status"] == ("accepted" if wait_s == 0 else "started")
    assert starter.created_runs == 1
