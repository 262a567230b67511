"""Bundle logic without services: manifest, local verification, upload-then-mark, exactly-once, collector errors."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest

from remediation.clients.evidence_store import sha256_file
from remediation.errors import BadInputError, RetryableError
from remediation.evidence import bundle
from remediation.evidence.bundle import CollectorRecord, EvidenceFile, Manifest
from remediation.evidence.redact import Redactor
from tests.unit.memory_store import MemoryStore


def make_bundle(root: Path, incident: str = "INC-1", run_id: str = "run-1") -> Path:
    directory = bundle.bundle_dir(root, incident, run_id)
    directory.mkdir(parents=True)
    records = []
    for name, text in (("logs-wallet.log", "hello password=pw123\n"), ("pg-locks.json", "[]\n")):
        f = EvidenceFile(directory / name, Redactor())
        f.write(text)
        size, sha, counts = f.close()
        records.append(CollectorRecord(collector=name.split(".")[0], kind="x", file=name, what="cmd", status="ok",
                                       bytes=size, sha256=sha, redactions=sum(counts.values())))
    records.append(CollectorRecord(collector="redis-info", kind="redis-info", what="not configured",
                                   status="not_configured"))
    created = datetime(2026, 11, 23, 23, 59, tzinfo=UTC)
    bundle.write_manifest(directory, Manifest(
        incident_id=incident, target="sandbox", environment="sandbox", profile="default", run_id=run_id,
        flow_run_id=None, initiated_by="pytest", created_at=created, s3_bucket="test-bucket",
        s3_prefix=bundle.s3_prefix("incidents", created, incident, run_id), collectors=records,
    ))
    return directory


def test_manifest_round_trip_and_counts(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path)
    manifest = bundle.load_manifest(directory)
    assert manifest.s3_prefix == "incidents/2026-11-23/INC-1/run-1"
    assert manifest.counts() == {"ok": 2, "failed": 0, "not_configured": 1}
    assert '"schema": "rp-evidence-bundle/1"' in (directory / "manifest.json").read_text()
    assert manifest.collectors[0].redactions == 1
    assert b"pw123" not in (directory / "logs-wallet.log").read_bytes()


def test_verify_local_finds_tampering(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path)
    assert bundle.verify_local(directory) == []
    (directory / "pg-locks.json").write_text("[{}]\n")
    (directory / "logs-wallet.log").unlink()
    problems = bundle.verify_local(directory)
    assert any("pg-locks.json: sha256" in p for p in problems) and "logs-wallet.log: missing" in problems


def test_verify_local_without_rereading_still_finds_a_file_changed_since_it_was_written(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path)
    assert bundle.verify_local(directory, reread=False) == []
    log = directory / "logs-wallet.log"
    same_size = bytes(b ^ 0x20 if chr(b).isalpha() else b for b in log.read_bytes())
    log.write_bytes(same_size)  # same length, new bytes: its ctime moves, so its recorded hash is not used
    problems = bundle.verify_local(directory, reread=False)
    assert len(problems) == 1 and problems[0].startswith("logs-wallet.log: sha256")


def test_bundle_dir_refuses_path_tricks(tmp_path: Path) -> None:
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(BadInputError):
            bundle.bundle_dir(tmp_path, bad, "run")


def test_upload_verifies_then_marks_and_is_exactly_once(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path)
    store = MemoryStore()
    assert bundle.pending_bundles(tmp_path) == [directory]
    record, uploaded = bundle.upload_bundle(directory, store)  # type: ignore[arg-type]
    assert uploaded and store.puts == 3
    assert set(record.objects) == {"logs-wallet.log", "pg-locks.json", "manifest.json"}
    assert record.manifest_sha256 == sha256_file(directory / "manifest.json")[0]
    assert bundle.pending_bundles(tmp_path) == []
    again, uploaded_again = bundle.upload_bundle(directory, store)  # type: ignore[arg-type]
    assert not uploaded_again and store.puts == 3 and again == record
    assert (directory / "logs-wallet.log").exists(), "the local copy is kept"
    manifest, problems = bundle.verify_s3(store, store.objects[f"{record.prefix}/manifest.json"], record.prefix)  # type: ignore[arg-type]
    assert problems == [] and manifest.run_id == "run-1"
    store.put_bytes(f"{record.prefix}/pg-locks.json", b"changed", sha256_meta="0" * 64)
    store.put_bytes(f"{record.prefix}/extra.txt", b"?")
    _, problems = bundle.verify_s3(store, store.objects[f"{record.prefix}/manifest.json"], record.prefix)  # type: ignore[arg-type]
    assert len(problems) == 2


def test_a_failed_read_back_leaves_the_bundle_pending(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path)
    store = MemoryStore()
    store.corrupt = True
    with pytest.raises(RetryableError):
        bundle.upload_bundle(directory, store)  # type: ignore[arg-type]
    assert not (directory / bundle.UPLOADED).exists()
    assert bundle.pending_bundles(tmp_path) == [directory]


def test_a_tampered_bundle_is_not_uploaded(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path)
    (directory / "pg-locks.json").write_text("tampered\n")
    store = MemoryStore()
    with pytest.raises(BadInputError, match="does not match its manifest"):
        bundle.upload_bundle(directory, store)  # type: ignore[arg-type]
    assert store.puts == 0


def test_collector_failure_keeps_output_redacts_message_and_pickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remediation.errors import CommandFailedError
    from remediation.evidence.collectors import CollectorFailedError, CollectorSpec, collect
    from remediation.target.inventory import load_target

    monkeypatch.setenv("RP_SANDBOX_ADMIN_TOKEN", "the-admin-token-value")
    target = load_target("sandbox")
    spec = CollectorSpec(name="cmd-x", kind="command", file="cmd-x.txt", what="ssh: false", timeout_s=5)

    def body(out: EvidenceFile) -> int:
        out.write("partial output with the-admin-token-value\n")
        raise CommandFailedError("`false` exited 1: stderr said the-admin-token-value", 1)

    with pytest.raises(CollectorFailedError) as err:
        collect(spec, str(tmp_path), target, target.evidence_profiles["default"], body)
    assert "the-admin-token-value" not in str(err.value)
    record = CollectorRecord.model_validate(err.value.record)
    assert record.status == "failed" and record.bytes > 0 and record.redactions == 1
    assert record.sha256 == sha256_file(tmp_path / "cmd-x.txt")[0]
    # Prefect keeps the exception in the task's state; our own bytes, not untrusted input.
    clone = pickle.loads(pickle.dumps(err.value))  # noqa: S301
    assert clone.record == err.value.record

    def exits_2(out: EvidenceFile) -> int:
        out.write("no such file\n")
        return 2

    with pytest.raises(CollectorFailedError) as err2:
        collect(spec, str(tmp_path), target, target.evidence_profiles["default"], exits_2)
    assert err2.value.record is not None and err2.value.record["exit_status"] == 2
