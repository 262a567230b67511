"""Auditor export: every run of an incident, sealed by a hash chain; the verifier catches tampering."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
from psycopg.conninfo import conninfo_to_dict

from flows.audit_export import audit_export
from flows.capture_evidence import capture_evidence
from flows.verify_round_trip import verify_round_trip
from remediation.audit.chain import chain, head_of, sign_head
from remediation.cli import main as cli
from remediation.evidence.anchored import anchor_for
from remediation.target.inventory import load_target
from sandbox.stack.info import StackInfo
from tests.integration.flow_runs import incident

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exported(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    os.environ["RP_EVIDENCE_DIR"] = str(tmp_path_factory.mktemp("evidence"))
    inc = incident()
    assert capture_evidence(incident_id=inc, initiated_by="alert:pytest", return_state=True).is_completed()
    assert verify_round_trip(incident_id=inc, brands=["alpha"], initiated_by="carol", return_state=True).is_completed()
    state = audit_export(incident_id=inc, return_state=True)
    assert state.is_completed(), state.message
    out = cast(dict[str, Any], state.result())
    return {"incident": inc, **out}


def _export(exported: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((Path(exported["where"]["local"]) / "export.json").read_text()))


def test_the_export_holds_every_run_with_states_parameters_and_evidence(exported: dict[str, Any]) -> None:
    assert exported["problems"] == [] and exported["runs"] >= 2
    export = _export(exported)
    runs = [r["data"] for r in export["records"] if r["kind"] == "flow-run"]
    flows = [r["flow"] for r in runs]
    assert "capture-evidence" in flows and "verify-round-trip" in flows
    for run in runs:
        assert run["states"] and all(s["at"] for s in run["states"])
        assert run["final"]["type"] == "COMPLETED" and f"incident:{exported['incident']}" in run["tags"]
    capture = next(r for r in runs if r["flow"] == "capture-evidence")
    assert capture["parameters"]["initiated_by"] == "alert:pytest"
    checks = [r["data"] for r in export["records"] if r["kind"] == "evidence-check"]
    assert len(checks) == 1 and checks[0]["ok"] and checks[0]["files"] > 3
    assert any(r["kind"] == "task-run" for r in export["records"])
    report = (Path(exported["where"]["local"]) / "report.md").read_text()
    assert exported["incident"] in report and "Evidence re-verified in S3" in report


def test_no_secret_value_reaches_the_export(exported: dict[str, Any], stack: StackInfo) -> None:
    text = (Path(exported["where"]["local"]) / "export.json").read_text()
    secrets = [v for k, v in stack.env().items() if k.startswith("RP_SANDBOX_") and len(v) >= 8]
    secrets.append(str(conninfo_to_dict(stack.platform_dsn.get_secret_value())["password"]))
    assert secrets and not [s for s in secrets if s in text]


def test_the_verifier_passes_an_untouched_export(exported: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["audit", "verify", exported["where"]["local"]]) == 0
    assert cli(["audit", "verify", exported["where"]["s3"]]) == 0
    assert "OK:" in (out := capsys.readouterr().out) and "against the signed chain head" in out
    assert exported["chain_head"]["signature"]["key"] == "env:RP_SANDBOX_AUDIT_SIGNING_KEY"


def test_the_verifier_catches_a_changed_record(exported: dict[str, Any], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    export = _export(exported)
    run = next(r for r in export["records"] if r["kind"] == "flow-run")
    run["data"]["parameters"]["initiated_by"] = "mallory"
    copy = tmp_path / Path(exported["where"]["local"]).name
    copy.mkdir()
    (copy / "export.json").write_text(json.dumps(export))
    assert cli(["audit", "verify", str(copy)]) == 1
    assert "content changed since export" in capsys.readouterr().out


def _s3(stack: StackInfo) -> Any:
    env = stack.env()
    return boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name=stack.s3_region,
                        aws_access_key_id=env["RP_SANDBOX_S3_ACCESS_KEY"],
                        aws_secret_access_key=env["RP_SANDBOX_S3_SECRET_KEY"])


def test_the_capture_recorded_its_anchor_outside_the_bucket(exported: dict[str, Any], stack: StackInfo) -> None:
    export = _export(exported)
    capture = next(r["data"] for r in export["records"]
                   if r["kind"] == "flow-run" and r["data"]["flow"] == "capture-evidence")
    prefix = capture["result"]["s3"].removeprefix(f"s3://{stack.s3_bucket}/").strip("/")
    anchor = anchor_for(load_target("sandbox"), prefix)
    assert anchor is not None and anchor.kind == "bundle" and anchor.incident_id == exported["incident"]
    assert anchor.sha256 == capture["result"]["manifest_sha256"]
    assert capture["result"]["anchor"]["versions"] == {n: o.version_id for n, o in anchor.objects.items()}
    latest = _s3(stack).head_object(Bucket=stack.s3_bucket, Key=anchor.objects["manifest.json"].key)
    assert latest["VersionId"] == anchor.objects["manifest.json"].version_id


def test_a_file_and_its_manifest_rewritten_with_matching_metadata_are_both_named(
    exported: dict[str, Any], stack: StackInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    """Anyone with the writer's s3:PutObject: a new file, a new manifest naming its hash, both with the
    sha256 metadata our uploads write. The bundle is consistent with itself; the anchor is not fooled."""
    export = _export(exported)
    bundle = next(r["data"]["bundle"] for r in export["records"] if r["kind"] == "evidence-check")
    bucket, _, prefix = bundle.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    s3 = _s3(stack)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    victim = next(c for c in manifest["collectors"] if c.get("file"))
    forged = b"rewritten after the fact\n"
    victim["sha256"], victim["bytes"] = hashlib.sha256(forged).hexdigest(), len(forged)
    new_manifest = json.dumps(manifest).encode()
    for key, body in ((f"{prefix}/{victim['file']}", forged), (f"{prefix}/manifest.json", new_manifest)):
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"sha256": hashlib.sha256(body).hexdigest()})
    capsys.readouterr()
    assert cli(["evidence", "verify", bundle]) == 1
    out = capsys.readouterr().out
    assert f"MISMATCH {victim['file']}: a newer version" in out and "MISMATCH manifest.json: a newer version" in out
    assert cli(["audit", "verify", exported["where"]["local"]]) == 1
    out = capsys.readouterr().out
    assert f"{victim['file']}: a newer version" in out and "manifest.json: a newer version" in out


def test_a_rewritten_export_with_a_recomputed_chain_and_head_is_refused(
    exported: dict[str, Any], stack: StackInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole export rewritten consistently in S3 (records, chain, head), signed with a guessed key."""
    where = exported["where"]
    prefix = where["s3"].removeprefix(f"s3://{stack.s3_bucket}/").strip("/")
    export = _export(exported)
    items = [(r["kind"], r["data"]) for r in export["records"]]
    items[0][1]["parameters"]["initiated_by"] = "mallory"
    export["records"] = chain(items)
    export["chain_head"] = head_of(export["records"])
    body = json.dumps(export).encode()
    head = sign_head({**export["chain_head"], "incident_id": export["incident_id"],
                      "generated_at": export["generated_at"], "export_sha256": hashlib.sha256(body).hexdigest()},
                     b"a guessed key", "env:RP_SANDBOX_AUDIT_SIGNING_KEY")
    s3 = _s3(stack)
    for name, data in (("export.json", body), ("chain-head.json", json.dumps(head).encode())):
        s3.put_object(Bucket=stack.s3_bucket, Key=f"{prefix}/{name}", Body=data,
                      Metadata={"sha256": hashlib.sha256(data).hexdigest()})
    capsys.readouterr()
    assert cli(["audit", "verify", where["s3"]]) == 1
    out = capsys.readouterr().out
    assert "signature does not verify" in out
    assert "differs from the one recorded in the target's database" in out
    assert "MISMATCH export export.json: a newer version" in out and "export chain-head.json: a newer version" in out


def test_stored_results_read_what_prefect_reads_with_each_storage_loaded_once(
    exported: dict[str, Any], deployments: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.client.orchestration import get_client

    from remediation.audit import history, stored_results
    from tests.integration.flow_runs import finish, start

    # A run of the deployment stores its result in the S3 block; the runs made in this process keep
    # theirs without a block (Prefect's own read, the fallback).
    deployed = finish(start("verify-round-trip/verify-round-trip", incident_id=exported["incident"],
                            brands=["alpha"], initiated_by="carol"), timeout_s=120)
    assert deployed.state is not None and deployed.state.is_completed()
    loaded: list[Any] = []
    resolve = stored_results.resolve_result_storage
    monkeypatch.setattr(stored_results, "resolve_result_storage", lambda ref: loaded.append(ref) or resolve(ref))
    with get_client(sync_client=True) as client:
        runs = [r for r in history.incident_runs(client, exported["incident"]) if r.state and r.state.is_final()]
    blocks = {r.state.data.storage_block_id for r in runs if getattr(r.state.data, "storage_block_id", None)}
    assert len(runs) >= 3 and blocks, "runs from this process and from the deployment"
    results = stored_results.StoredResults()
    read = [results.read(r.state) for r in runs]
    assert read == [r.state.result(raise_on_failure=False) for r in runs]
    assert all(isinstance(value, dict) and value for value in read)
    assert [results.read(r.state) for r in runs] == read
    assert len(loaded) == len(blocks), "each result storage block loaded once, not once per result"
