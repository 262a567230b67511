"""The receiver as real processes against the real Prefect server, and fed by a real Alertmanager."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun

from sandbox.stack.info import StackInfo
from tests.fixtures.alert_capture import delete_parked_runs, park_capture_deployment, real_flow_exists
from tests.fixtures.alert_receiver_proc import ReceiverProcess, free_port, write_routes

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alerts"
PARKED = ("alert-receiver-test", "rp-alert-receiver-tests")
TOKEN = "it-" + uuid.uuid4().hex
#: Each source its own token (the receiver refuses to start when two share one).
ENV = {"RP_ALERT_TOKEN": TOKEN, "RP_GRAFANA_ALERT_TOKEN": "it-grafana-" + uuid.uuid4().hex,
       "RP_GENERIC_ALERT_TOKEN": "it-generic-" + uuid.uuid4().hex,
       "RP_SENTRY_CLIENT_SECRET": "it-sentry-" + uuid.uuid4().hex}


@pytest.fixture(scope="module")
def parked(stack: StackInfo) -> str:
    return park_capture_deployment(*PARKED)


@pytest.fixture
def created_runs() -> Iterator[set[str]]:
    ids: set[str] = set()
    yield ids
    delete_parked_runs(ids, PARKED[1])


def deployment_id(name: str) -> uuid.UUID:
    with get_client(sync_client=True) as c:
        return c.read_deployment_by_name(name).id


def runs_tagged(deployment: str, tag: str) -> list[FlowRun]:
    with get_client(sync_client=True) as c:
        return c.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id(deployment)])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])),
        )


def events_for(resource_id: str) -> list[dict[str, Any]]:
    api = os.environ["PREFECT_API_URL"]
    resp = httpx.post(f"{api}/events/filter", json={"filter": {"resource": {"id": [resource_id]}}, "limit": 50})
    resp.raise_for_status()
    return list(resp.json()["events"])


def alertmanager_payload(group_key: str, starts_at: datetime, status: str = "firing") -> dict[str, Any]:
    body = json.loads((FIXTURES / "alertmanager.json").read_text())
    body["groupKey"] = group_key
    body["status"] = status
    for i, alert in enumerate(body["alerts"]):
        alert["status"] = status
        alert["startsAt"] = (starts_at + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
    return body


async def _post_all(urls: list[str], body: dict[str, Any], per_url: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(
            client.post(f"{u}/alerts/alertmanager", json=body, headers=headers) for u in urls for _ in range(per_url)
        ))


def test_two_receiver_processes_and_a_restart_start_one_run(
    parked: str, tmp_path: Path, created_runs: set[str]
) -> None:
    routes = write_routes(tmp_path / "routes.toml", parked)
    a = ReceiverProcess(routes, ENV, tmp_path / "a.log").start()
    b = ReceiverProcess(routes, ENV, tmp_path / "b.log").start()
    try:
        body = alertmanager_payload(f"{{}}:{{it=\"{uuid.uuid4().hex}\"}}", datetime.now(UTC).replace(microsecond=0))
        responses = asyncio.run(_post_all([a.url, b.url], body, per_url=10))
        assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
        outs = [r.json() for r in responses]
        run_ids = {rid for o in outs for rid in o["flow_run_ids"]}
        created_runs.update(run_ids)
        incident = outs[0]["incident_id"]
        assert len(run_ids) == 1 and {o["incident_id"] for o in outs} == {incident}
        assert sum(not o["deduplicated"] for o in outs) == 1, "exactly one answer says it started the run"
        # Alertmanager's token is not Grafana's.
        other = httpx.post(f"{a.url}/alerts/grafana", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert other.status_code == 401

        (run,) = runs_tagged(parked, f"incident:{incident}")
        assert str(run.id) in run_ids
        assert {f"incident:{incident}", "runbook:capture-evidence", "target:sandbox", "alert:alertmanager",
                "severity:sev1"} <= set(run.tags)
        assert run.parameters["incident_id"] == incident and run.parameters["dry_run"] is False
        assert run.parameters["alert"]["group_key"] == body["groupKey"]
        assert run.name == f"capture-{incident}"

        # A restarted replica has an empty cache: the server's idempotency key still holds.
        a.stop()
        a = ReceiverProcess(routes, ENV, tmp_path / "a2.log").start()
        again = asyncio.run(_post_all([a.url], body, per_url=1))[0].json()
        assert again["deduplicated"] is True and set(again["flow_run_ids"]) == run_ids
        assert len(runs_tagged(parked, f"incident:{incident}")) == 1

        # Resolved: recorded as an event on the group's resource, nothing started.
        resolved = asyncio.run(_post_all([b.url], alertmanager_payload(
            body["groupKey"], datetime.fromisoformat(body["alerts"][0]["startsAt"]), "resolved"), 1))[0].json()
        assert resolved["status"] == "resolved" and resolved["incident_id"] == incident
        assert resolved["flow_run_ids"] == []
        resource = f"remediation.alert.{run.parameters['alert']['fingerprint']}"
        deadline = time.monotonic() + 30
        names: set[str] = set()
        while time.monotonic() < deadline and "remediation.alert.resolved" not in names:
            names = {e["event"] for e in events_for(resource)}
            time.sleep(0.5)
        assert {"remediation.alert.firing", "remediation.alert.resolved"} <= names
        ev = next(e for e in events_for(resource) if e["event"] == "remediation.alert.firing")
        assert ev["resource"]["remediation.incident-id"] == incident
        assert any(r["prefect.resource.id"] == f"prefect.flow-run.{run.id}" for r in ev["related"])
        assert len(runs_tagged(parked, f"incident:{incident}")) == 1
    finally:
        a.stop()
        b.stop()
    for log in tmp_path.glob("*.log"):
        assert TOKEN not in log.read_text(), "the bearer token reached a receiver log"


# --- a real Alertmanager -------------------------------------------------------------------------
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
AMTOOL = "/usr/bin/amtool"


class Alertmanager:
    def __init__(self, home: Path, receiver_url: str, group_interval: str = "10m") -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home.mkdir(parents=True, exist_ok=True)
        (home / "token").write_text(TOKEN)
        (home / "token").chmod(0o600)
        (home / "alertmanager.yml").write_text(f"""
route:
  receiver: remediation
  group_by: [alertname, env, itrun]
  group_wait: 1s
  group_interval: {group_interval}
  repeat_interval: 12h
receivers:
  - name: remediation
    webhook_configs:
      - url: {receiver_url}/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {home / "token"}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Alertmanager:
        storage = self.home / "data"
        storage.mkdir(exist_ok=True)
        with open(self.home / "alertmanager.log", "ab") as log:
            self.proc = subprocess.Popen(
                [ALERTMANAGER, f"--config.file={self.home / 'alertmanager.yml'}", f"--storage.path={storage}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError((self.home / "alertmanager.log").read_text()[-3000:])

    def amtool_add(self, labels: dict[str, str], start: datetime, end: datetime | None = None) -> None:
        subprocess.run(
            [AMTOOL, "alert", "add", *(f"{k}={v}" for k, v in labels.items()),
             "--annotation=summary=Deposit error rate above 5%", f"--start={start.isoformat()}",
             *([f"--end={end.isoformat()}"] if end else []), f"--alertmanager.url={self.url}"],
            check=True, capture_output=True, timeout=30,
        )

    def webhook_sent(self) -> tuple[float, float]:
        metrics = httpx.get(f"{self.url}/metrics", timeout=5).text
        def value(name: str) -> float:
            for line in metrics.splitlines():
                if line.startswith(name) and 'integration="webhook"' in line and "{" in line:
                    return float(line.rsplit(" ", 1)[1])
            return 0.0
        return value("alertmanager_notifications_total"), value("alertmanager_notifications_failed_total")

    def wait_sent(self, timeout_s: float = 30, count: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            sent, failed = self.webhook_sent()
            assert failed == 0, (self.home / "alertmanager.log").read_text()[-3000:]
            if sent >= count:
                return
            time.sleep(0.3)
        raise TimeoutError("Alertmanager sent no webhook:\n" + (self.home / "alertmanager.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


@pytest.fixture
def capture_deployment(request: pytest.FixtureRequest, stack: StackInfo) -> str:
    """The real capture-evidence deployment once the flow exists; until then the parked stand-in."""
    if real_flow_exists():
        request.getfixturevalue("deployments")
        return "capture-evidence/capture-evidence"
    return str(request.getfixturevalue("parked"))


def _runs_with_label(deployment: str, label: str, value: str) -> list[FlowRun]:
    return [r for r in runs_tagged(deployment, "alert:alertmanager")
            if (r.parameters.get("alert") or {}).get("labels", {}).get(label) == value]


def test_an_alert_accepted_while_prefect_refuses_is_started_once_after_a_crash(
    stack: StackInfo, tmp_path: Path, created_runs: set[str]
) -> None:
    """202 = journaled: the deployment is missing (Prefect answers 404, retryable), the receiver is
    killed, the deployment appears, and the next receiver on the same journal starts the run once."""
    name = f"alert-journal-{uuid.uuid4().hex[:8]}"
    deployment = f"capture-evidence/{name}"
    routes = write_routes(tmp_path / "routes.toml", deployment)
    journal = tmp_path / "intake.sqlite"
    body = alertmanager_payload(f"{{}}:{{it=\"{uuid.uuid4().hex}\"}}", datetime.now(UTC).replace(microsecond=0))
    first = ReceiverProcess(routes, ENV, tmp_path / "first.log", journal=journal).start()
    try:
        out = asyncio.run(_post_all([first.url], body, per_url=3))
        assert [r.status_code for r in out] == [202, 202, 202], [r.text for r in out]
        answers = [r.json() for r in out]
        assert {a["status"] for a in answers} == {"accepted"} and all(a["flow_run_ids"] == [] for a in answers)
        assert sum(not a["deduplicated"] for a in answers) == 1
        assert "not registered" in next(a for a in answers if not a["deduplicated"])["detail"]
        assert httpx.get(f"{first.url}/healthz").json()["intake"]["pending"] == 1
    finally:
        first.kill()
    park_capture_deployment(name, PARKED[1])
    second = ReceiverProcess(routes, ENV, tmp_path / "second.log", journal=journal).start()
    try:
        deadline = time.monotonic() + 30
        while httpx.get(f"{second.url}/healthz").json()["intake"]["pending"] and time.monotonic() < deadline:
            time.sleep(0.2)
        runs = runs_tagged(deployment, f"incident:{answers[0]['incident_id']}")
        created_runs.update(str(r.id) for r in runs)
        assert len(runs) == 1, "started once, from the journal"
        again = asyncio.run(_post_all([second.url], body, per_url=1))[0].json()
        assert again["deduplicated"] is True and again["flow_run_ids"] == [str(runs[0].id)]
        assert "resuming 1 accepted alert" in (tmp_path / "second.log").read_text()
    finally:
        second.stop()
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id(deployment))


def test_real_alertmanager_starts_exactly_one_capture_per_group(
    stack: StackInfo, capture_deployment: str, tmp_path: Path, created_runs: set[str]
) -> None:
    routes = write_routes(tmp_path / "routes.toml", capture_deployment)
    receiver = ReceiverProcess(routes, ENV, tmp_path / "receiver.log").start()
    itrun = uuid.uuid4().hex[:12]
    labels = {"alertname": "WalletDepositErrors", "env": "sandbox", "itrun": itrun, "service": "wallet"}
    start = datetime.now(UTC).replace(microsecond=0)
    am = Alertmanager(tmp_path / "am1", receiver.url)
    am2: Alertmanager | None = None
    try:
        am.start()
        am.amtool_add(labels, start)
        am.wait_sent()
        deadline = time.monotonic() + 30
        runs: list[FlowRun] = []
        while time.monotonic() < deadline and not runs:
            runs = _runs_with_label(capture_deployment, "itrun", itrun)
            time.sleep(0.3)
        created_runs.update(str(r.id) for r in runs)
        assert len(runs) == 1, runs
        (run,) = runs
        incident = run.parameters["incident_id"]
        assert {f"incident:{incident}", "runbook:capture-evidence", "target:sandbox",
                "alert:alertmanager"} <= set(run.tags)
        assert run.parameters["initiated_by"].startswith("alert:alertmanager:")

        # The same group again from the same Alertmanager: grouped, no second notification or run.
        am.amtool_add(labels, start)
        # ...and from a fresh Alertmanager (a restart that lost its state, or an HA peer): it does
        # notify again, with the same group key and start, and the receiver's key holds.
        am.stop()
        am2 = Alertmanager(tmp_path / "am2", receiver.url).start()
        am2.amtool_add(labels, start)
        am2.wait_sent()
        time.sleep(1.0)
        again = _runs_with_label(capture_deployment, "itrun", itrun)
        created_runs.update(str(r.id) for r in again)
        assert [r.id for r in again] == [run.id], "re-sending the group started a second run"

        if real_flow_exists():
            _assert_bundle_in_s3(run.id, incident)
    finally:
        am.stop()
        if am2 is not None:
            am2.stop()
        receiver.stop()
    assert TOKEN not in (tmp_path / "receiver.log").read_text()


def test_the_oldest_alert_resolving_first_keeps_the_incident_through_real_alertmanager(
    stack: StackInfo, capture_deployment: str, tmp_path: Path, created_runs: set[str]
) -> None:
    """Alertmanager's own sequence: the group's oldest alert resolves (sent once as resolved, then
    dropped), another joins, then all resolve. One incident id throughout, one capture run."""
    routes = write_routes(tmp_path / "routes.toml", capture_deployment)
    log = tmp_path / "receiver.log"
    receiver = ReceiverProcess(routes, ENV, log).start()
    itrun = uuid.uuid4().hex[:12]
    group = {"alertname": "WalletDepositErrors", "env": "sandbox", "itrun": itrun, "service": "wallet"}
    now = datetime.now(UTC).replace(microsecond=0)
    oldest, newer, joined = ({**group, "instance": i} for i in ("wallet-1", "wallet-2", "wallet-3"))
    am = Alertmanager(tmp_path / "am", receiver.url, group_interval="1s")
    try:
        am.start()
        am.amtool_add(oldest, now - timedelta(minutes=20))
        am.amtool_add(newer, now - timedelta(minutes=5))
        am.wait_sent(count=1)
        am.amtool_add(oldest, now - timedelta(minutes=20), end=datetime.now(UTC))  # the oldest resolves
        am.wait_sent(count=2)
        am.amtool_add(joined, now - timedelta(minutes=1))
        am.wait_sent(count=3)
        for labels, start in ((newer, now - timedelta(minutes=5)), (joined, now - timedelta(minutes=1))):
            am.amtool_add(labels, start, end=datetime.now(UTC))
        am.wait_sent(count=4)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and " resolved: group " not in log.read_text():
            time.sleep(0.2)
        runs = _runs_with_label(capture_deployment, "itrun", itrun)
        created_runs.update(str(r.id) for r in runs)
    finally:
        am.stop()
        receiver.stop()
    assert len(runs) == 1, runs
    incident = runs[0].parameters["incident_id"]
    named = {line.split()[line.split().index("alertmanager") + 1] for line in log.read_text().splitlines()
             if "alert alertmanager INC-" in line}
    assert named == {incident}, f"the incident was renamed along the way: {named}"
    assert " resolved: group " in log.read_text()


def _assert_bundle_in_s3(run_id: uuid.UUID, incident: str) -> None:
    """The real capture run finishes and its bundle is in S3 with every object re-verifying."""
    from remediation.target.connect import evidence_store
    from remediation.target.inventory import load_target

    deadline = time.monotonic() + 300
    with get_client(sync_client=True) as c:
        run = c.read_flow_run(run_id)
        while time.monotonic() < deadline and not (run.state and run.state.is_final()):
            time.sleep(1)
            run = c.read_flow_run(run_id)
    assert run.state is not None and run.state.is_final(), run.state
    assert not run.state.is_crashed() and not run.state.is_cancelled(), run.state
    target = load_target("sandbox")
    store = evidence_store(target)
    manifests = [o.key for o in store.list("") if o.key.endswith(f"/{incident}/{run_id}/manifest.json")]
    assert len(manifests) == 1, f"no single manifest.json for {incident} run {run_id} in S3: {manifests}"
    from remediation.evidence.bundle import verify_s3
    from remediation.evidence.sync import fetch_manifest

    prefix = manifests[0].rsplit("/", 1)[0]
    manifest, problems = verify_s3(store, fetch_manifest(target, manifests[0]), prefix)
    assert problems == [], problems
    assert manifest.incident_id == incident and manifest.flow_run_id == str(run_id)
    assert manifest.initiated_by.startswith("alert:alertmanager:")
    assert manifest.alert is not None and manifest.alert["source"] == "alertmanager"
