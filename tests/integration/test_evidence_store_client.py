"""S3EvidenceStore against the stack's S3 endpoint (moto): put, verify, tamper, multipart, lock."""

from __future__ import annotations

import base64
import hashlib
import os
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from boto3.s3.transfer import TransferConfig
from pydantic import SecretStr

from remediation.clients import EvidenceStore, S3EvidenceStore, StoredObject, make_s3_client
from remediation.errors import BadInputError, NotFoundError, RetryableError
from sandbox.stack.info import StackInfo

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@pytest.fixture
def s3(stack: StackInfo) -> S3Client:
    return make_s3_client(stack.s3_endpoint, stack.s3_region, stack.s3_access_key, stack.s3_secret_key)


@pytest.fixture
def store(s3: S3Client, stack: StackInfo) -> S3EvidenceStore:
    return S3EvidenceStore(s3, stack.s3_bucket)


@pytest.fixture
def prefix() -> str:
    return f"test/{datetime.now(UTC):%Y-%m-%d}/INC-{uuid.uuid4().hex[:8]}/"


def test_put_head_verify_list_exists(store: S3EvidenceStore, prefix: str, tmp_path: Path) -> None:
    assert isinstance(store, EvidenceStore)
    path = tmp_path / "manifest.json"
    path.write_text('{"files": []}\n')
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    stored = store.put_file(prefix + "manifest.json", path)
    assert (stored.key, stored.sha256_hex, stored.size) == (prefix + "manifest.json", expected, path.stat().st_size)
    assert store.head(prefix + "manifest.json").sha256_hex == expected
    assert store.verify(prefix + "manifest.json", expected)
    assert store.verify(prefix + "manifest.json", expected.upper())
    assert store.exists(prefix + "manifest.json")
    assert not store.exists(prefix + "missing.json")
    assert [o.key for o in store.list(prefix)] == [prefix + "manifest.json"]


def test_putting_the_same_file_again_does_not_upload_twice(
    store: S3EvidenceStore, s3: S3Client, stack: StackInfo, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "a.log"
    path.write_text("line\n" * 100)
    first = store.put_file(prefix + "a.log", path)
    again = store.put_file(prefix + "a.log", path)
    assert again == first
    versions = s3.list_object_versions(Bucket=stack.s3_bucket, Prefix=prefix + "a.log").get("Versions", [])
    assert len(versions) == 1


def test_a_tampered_object_fails_verify(
    store: S3EvidenceStore, s3: S3Client, stack: StackInfo, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "pg_stat_activity.json"
    path.write_text('[{"pid": 1}]\n')
    stored = store.put_file(prefix + path.name, path)
    assert stored.sha256_hex is not None and store.verify(stored.key, stored.sha256_hex)
    # Rewrite the body but keep the metadata hash, as a careless or hostile edit would.
    s3.put_object(Bucket=stack.s3_bucket, Key=stored.key, Body=b'[{"pid": 2}]\n',
                  Metadata={"sha256": stored.sha256_hex})
    assert store.head(stored.key).sha256_hex == stored.sha256_hex
    assert not store.verify(stored.key, stored.sha256_hex)


def _random_file(path: Path, mib: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(mib):
            block = os.urandom(MIB)
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


def _put_traced(store: S3EvidenceStore, prefix: str, path: Path) -> tuple[StoredObject, int]:
    """Upload `path` as `<prefix>big.log`; the stored object and the peak Python memory traced meanwhile."""
    store.exists(prefix + "warm-up")  # botocore loads endpoint rules on the first request; not the upload's cost
    tracemalloc.start()
    try:
        stored = store.put_file(prefix + "big.log", path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return stored, peak


def test_a_20_mib_file_uploads_multipart_without_being_read_into_memory(
    s3: S3Client, stack: StackInfo, prefix: str, tmp_path: Path
) -> None:
    # Multipart is for files above SINGLE_PUT_MAX; a small threshold exercises the same path.
    store = S3EvidenceStore(s3, stack.s3_bucket, transfer_config=TransferConfig(
        multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=2))
    path = tmp_path / "big.log"
    sha = _random_file(path, 20)
    stored, peak = _put_traced(store, prefix, path)
    assert stored.size == 20 * MIB and stored.sha256_hex == sha
    # Parts are streamed from disk: the peak stays far below the file's size.
    assert peak < 12 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"
    etag = s3.head_object(Bucket=stack.s3_bucket, Key=stored.key)["ETag"].strip('"')
    assert etag.endswith("-3"), f"expected a 3-part multipart upload, ETag {etag}"
    assert store.verify(stored.key, sha)


def test_a_large_file_goes_up_in_one_streamed_put_whose_checksum_is_its_sha256(
    store: S3EvidenceStore, s3: S3Client, stack: StackInfo, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "big.log"
    sha = _random_file(path, 40)
    stored, peak = _put_traced(store, prefix, path)
    assert stored.size == 40 * MIB and stored.sha256_hex == sha
    assert peak < 4 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"  # streamed from disk, not read whole
    head = s3.head_object(Bucket=stack.s3_bucket, Key=stored.key, ChecksumMode="ENABLED")
    assert "-" not in head["ETag"].strip('"')  # one PUT, not multipart
    assert head.get("ChecksumSHA256") == base64.b64encode(bytes.fromhex(sha)).decode()
    assert store.verify(stored.key, sha)


def test_a_file_an_evidence_file_wrote_is_not_hashed_again_unless_it_changed(
    store: S3EvidenceStore, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remediation.clients import evidence_store
    from remediation.evidence.bundle import EvidenceFile
    from remediation.evidence.redact import Redactor

    out = EvidenceFile(tmp_path / "logs-a.log", Redactor())
    out.write("line\n" * 1000)
    _, sha, _ = out.close()
    hashed: list[Path] = []
    real = evidence_store.sha256_file

    def counting(path: Path) -> tuple[str, int]:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(evidence_store, "sha256_file", counting)
    assert store.put_file(prefix + "a.log", out.path).sha256_hex == sha and hashed == []
    # Changed after it was written (same size even): hashed afresh, and the new content is what is stored.
    out.path.write_text("LINE\n" * 1000)
    changed = store.put_file(prefix + "b.log", out.path)
    assert hashed == [out.path] and changed.sha256_hex == hashlib.sha256(b"LINE\n" * 1000).hexdigest()
    assert store.verify(changed.key, str(changed.sha256_hex))


def test_object_lock_retention_is_applied(s3: S3Client, stack: StackInfo, prefix: str, tmp_path: Path) -> None:
    locked = S3EvidenceStore(s3, stack.s3_bucket, object_lock_days=1, object_lock_mode="GOVERNANCE")
    path = tmp_path / "locked.txt"
    path.write_text("evidence\n")
    stored = locked.put_file(prefix + "locked.txt", path)
    assert stored.lock_mode == "GOVERNANCE"
    assert stored.retain_until is not None and stored.retain_until > datetime.now(UTC)


def test_missing_objects_and_bad_keys(store: S3EvidenceStore, prefix: str, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        store.head(prefix + "nope")
    with pytest.raises(NotFoundError):
        store.verify(prefix + "nope", "0" * 64)
    for key in ("/abs", "a/../b", "a//b", "", "a/./b", "x\ny"):
        with pytest.raises(BadInputError):
            store.put_file(key, tmp_path)
    with pytest.raises(BadInputError):
        store.put_file(prefix + "x", tmp_path / "does-not-exist")
    with pytest.raises(BadInputError):
        store.verify(prefix + "x", "not-a-hash")


def test_missing_bucket_is_not_found(s3: S3Client, prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    with pytest.raises(NotFoundError, match="NoSuchBucket"):
        S3EvidenceStore(s3, "no-such-bucket-" + uuid.uuid4().hex[:8]).put_file(prefix + "f", path)


def test_unreachable_endpoint_is_retryable(stack: StackInfo, tmp_path: Path) -> None:
    down = make_s3_client("http://127.0.0.1:1", stack.s3_region, SecretStr("k"), SecretStr("s"),
                          connect_timeout=1, max_attempts=1)
    with pytest.raises(RetryableError):
        S3EvidenceStore(down, stack.s3_bucket).head("a/b")
