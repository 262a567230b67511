"""Auditor export: every run of an incident, sealed by a hash chain; the verifier catches tampering."""

from __future__ import annotations

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
from remediation.cli import main as cli
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
    assert "OK:" in capsys.readouterr().out


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


def test_the_verifier_catches_a_modified_evidence_object(exported: dict[str, Any], stack: StackInfo,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    export = _export(exported)
    bundle = next(r["data"]["bundle"] for r in export["records"] if r["kind"] == "evidence-check")
    bucket, _, prefix = bundle.removeprefix("s3://").partition("/")
    env = stack.env()
    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name=stack.s3_region,
                      aws_access_key_id=env["RP_SANDBOX_S3_ACCESS_KEY"],
                      aws_secret_access_key=env["RP_SANDBOX_S3_SECRET_KEY"])
    key = next(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
               if not o["Key"].endswith("manifest.json"))
    s3.put_object(Bucket=bucket, Key=key, Body=b"rewritten after the fact\n")
    assert cli(["audit", "verify", exported["where"]["local"]]) == 1
    assert f"{key.rsplit('/', 1)[1]}: s3://{bucket}/{key} does not hash to" in capsys.readouterr().out
