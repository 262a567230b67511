"""A secret the target knows, leaked three ways, is found in zero stored bytes.

The sandbox admin token (a value the target resolves) is put in a commit subject, printed by a
rebuild inside a PEM block (its base64, 12 characters a line, so only the key-block rule can catch
the lines) and to stderr by the failing rebuild — and by an evidence command running the same
script. Then every place Prefect, the evidence bundle and the audit export stored anything is read
back: the run logs via the API, every flow and task run state message, artifacts, persisted results,
the local bundle and export, and their S3 objects. Neither the secret nor any of its percent-,
JSON- or base64-encoded forms, nor one line of the key block, may be in any of it.

In-process runs of the smallest flows that hit those paths (a drill flow of the rollback tasks, a
capture with only the host-git and leaky collectors, the audit export): about 15 s.
"""

from __future__ import annotations

import base64
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import boto3
import pytest
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler
from prefect.states import Completed, Failed, State

import flows.capture_evidence as capture_module
from flows.audit_export import audit_export
from flows.capture_evidence import capture_evidence
from remediation.audit.history import incident_runs
from remediation.domain.rollback import summary_markdown
from remediation.evidence.redact import literal_forms
from remediation.flowkit.run_context import tag_current_run
from remediation.target.evidence_profile import (
    DiskCollector,
    EvidenceProfile,
    ExtraCommand,
    HealthCollector,
    PostgresCollector,
    PrometheusCollector,
    ServiceLogsCollector,
)
from remediation.target.inventory import Target, load_target
from sandbox.stack.info import StackInfo
from tasks.git import plan_revert
from tasks.host import get_deployed_revision, rebuild_on_host
from tests.integration.flow_runs import incident
from tests.unit.test_git_repo import commit_file, git

pytestmark = pytest.mark.integration

#: The leaky "rebuild": the secret in a log line, as base64 in a PEM block, inside a longer base64
#: blob, and on stderr; then it fails. The secret is read from a file: never in a command line.
LEAK = textwrap.dedent("""\
    #!/bin/sh
    s=$(cat "$(dirname "$0")/secret")
    echo "rebuilding with $s"
    echo "-----BEGIN OPENSSH PRIVATE KEY-----"
    printf '%s' "$s" | base64 -w0 | fold -w 12
    echo
    echo "-----END OPENSSH PRIVATE KEY-----"
    printf 'blob=%s\\n' "$(printf 'ops:%s:x' "$s" | base64 -w0)"
    echo "fatal: could not authenticate with $s" >&2
    exit 3
""")


def _needles(secret: str) -> dict[str, bytes]:
    """Every form of the secret that must not be stored, named without showing it."""
    found = {f"form {i}": f.encode() for i, f in enumerate(sorted(literal_forms(secret)))}
    encoded = base64.b64encode(secret.encode()).decode()
    found |= {f"key-block line {i}": line.encode() for i, line in enumerate(textwrap.wrap(encoded, 12))
              if len(line) == 12}
    return found


def _drill_target(base: Target, checkout: Path, remote: Path, script: Path) -> Target:
    host = base.deploy_host.model_copy(update={"checkout_dir": str(checkout), "rebuild": [["sh", str(script)]]})
    # Only the host's git log (the leaky subject) and the leaky command: the smallest capture there is.
    profile = EvidenceProfile(
        health=HealthCollector(enabled=False), prometheus=PrometheusCollector(enabled=False),
        service_logs=ServiceLogsCollector(enabled=False), postgres=PostgresCollector(enabled=False),
        disk=DiskCollector(enabled=False), extra_commands=[ExtraCommand(name="leaky", argv=["sh", str(script)])],
    )
    return base.model_copy(update={
        "hosts": {**base.hosts, base.git.deploy_host: host},
        "git": base.git.model_copy(update={"remote": str(remote)}),
        "evidence_profiles": {"default": profile},
    })


def _repo_with_a_leaky_subject(tmp: Path, secret: str) -> tuple[Path, Path, str]:
    remote = tmp / "servers_v2.git"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(remote))
    seed = tmp / "seed"
    git(tmp, "clone", "-q", str(remote), str(seed))
    git(seed, "checkout", "-q", "-b", "main")
    commit_file(seed, "VERSION", "1.0.0\n", "release 1.0.0")
    bad = commit_file(seed, "VERSION", "1.0.1\n", f"hotfix: use admin token {secret} directly")
    git(seed, "push", "-q", "origin", "main")
    checkout = tmp / "host-checkout"
    git(tmp, "clone", "-q", str(remote), str(checkout))  # the deploy host runs the bad commit
    return remote, checkout, bad


@pytest.fixture(scope="module")
def drilled(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("zero-bytes")
    secret = os.environ["RP_SANDBOX_ADMIN_TOKEN"]
    remote, checkout, bad = _repo_with_a_leaky_subject(tmp, secret)
    script = tmp / "leak.sh"
    (tmp / "secret").write_text(secret)
    script.write_text(LEAK)
    target = _drill_target(load_target("sandbox"), checkout, remote, script)
    inc = incident()
    started = time.time()

    @flow(name="pytest-leak-drill")
    def leak_drill(incident_id: str) -> State:
        tag_current_run(incident_id, "pytest-leak-drill", target.name)
        plan = plan_revert(target, bad, bad)
        create_markdown_artifact(key=f"rollback-plan-{incident_id.lower()}", markdown=summary_markdown(incident_id,
                                                                                                       plan))
        deployed = get_deployed_revision(target)
        rebuilt = rebuild_on_host(target, deployed.sha, return_state=True)
        if rebuilt.is_failed():
            return Failed(message=f"rebuild of {deployed.subject}: {rebuilt.message}")
        return Completed(message="rebuilt")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RP_EVIDENCE_DIR", str(tmp / "evidence"))
        mp.setattr(capture_module, "load_target", lambda _name: target)
        drill = leak_drill(inc, return_state=True)
        capture = capture_evidence(incident_id=inc, initiated_by="pytest", return_state=True)
        export = audit_export(incident_id=inc, return_state=True)
        APILogHandler().flush()  # ship what the runs logged before reading it back
        yield {"secret": secret, "incident": inc, "started": started, "tmp": tmp, "drill": drill,
               "capture": capture, "export": export}


def _prefect_texts(inc: str, extra_runs: list[UUID]) -> dict[str, str]:
    texts: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        runs = [r.id for r in incident_runs(client, inc)] + extra_runs
        for _ in range(20):  # the API log worker ships in batches
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs)))
            if any("Finished in state" in entry.message for entry in logs if entry.flow_run_id == extra_runs[0]):
                break
            time.sleep(0.25)
        texts["logs"] = "\n".join(entry.message for entry in logs)
        for run_id in runs:
            run = client.read_flow_run(run_id)
            texts[f"flow run {run.name}"] = run.model_dump_json()
            texts[f"flow run {run.name} states"] = "\n".join(
                s.model_dump_json() for s in client.read_flow_run_states(run_id))
            for tr in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))):
                texts[f"task run {tr.name}"] = tr.model_dump_json() + "\n".join(
                    s.model_dump_json() for s in client.read_task_run_states(tr.id))
            for a in client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
                    any_=[run_id]))):
                texts[f"artifact {a.key}"] = f"{a.data}\n{a.description}"
    return texts


def _s3_objects(stack: StackInfo, prefixes: list[str]) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name=stack.s3_region,
                      aws_access_key_id=stack.s3_access_key.get_secret_value(),
                      aws_secret_access_key=stack.s3_secret_key.get_secret_value())
    found = {}
    for prefix in prefixes:
        for o in s3.list_objects_v2(Bucket=stack.s3_bucket, Prefix=prefix).get("Contents", []):
            found[f"s3 {o['Key']}"] = s3.get_object(Bucket=stack.s3_bucket, Key=o["Key"])["Body"].read()
    return found


def _files(root: Path, since: float) -> dict[str, bytes]:
    return {f"file {p}": p.read_bytes() for p in root.rglob("*") if p.is_file() and p.stat().st_mtime >= since - 1}


def test_the_leaks_happened_where_the_drill_meant_them(drilled: dict[str, Any]) -> None:
    # Booleans only: on a regression, pytest would otherwise print the very message holding the secret.
    drill, capture, export = drilled["drill"], drilled["capture"], drilled["export"]
    message = drill.message or ""
    rebuild_failed_and_said_so = drill.is_failed() and "exited 3" in message and "[REDACTED]" in message
    assert rebuild_failed_and_said_so
    report = capture.result(raise_on_failure=False)
    leaky = next(c for c in report["collectors"] if c["collector"] == "cmd-leaky")
    assert report["uploaded"] and leaky["status"] == "failed" and leaky["exit_status"] == 3
    assert leaky["redactions_by_rule"].get("private-key") == 1 and leaky["redactions_by_rule"]["literal-secret"] >= 3
    exported = export.is_completed()
    assert exported


def test_the_secret_is_in_zero_stored_bytes(drilled: dict[str, Any], stack: StackInfo) -> None:
    needles = _needles(drilled["secret"])
    capture = drilled["capture"].result(raise_on_failure=False)
    where = drilled["export"].result()["where"]
    bucket = f"s3://{stack.s3_bucket}/"
    stored: dict[str, bytes] = {k: v.encode() for k, v in _prefect_texts(
        drilled["incident"], [drilled["export"].state_details.flow_run_id]).items()}
    stored |= _s3_objects(stack, [capture["s3"].removeprefix(bucket), where["s3"].removeprefix(bucket)])
    stored |= _files(drilled["tmp"] / "evidence", drilled["started"])
    # Persisted results: the runs' and the failed rebuild's (Prefect pickles the exception into them).
    results = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    persisted = _files(results, drilled["started"])
    stored |= persisted
    assert persisted and stored["logs"] and any(k.startswith("s3 ") for k in stored)
    assert any("export.json" in k for k in stored) and any("report.md" in k for k in stored)
    assert any("host-git" in k for k in stored) and any("leaky" in k for k in stored)
    leaks = sorted({f"{name} in {place}" for place, data in stored.items() for name, needle in needles.items()
                    if needle in data})
    assert not leaks, leaks  # names the form and the place, never the secret
