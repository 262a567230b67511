"""Evidence bundles in S3 (or moto/MinIO via endpoint_url): streamed up, hashed, re-verifiable.

The SHA-256 of every object is computed locally by streaming the file and stored in
the object's metadata (`sha256`), because S3's own SHA256 checksum of a multipart
upload is a checksum of part checksums, not of the file; an auditor re-verifies by
streaming the object back and hashing it (`verify`).

A file up to `SINGLE_PUT_MAX` goes up in one streamed PutObject that carries that same
SHA-256 as its checksum: S3 refuses a body that does not hash to it, and the object's own
checksum is then the file's hash. Larger files go multipart. Either way the file is read
from disk as it is sent, never held in memory. A file an `EvidenceFile` has just written
is not read a second time for its hash: the writer hands over the hash it computed as the
bytes landed (`remember_sha256`), valid while the file's size, mtime and ctime are unchanged.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import os
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import boto3
import botocore.loaders
import botocore.session
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, HTTPClientError, NoCredentialsError, PartialCredentialsError
from botocore.exceptions import ClientError as BotoClientError
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from pydantic import BaseModel, ConfigDict, SecretStr

from remediation.errors import (
    AuthError,
    BadInputError,
    ClientError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RetryableError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
else:
    S3Client = Any

__all__ = [
    "EvidenceStore",
    "LockMode",
    "ObjectSummary",
    "ObjectVersion",
    "S3EvidenceStore",
    "StoredObject",
    "current_sha256",
    "make_s3_client",
    "map_boto_error",
    "remember_sha256",
    "sha256_file",
]

LockMode = Literal["GOVERNANCE", "COMPLIANCE"]
_CHUNK = 1024 * 1024
_MIB = 1024 * 1024
#: Larger files go multipart (S3 takes at most 5 GiB in one PUT; a retry then resends at most this).
SINGLE_PUT_MAX = 4 * 1024 * _MIB
_AUTH_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AuthorizationHeaderMalformed",
})
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchVersion", "404"})
_RETRY_CODES = frozenset({
    "SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
    "Throttling", "ThrottlingException", "RequestLimitExceeded",
})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class StoredObject(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    #: From the object's `sha256` metadata; None for an object this store did not write.
    sha256_hex: str | None
    size: int
    version_id: str | None = None
    lock_mode: str | None = None
    retain_until: datetime | None = None


class ObjectVersion(BaseModel):
    """One version of a key, newest first in `versions`: what an auditor compares with the anchor."""

    model_config = ConfigDict(frozen=True)

    key: str
    version_id: str
    last_modified: datetime
    size: int
    is_latest: bool
    #: A delete marker hides the object without removing its versions.
    deleted: bool = False


class ObjectSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    size: int
    last_modified: datetime
    etag: str = ""


@runtime_checkable
class EvidenceStore(Protocol):
    bucket: str

    def put_file(self, key: str, path: Path, *, absent: bool = False) -> StoredObject: ...
    def verify(self, key: str, expected_sha256: str, version_id: str | None = None) -> bool: ...
    def head(self, key: str) -> StoredObject: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> builtins.list[ObjectSummary]: ...
    def read_bytes(self, key: str, max_bytes: int, version_id: str | None = None) -> bytes: ...
    def versions(self, prefix: str) -> builtins.list[ObjectVersion]: ...


def sha256_file(path: Path) -> tuple[str, int]:
    """SHA-256 hex digest and size, read in 1 MiB chunks so any size fits in memory."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


#: (st_dev, st_ino) -> (size, mtime_ns, ctime_ns, sha256) of files whose writer hashed them.
_recorded: dict[tuple[int, int], tuple[int, int, int, str]] = {}
_recorded_lock = threading.Lock()
_RECORDED_MAX = 4096


def remember_sha256(path: Path, sha256_hex: str) -> None:
    """Record the SHA-256 of the file its writer has just closed, as it hashed the bytes writing them.

    `put_file` takes it instead of reading the file again while the file's size, mtime and ctime
    are what they were now: any write, truncation, touch or chmod since changes the ctime."""
    st = os.stat(path)
    with _recorded_lock:
        if len(_recorded) >= _RECORDED_MAX:
            _recorded.clear()
        _recorded[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, sha256_hex)


def current_sha256(path: Path) -> tuple[str, int]:
    """(sha256, size): the recorded hash of a file unchanged since its writer closed it, else a fresh one."""
    st = os.stat(path)
    with _recorded_lock:
        entry = _recorded.get((st.st_dev, st.st_ino))
    if entry is not None and entry[:3] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
        return entry[3], st.st_size
    return sha256_file(path)


def _check_key(key: str) -> str:
    if (
        not isinstance(key, str) or not key or len(key.encode()) > 1024 or key.startswith("/")
        or _CONTROL.search(key) or any(part in ("", ".", "..") for part in key.split("/"))
    ):
        raise BadInputError(f"object key {key!r} is not a clean relative key (no leading /, //, . or ..)")
    return key


def make_s3_client(
    endpoint_url: str | None,
    region: str,
    access_key: SecretStr | None,
    secret_key: SecretStr | None,
    *,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    max_attempts: int = 5,
) -> S3Client:
    """An S3 client with bounded timeouts and botocore's standard retries.

    Without keys the default credential chain applies (instance role, env, profile).
    An endpoint_url (moto, MinIO) gets path-style addressing, which those servers expect.
    """
    config = Config(
        region_name=region,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    # A private session: boto3's default session is not safe to share across task threads. Its
    # service-model loader is shared, so only the first client of a process parses S3's JSON models.
    botocore_session = botocore.session.get_session()
    botocore_session.register_component("data_loader", _shared_loader())
    session = boto3.session.Session(
        aws_access_key_id=access_key.get_secret_value() if access_key else None,
        aws_secret_access_key=secret_key.get_secret_value() if secret_key else None,
        region_name=region, botocore_session=botocore_session,
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


_loader: Any = None
_loader_lock = threading.Lock()


def _shared_loader() -> Any:
    global _loader
    with _loader_lock:
        if _loader is None:
            _loader = botocore.loaders.create_loader()
        return _loader


def warm_up() -> None:
    """Parse the S3 service models now (a warm runner's child calls this before its run comes)."""
    make_s3_client("http://127.0.0.1:9", "us-east-1", SecretStr("warm"), SecretStr("warm"))


class S3EvidenceStore:
    """`EvidenceStore` over a boto3 S3 client that the caller builds (see `make_s3_client`)."""

    def __init__(
        self,
        s3_client: S3Client,
        bucket: str,
        *,
        object_lock_days: int | None = None,
        object_lock_mode: LockMode = "GOVERNANCE",
        checksum_algorithm: Literal["SHA256"] | None = "SHA256",
        transfer_config: TransferConfig | None = None,
    ) -> None:
        if object_lock_days is not None and object_lock_days <= 0:
            raise BadInputError("object_lock_days must be positive")
        self._s3 = s3_client
        self.bucket = bucket
        self._lock_days = object_lock_days
        self._lock_mode = object_lock_mode
        # Some S3-compatible endpoints reject flexible checksums; the metadata hash still holds.
        self._checksum = checksum_algorithm
        # Multipart only above SINGLE_PUT_MAX, in 64 MiB parts two at a time: each part in flight is
        # buffers and a connection, and the uploading process has a memory budget like any other.
        self._transfer = transfer_config or TransferConfig(
            multipart_threshold=SINGLE_PUT_MAX, multipart_chunksize=64 * _MIB, max_concurrency=2
        )

    def put_file(self, key: str, path: Path, *, absent: bool = False) -> StoredObject:
        """Upload `path` streaming (multipart above the threshold); an identical object already there is kept.
        `absent`: the caller has just listed the prefix and the key is not there (saves the HEAD)."""
        _check_key(key)
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"evidence file {path} does not exist or is not a file")
        sha, size = current_sha256(path)
        # A retried task must not upload twice: same key, same hash, same size is the same evidence.
        existing = None if absent else self._head_or_none(key)
        if existing is not None and existing.sha256_hex == sha and existing.size == size:
            return existing
        extra: dict[str, Any] = {"Metadata": {"sha256": sha}}
        if self._checksum:
            extra["ChecksumAlgorithm"] = self._checksum
        if self._lock_days:
            extra["ObjectLockMode"] = self._lock_mode
            extra["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self._lock_days)
        if size < self._transfer.multipart_threshold:
            stored = self._put_small(key, path, sha, size, extra)
            if stored is not None:
                return stored
        else:
            try:
                self._s3.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=self._transfer)
            except (BotoCoreError, BotoClientError, S3UploadFailedError) as exc:
                raise map_boto_error(exc, f"put s3://{self.bucket}/{key}") from None
        stored = self.head(key)
        if stored.size != size or stored.sha256_hex != sha:
            raise RetryableError(
                f"evidence store: s3://{self.bucket}/{key} reads back as {stored.size} bytes / "
                f"sha256 {stored.sha256_hex}, expected {size} / {sha}"
            )
        return stored

    def _put_small(self, key: str, path: Path, sha: str, size: int, extra: dict[str, Any]) -> StoredObject | None:
        """One PutObject, the body streamed from disk (no transfer manager and its threads per file).
        It carries our SHA-256 of the file as its checksum (so botocore does not read the file once
        more to compute it): S3 refuses a body that does not hash to it and answers with the checksum
        it stored: that equal to our hash is the read-back, no HEAD needed (the bundle is still
        streamed back and re-hashed by `verify`). None when the endpoint answered without a
        checksum (the caller then reads back with HEAD)."""
        if extra.get("ChecksumAlgorithm") == "SHA256":
            extra = {**extra, "ChecksumSHA256": base64.b64encode(bytes.fromhex(sha)).decode()}
        try:
            with path.open("rb") as body:
                resp = self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
        except (BotoCoreError, BotoClientError) as exc:
            raise map_boto_error(exc, f"put s3://{self.bucket}/{key}") from None
        stored_b64 = resp.get("ChecksumSHA256")
        if not stored_b64:
            return None
        if stored_b64 != base64.b64encode(bytes.fromhex(sha)).decode():
            raise RetryableError(f"evidence store: s3://{self.bucket}/{key} stored with sha256 (base64) "
                                 f"{stored_b64}, expected {sha}")
        return StoredObject(
            key=key, sha256_hex=sha, size=size, version_id=resp.get("VersionId"),
            lock_mode=extra.get("ObjectLockMode"), retain_until=extra.get("ObjectLockRetainUntilDate"),
        )

    def verify(self, key: str, expected_sha256: str, version_id: str | None = None) -> bool:
        """Stream the object (that version of it, if given) back and hash it; True only if it matches."""
        _check_key(key)
        if not re.fullmatch(r"[0-9a-fA-F]{64}", expected_sha256 or ""):
            raise BadInputError("expected_sha256 must be 64 hex characters")
        digest = hashlib.sha256()
        where = f"verify s3://{self.bucket}/{key}"
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key, **_version(version_id))["Body"]
            try:
                for chunk in body.iter_chunks(_CHUNK):
                    digest.update(chunk)
            finally:
                body.close()
        except (BotoCoreError, BotoClientError) as exc:
            raise map_boto_error(exc, where) from None
        return hmac.compare_digest(digest.hexdigest(), expected_sha256.lower())

    def head(self, key: str) -> StoredObject:
        _check_key(key)
        try:
            meta = self._s3.head_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, BotoClientError) as exc:
            raise map_boto_error(exc, f"head s3://{self.bucket}/{key}") from None
        return StoredObject(
            key=key,
            sha256_hex=meta.get("Metadata", {}).get("sha256"),
            size=meta["ContentLength"],
            version_id=meta.get("VersionId"),
            lock_mode=meta.get("ObjectLockMode"),
            retain_until=meta.get("ObjectLockRetainUntilDate"),
        )

    def exists(self, key: str) -> bool:
        return self._head_or_none(key) is not None

    def list(self, prefix: str) -> builtins.list[ObjectSummary]:
        if not isinstance(prefix, str) or _CONTROL.search(prefix) or prefix.startswith("/"):
            raise BadInputError(f"prefix {prefix!r} is not a clean relative prefix")
        found: builtins.list[ObjectSummary] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                found.extend(
                    ObjectSummary(
                        key=item["Key"], size=item["Size"], last_modified=item["LastModified"],
                        etag=item.get("ETag", "").strip('"'),
                    )
                    for item in page.get("Contents", [])
                )
        except (BotoCoreError, BotoClientError) as exc:
            raise map_boto_error(exc, f"list s3://{self.bucket}/{prefix}") from None
        return found

    def read_bytes(self, key: str, max_bytes: int, version_id: str | None = None) -> bytes:
        """The whole of one small object (a manifest, an export, a chain head); refuses a larger one."""
        _check_key(key)
        where = f"get s3://{self.bucket}/{key}"
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key, **_version(version_id))["Body"]
            try:
                data = body.read(max_bytes + 1)
            finally:
                body.close()
        except (BotoCoreError, BotoClientError) as exc:
            raise map_boto_error(exc, where) from None
        if len(data) > max_bytes:
            raise PermanentError(f"s3://{self.bucket}/{key} is larger than {max_bytes} bytes")
        return bytes(data)

    def versions(self, prefix: str) -> builtins.list[ObjectVersion]:
        """Every version (and delete marker) of every key under `prefix`; per key, the latest first."""
        if not isinstance(prefix, str) or _CONTROL.search(prefix) or prefix.startswith("/"):
            raise BadInputError(f"prefix {prefix!r} is not a clean relative prefix")
        found: builtins.list[ObjectVersion] = []
        try:
            pages = self._s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                items: builtins.list[tuple[Any, bool]] = [(v, False) for v in page.get("Versions", [])]
                items += [(m, True) for m in page.get("DeleteMarkers", [])]
                found.extend(
                    ObjectVersion(key=item["Key"], version_id=str(item.get("VersionId") or "null"),
                                  last_modified=item["LastModified"], size=int(item.get("Size", 0)),
                                  is_latest=bool(item.get("IsLatest")), deleted=deleted)
                    for item, deleted in items
                )
        except (BotoCoreError, BotoClientError) as exc:
            raise map_boto_error(exc, f"list versions under s3://{self.bucket}/{prefix}") from None
        return sorted(found, key=lambda v: (v.key, not v.is_latest, -v.last_modified.timestamp()))

    def _head_or_none(self, key: str) -> StoredObject | None:
        try:
            return self.head(key)
        except NotFoundError:
            return None


def _version(version_id: str | None) -> dict[str, Any]:
    return {"VersionId": version_id} if version_id else {}


def map_boto_error(exc: Exception, where: str) -> ClientError:
    """The taxonomy error for a botocore/boto3 error. Messages hold codes, never credentials."""
    if isinstance(exc, S3UploadFailedError):
        # boto3 wraps the real error implicitly (no `from`), so it is on __context__.
        inner = exc.__cause__ or exc.__context__
        if isinstance(inner, BotoClientError | BotoCoreError):
            exc = inner
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AuthError(f"evidence store: {where}: no usable S3 credentials ({type(exc).__name__})")
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return RetryableError(f"evidence store: {where}: {type(exc).__name__}: {exc}")
    if isinstance(exc, BotoClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = " ".join(str(error.get("Message", "")).split())[:200]
        message = f"evidence store: {where}: {code or 'error'} (HTTP {status}){': ' + text if text else ''}"
        if code in _AUTH_CODES or status in (401, 403):
            return AuthError(message)
        if code in _NOT_FOUND_CODES or status == 404:
            return NotFoundError(message)
        if code in _RETRY_CODES or status >= 500 or status == 429:
            return RetryableError(message)
        if status == 409:
            return ConflictError(message)
        return PermanentError(message)
    if isinstance(exc, BotoCoreError):
        return PermanentError(f"evidence store: {where}: {type(exc).__name__}: {exc}")
    return PermanentError(f"evidence store: {where}: {type(exc).__name__}")
