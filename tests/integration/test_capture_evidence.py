"""capture-evidence against the sandbox: a deployment run, a fault in the bundle, planted secrets,
S3 down then sync, a failing collector, and a dry run."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
from prefect.deployments import run_deployment

from remediation.evidence.bundle import UPLOADED, load_manifest, pending_bundles
from remediation.evidence.collectors import plan_collectors
from remediation.target.secrets import SecretRef
from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration
DEPLOYMENT = "capture-evidence/capture-evidence"


@pytest.fixture
def evidence_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RP_EVIDENCE_DIR", str(tmp_path / "evidence"))
    return tmp_path / "evidence"


def _s3(stack: StackInfo) -> Any:
    return boto3.client(
        "s3", endpoint_url=stack.s3_endpoint, region_name=stack.s3_region,
        aws_access_key_id=stack.s3_access_key.get_secret_value(),
        aws_secret_access_key=stack.s3_secret_key.get_secret_value(),
    )


def _objects(stack: StackInfo, prefix: str) -> dict[str, bytes]:
    s3 = _s3(stack)
    listing = s3.list_objects_v2(Bucket=stack.s3_bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=stack.s3_bucket, Key=o["Key"])["Body"].read() for o in listing}


def _cli(*argv: str) -> int:
    from remediation.cli import main

    return main(list(argv))


def _file(report: dict[str, Any], name: str) -> str:
    return (Path(report["bundle"]) / name).read_text()


def test_deployment_run_bundle_verifies_and_planted_secrets_are_nowhere(
    stack: StackInfo, deployments: list[str], reset_platform: StackInfo
) -> None:
    env = stack.env()
    token, dsn = env["RP_SANDBOX_ADMIN_TOKEN"], env["RP_SANDBOX_DB_DSN"]
    dsn_password = psycopg.conninfo.conninfo_to_dict(dsn)["password"]
    secrets = [v for v in env.values() if len(v) > 8] + [str(dsn_password)]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    with (stack.home / "logs" / "wallet.log").open("a") as log:
        log.write(f"{stamp} ERROR debug headers: Authorization: Bearer {token}\n")
        log.write(f"{stamp} ERROR could not connect to {dsn}\n")
        log.write(f"{stamp} ERROR env dump: RP_SANDBOX_S3_SECRET_KEY={env['RP_SANDBOX_S3_SECRET_KEY']} "
                  f"RP_SANDBOX_S3_ACCESS_KEY={env['RP_SANDBOX_S3_ACCESS_KEY']}\n")
        log.write(f"{token}\n{dsn_password}\n")

    run = run_deployment(DEPLOYMENT, parameters={"incident_id": "INC-3001", "initiated_by": "pytest"}, timeout=120)
    assert run.state is not None and run.state.is_completed(), run.state
    report = run.state.result()
    from remediation.target.inventory import load_target

    sandbox = load_target("sandbox")
    planned = plan_collectors(sandbox, sandbox.evidence_profiles["default"])
    # Every collector captured but Prometheus's: the sandbox has none (its Redis and RabbitMQ are real).
    assert report["uploaded"] and report["counts"] == {"ok": len(planned) - 1, "failed": 0, "not_configured": 1}
    manifest = load_manifest(Path(report["bundle"]))
    assert manifest.flow_run_id == str(run.id) and manifest.initiated_by == "pytest"
    wallet = next(r for r in manifest.collectors if r.collector == "logs-wallet")
    assert wallet.redactions >= 6, wallet

    prefix = report["s3"].removeprefix(f"s3://{stack.s3_bucket}/")
    assert _cli("evidence", "verify", report["s3"], "--target", "sandbox") == 0
    assert _cli("evidence", "verify", report["s3"]) == 0, "the target defaults to the manifest's"
    assert _cli("evidence", "verify", report["s3"].replace(stack.s3_bucket, "no-such-bucket", 1)) == 2
    assert _cli("evidence", "verify", report["bundle"]) == 0

    stored: dict[str, bytes] = {p.name: p.read_bytes() for p in Path(report["bundle"]).iterdir() if p.is_file()}
    stored.update(_objects(stack, prefix))
    assert len(stored) >= 2 * (report["counts"]["ok"] + 1)  # each file and the manifest, local and in S3
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run.id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    assert {"incident:INC-3001", "runbook:capture-evidence", "target:sandbox"} <= set(flow_run.tags)
    md = next(a for a in artifacts if a.key == "evidence-inc-3001")
    assert prefix in str(md.data) and "logs-wallet" in str(md.data)
    assert logs, "the run's logs reached the server"
    texts = {f"stored {k}": v.decode("utf-8", "replace") for k, v in stored.items()}
    texts |= {f"artifact {a.key}": f"{a.data} {a.description}" for a in artifacts}
    texts["logs"] = "\n".join(entry.message for entry in logs)
    texts["result"] = json.dumps(report)
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret reached {where}"


def test_wedged_writer_shows_in_the_bundle(
    stack: StackInfo, reset_platform: StackInfo, evidence_dir: Path
) -> None:
    from flows.capture_evidence import capture_evidence
    from sandbox.faults import HOLDER_APP, wedge_off, wedge_on

    dsn = stack.platform_dsn.get_secret_value()
    waiter_error: list[BaseException] = []

    def wait_for_bucket() -> None:
        # A second writer queued behind the holder: the ungranted lock the bundle must show.
        try:
            with psycopg.connect(dsn, application_name="rp-test-waiter", autocommit=True) as conn:
                conn.execute("SET lock_timeout = '20s'")
                with conn.transaction():
                    conn.execute("LOCK TABLE bucket IN SHARE ROW EXCLUSIVE MODE")
        except psycopg.Error as exc:
            waiter_error.append(exc)

    wedge_on(dsn, "hang")
    waiter = threading.Thread(target=wait_for_bucket, daemon=True)
    try:
        waiter.start()
        time.sleep(0.5)
        state = capture_evidence("INC-3002", initiated_by="pytest", return_state=True)
    finally:
        wedge_off(dsn)
        waiter.join(30)
    report = state.result(raise_on_failure=False)
    health = json.loads(_file(report, "gateway-health.json"))
    deep = next(c for c in health["checks"] if c["path"] == "/health/deep")
    assert deep["http_status"] == 503 and deep["body"]["status"] == "degraded"
    activity = json.loads(_file(report, "pg-activity.json"))["rows"]
    holder = [r for r in activity if r["application_name"] == HOLDER_APP]
    assert holder and "pg_sleep" in holder[0]["query"]
    locks = json.loads(_file(report, "pg-locks.json"))["rows"]
    waiting = [r for r in locks if not r["granted"] and r["application_name"] == "rp-test-waiter"]
    assert waiting and holder[0]["pid"] in waiting[0]["blocked_by"]
    assert any(r["granted"] and r["pid"] == holder[0]["pid"] and r["relation"] == "bucket" for r in locks)


def test_s3_down_keeps_the_bundle_and_sync_uploads_it_once(
    stack: StackInfo, reset_platform: StackInfo, evidence_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.capture_evidence as fce
    from remediation.clients.evidence_store import S3EvidenceStore, make_s3_client
    from remediation.evidence.sync import sync_bundles
    from remediation.target import connect

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with monkeypatch.context() as m:
        # S3 "down" for this test only: the shared moto server stays up for everyone else.
        m.setattr(connect, "evidence_store", lambda target, **_: S3EvidenceStore(
            make_s3_client(f"http://127.0.0.1:{closed_port}", "us-east-1", None, None,
                           connect_timeout=1, max_attempts=1), target.evidence.bucket))
        m.setattr(fce, "upload_evidence_bundle", fce.upload_evidence_bundle.with_options(retries=0))
        state = fce.capture_evidence("INC-3003", initiated_by="pytest", return_state=True)
    assert state.is_failed() and "S3 upload pending" in str(state.message)
    report = state.result(raise_on_failure=False)
    bundle = Path(report["bundle"])
    assert report["counts"]["failed"] == 0 and not (bundle / UPLOADED).exists()
    assert pending_bundles(evidence_dir) == [bundle]

    real_database = connect.database
    with monkeypatch.context() as m:
        # The target's database down too when S3 returns: uploaded, but its anchor pending.
        m.setattr(connect, "database", lambda target, *a, **k: real_database(
            target.model_copy(update={"database": target.database.model_copy(
                update={"dsn": SecretRef(env="RP_TEST_CLOSED_DSN"), "connect_timeout_s": 1})}), *a, **k))
        m.setenv("RP_TEST_CLOSED_DSN", f"postgresql://nobody@127.0.0.1:{closed_port}/x")
        first = sync_bundles(evidence_dir)
    assert [(r["uploaded"], r["error"].startswith("anchor not recorded")) for r in first] == [(True, True)]
    assert _cli("evidence", "verify", str(bundle)) == 1  # in S3 and intact, but nothing outside vouches for it
    second = sync_bundles(evidence_dir)
    assert [(r["uploaded"], "error" in r, "anchored" in r) for r in second] == [(False, False, True)]
    assert sync_bundles(evidence_dir) == [] and pending_bundles(evidence_dir) == []
    prefix = load_manifest(bundle).s3_prefix
    objects = _objects(stack, prefix + "/")
    files = [r.file for r in load_manifest(bundle).collectors if r.file]
    assert sorted(objects) == sorted(f"{prefix}/{f}" for f in [*files, "manifest.json"])
    assert _cli("evidence", "sync", "--root", str(evidence_dir)) == 0  # nothing left: still fine
    assert _cli("evidence", "verify", str(bundle)) == 0


def test_a_failing_collector_loses_nothing_else(
    stack: StackInfo, reset_platform: StackInfo, evidence_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.capture_evidence as fce
    from remediation.target.evidence_profile import ExtraCommand
    from remediation.target.inventory import load_target

    real = load_target("sandbox")
    default = real.evidence_profiles["default"]
    broken = default.model_copy(update={"extra_commands": [
        *default.extra_commands, ExtraCommand(name="broken", argv=["cat", "/nonexistent/rp-evidence-test"])]})
    monkeypatch.setattr(fce, "load_target", lambda name: real.model_copy(
        update={"evidence_profiles": {"default": broken}}))
    state = fce.capture_evidence("INC-3004", initiated_by="pytest", return_state=True)
    assert state.is_failed()
    runnable = sum(s.configured for s in plan_collectors(real, broken))
    assert str(state.message).startswith(f"1 of {runnable} collectors failed (cmd-broken)"), state.message
    assert "uploaded, verified and anchored" in str(state.message)
    report = state.result(raise_on_failure=False)
    records = {r["collector"]: r for r in report["collectors"]}
    assert records["cmd-broken"]["exit_status"] == 1 and "No such file" in _file(report, "cmd-broken.txt")
    assert all(r["status"] == "ok" for n, r in records.items() if n != "cmd-broken" and r["status"] != "not_configured")
    assert report["uploaded"]


def test_dry_run_touches_nothing(stack: StackInfo, evidence_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.capture_evidence import capture_evidence

    for name in stack.env():
        monkeypatch.delenv(name, raising=False)
    state = capture_evidence("INC-3005", dry_run=True, return_state=True)
    assert state.is_completed()
    plan = {p["collector"]: p for p in state.result()["plan"]}
    assert plan["logs-wallet"]["would_run"].endswith("tail -n 500 /tmp/rp-sandbox/logs/wallet.log")
    assert plan["redis-info"]["configured"] and not plan["prometheus-error-rate"]["configured"]
    assert not evidence_dir.exists()
