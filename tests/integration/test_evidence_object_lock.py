"""Object Lock retention on a lock-enabled bucket (moto): a target asking for retention gets it on every
object of the bundle, S3 refuses to delete a retained version, and a bucket without Object Lock fails
the upload loudly instead of storing evidence that could be deleted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError as BotoClientError

from remediation.clients import make_s3_client
from remediation.clients.evidence_store import sha256_file
from remediation.errors import ClientError
from remediation.evidence.bundle import CollectorRecord, Manifest, now, read_upload, s3_prefix, write_manifest
from remediation.target.inventory import Target, load_target
from sandbox.stack.info import StackInfo
from tasks.evidence_store import upload_evidence_bundle

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(stack: StackInfo) -> S3Client:
    return make_s3_client(stack.s3_endpoint, stack.s3_region, stack.s3_access_key, stack.s3_secret_key)


@pytest.fixture(scope="module")
def locked_bucket(s3: S3Client) -> str:
    name = f"rp-evidence-locked-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def _target(stack: StackInfo, bucket: str, days: int | None, mode: str = "COMPLIANCE") -> Target:
    inv = load_target("sandbox")
    evidence = inv.evidence.model_copy(update={"bucket": bucket, "object_lock_days": days, "object_lock_mode": mode})
    return inv.model_copy(update={"evidence": evidence})


def _bundle(root: Path, inv: Target) -> Path:
    run_id = str(uuid.uuid4())
    incident = f"INC-LOCK{uuid.uuid4().hex[:6]}"
    directory = root / incident / run_id
    directory.mkdir(parents=True)
    (directory / "note.txt").write_text("evidence that must outlive the incident\n")
    sha, size = sha256_file(directory / "note.txt")
    created = now()
    write_manifest(directory, Manifest(
        incident_id=incident, target=inv.name, environment=inv.environment, profile="default", run_id=run_id,
        flow_run_id=None, initiated_by="test", created_at=created, s3_bucket=inv.evidence.bucket,
        s3_prefix=s3_prefix(inv.evidence.prefix, created, incident, run_id),
        collectors=[CollectorRecord(collector="note", kind="command", file="note.txt", what="echo", status="ok",
                                    bytes=size, sha256=sha)],
    ))
    return directory


def test_every_object_of_a_bundle_is_retained_on_a_lock_enabled_bucket(
    stack: StackInfo, s3: S3Client, locked_bucket: str, tmp_path: Path
) -> None:
    inv = _target(stack, locked_bucket, days=3)
    directory = _bundle(tmp_path, inv)
    record = upload_evidence_bundle.fn(inv, str(directory))
    assert read_upload(directory) is not None
    assert {Path(o["key"]).name for o in record.objects.values()} == {"note.txt", "manifest.json"}
    for obj in record.objects.values():
        # (moto's GetObjectRetention answers 500; HEAD carries the same retention headers)
        head = s3.head_object(Bucket=locked_bucket, Key=obj["key"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        days_left = (head["ObjectLockRetainUntilDate"] - datetime.now(UTC)).total_seconds() / 86400
        assert 2.9 < days_left <= 3.0, days_left
        version = head["VersionId"]
        with pytest.raises(BotoClientError) as refused:
            s3.delete_object(Bucket=locked_bucket, Key=obj["key"], VersionId=version)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        assert s3.head_object(Bucket=locked_bucket, Key=obj["key"])["VersionId"] == version


def test_a_bucket_without_object_lock_fails_the_upload_and_keeps_the_bundle_pending(
    stack: StackInfo, s3: S3Client, tmp_path: Path
) -> None:
    plain = f"rp-evidence-plain-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=plain)
    inv = _target(stack, plain, days=3)
    directory = _bundle(tmp_path, inv)
    with pytest.raises(ClientError):
        upload_evidence_bundle.fn(inv, str(directory))
    assert read_upload(directory) is None  # not marked uploaded: `evidence sync` retries it
