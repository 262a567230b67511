"""Evidence bundles: `evidence/<incident>/<run-id>/`, one file per collector and a manifest.

Chain of custody, in order: every byte is redacted as it is written and hashed as it
lands (`EvidenceFile`); `manifest.json` records per file what was run, when, its exit
status, size, SHA-256 and redaction counts; the upload streams each file to
`s3://<bucket>/<prefix>/<YYYY-MM-DD>/<incident>/<run-id>/`, then streams every object
back and re-hashes it; only then is `UPLOADED.json` written. Without that marker the
bundle is pending and `sync` uploads it (once: the marker is checked under a lock and
`put_file` skips identical objects). The local copy is never deleted here.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import queue
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from remediation.clients.evidence_store import EvidenceStore, current_sha256, remember_sha256, sha256_file
from remediation.errors import BadInputError, RetryableError
from remediation.evidence.redact import RedactionStream, Redactor

__all__ = [
    "MANIFEST",
    "UPLOADED",
    "CollectorRecord",
    "EvidenceFile",
    "Manifest",
    "UploadRecord",
    "bundle_dir",
    "collector_files",
    "evidence_root",
    "load_manifest",
    "now",
    "pending_bundles",
    "put_verified",
    "read_upload",
    "s3_prefix",
    "upload_bundle",
    "verify_local",
    "verify_s3",
    "write_manifest",
]

MANIFEST = "manifest.json"
UPLOADED = "UPLOADED.json"
SCHEMA = "rp-evidence-bundle/1"
_FILE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,120}$")
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
Status = Literal["ok", "failed", "not_configured"]
#: An evidence file this large is written behind (`EvidenceFile`); a small one never starts a thread.
_BEHIND_AFTER = 4 * 1024 * 1024
#: Redacted chunks (each what one `write` produced) queued for the writer thread at most.
_BEHIND_QUEUE = 4
#: Objects of one bundle uploaded (and read back) at once; botocore pools 10 connections per client.
_UPLOADERS = 8


def evidence_root() -> Path:
    """`RP_EVIDENCE_DIR`, else the repository's git-ignored `evidence/`."""
    env = os.environ.get("RP_EVIDENCE_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "evidence"


def bundle_dir(root: Path, incident_id: str, run_id: str) -> Path:
    for what, part in (("incident id", incident_id), ("run id", run_id)):
        if not _PART.fullmatch(part):
            raise BadInputError(f"{what} {part!r} cannot name a bundle directory")
    return root / incident_id / run_id


class CollectorRecord(BaseModel):
    """One collector's line in the manifest. Every string here has been through redaction."""

    model_config = ConfigDict(extra="forbid")

    collector: str
    kind: str
    file: str | None = None
    #: The command, query or URL that was run (never a secret: inventories hold references only).
    what: str
    status: Status
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_status: int | None = None
    bytes: int = 0
    sha256: str | None = None
    error: str | None = None
    redactions: int = 0
    redactions_by_rule: dict[str, int] = {}


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str = Field(default=SCHEMA, alias="schema")
    incident_id: str
    target: str
    environment: str
    profile: str
    run_id: str
    flow_run_id: str | None
    flow_run_name: str | None = None
    initiated_by: str
    alert_fingerprint: str | None = None
    alert: dict[str, Any] | None = None
    created_at: datetime
    s3_bucket: str
    #: Full key prefix, fixed at capture time so a later sync lands under the capture's date.
    s3_prefix: str
    collectors: list[CollectorRecord]

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "failed": 0, "not_configured": 0}
        for record in self.collectors:
            out[record.status] += 1
        return out


class UploadRecord(BaseModel):
    bucket: str
    prefix: str
    verified_at: datetime
    manifest_sha256: str
    #: file name -> S3 key, sha256, size, and Object Lock state as read back.
    objects: dict[str, dict[str, Any]]


class EvidenceFile:
    """A bundle file written through redaction, hashed as it is written; never held whole in memory.

    A large file is written behind: once `_BEHIND_AFTER` bytes have landed, encoding, writing and
    hashing move to a thread of their own (a bounded queue between, so memory stays bounded), and
    the caller's thread is left to redact while the disk and SHA-256 (both release the GIL) run
    beside it. The bytes, their order and the hash are the same either way; `close` waits for the
    last of them, and an error of the writer (a full disk) is raised by the next `write` or `close`.
    """

    def __init__(self, path: Path, redactor: Redactor) -> None:
        if not _FILE.fullmatch(path.name):
            raise BadInputError(f"evidence file name {path.name!r} is not a plain lowercase name")
        self.path = path
        # Truncates: a retried collector rewrites its file from the start.
        self._fh = path.open("wb")
        self._stream: RedactionStream = redactor.stream()
        self._digest = hashlib.sha256()
        self.bytes = 0
        self._behind: queue.Queue[str | None] | None = None
        self._writer: threading.Thread | None = None
        self._failed: BaseException | None = None

    def write(self, text: str) -> None:
        self._emit(self._stream.feed(text))

    def write_json(self, value: Any) -> None:
        self.write(json.dumps(value, indent=2, default=str, sort_keys=True) + "\n")

    def write_csv(self, header: Sequence[str], rows: Iterable[Sequence[Any]], batch: int = 5_000) -> None:
        """A CSV of any length, written in batches: a million-row mismatch list never sits in memory."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        for i, row in enumerate(rows, 1):
            writer.writerow(row)
            if i % batch == 0:
                self.write(buf.getvalue())
                buf.seek(0)
                buf.truncate()
        self.write(buf.getvalue())

    def _emit(self, text: str) -> None:
        if self._failed is not None:
            raise self._failed
        if not text:
            return
        if self._behind is not None:
            self._behind.put(text)
            return
        self._land(text)
        if self.bytes >= _BEHIND_AFTER and self._writer is None:
            self._behind = queue.Queue(_BEHIND_QUEUE)
            self._writer = threading.Thread(target=self._write_behind, name=f"evidence-writer-{self.path.name}",
                                            daemon=True)
            self._writer.start()

    def _land(self, text: str) -> None:
        data = text.encode("utf-8", errors="surrogateescape")
        self._fh.write(data)
        self._digest.update(data)
        self.bytes += len(data)

    def _write_behind(self) -> None:
        assert self._behind is not None
        while (text := self._behind.get()) is not None:
            if self._failed is None:
                try:
                    self._land(text)
                except BaseException as exc:  # kept for the caller's thread; keep draining so it never blocks
                    self._failed = exc

    def _drain(self) -> None:
        if self._writer is not None:
            assert self._behind is not None
            self._behind.put(None)
            self._writer.join()
            self._writer, self._behind = None, None

    def close(self) -> tuple[int, str, dict[str, int]]:
        """Flush the tail, fsync, and return (bytes, sha256, redactions by rule)."""
        if not self._fh.closed:
            try:
                self._emit(self._stream.finish())  # raises the writer's failure, if any
                self._drain()
                if self._failed is not None:
                    raise self._failed
                self._fh.flush()
                os.fsync(self._fh.fileno())
            finally:
                self._drain()
                self._fh.close()
            # put_file can take this hash instead of reading the file again (see `remember_sha256`).
            remember_sha256(self.path, self._digest.hexdigest())
        return self.bytes, self._digest.hexdigest(), {k: v for k, v in self._stream.counts.items() if v}


def write_manifest(directory: Path, manifest: Manifest) -> str:
    """Write manifest.json atomically; returns its SHA-256."""
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2, by_alias=True) + "\n")
    tmp.replace(directory / MANIFEST)
    return sha256_file(directory / MANIFEST)[0]


def load_manifest(directory: Path) -> Manifest:
    return Manifest.model_validate_json((directory / MANIFEST).read_text())


def read_upload(directory: Path) -> UploadRecord | None:
    path = directory / UPLOADED
    return UploadRecord.model_validate_json(path.read_text()) if path.exists() else None


def pending_bundles(root: Path) -> list[Path]:
    """Bundles with a manifest and no verified upload, oldest first."""
    found = [m.parent for m in root.glob(f"*/*/{MANIFEST}") if not (m.parent / UPLOADED).exists()]
    return sorted(found, key=lambda d: (d / MANIFEST).stat().st_mtime)


def verify_local(directory: Path, *, reread: bool = True) -> list[str]:
    """Re-hash each file against the manifest; returns the problems (empty: the bundle is intact).

    `reread=False` takes the hash a file's writer recorded while the file is unchanged since (size,
    mtime, ctime), as the upload does: a 1 GiB log is then not read twice more before it goes up."""
    manifest = load_manifest(directory)
    problems = []
    for record in manifest.collectors:
        if record.file is None:
            continue
        path = directory / record.file
        if not path.is_file():
            problems.append(f"{record.file}: missing")
            continue
        sha, size = sha256_file(path) if reread else current_sha256(path)
        if sha != record.sha256 or size != record.bytes:
            problems.append(
                f"{record.file}: sha256 {sha} / {size} bytes, manifest says {record.sha256} / {record.bytes}"
            )
    return problems


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # The flow's own upload and a `sync` may meet on one bundle: one uploads, the other sees the marker.
    with (directory / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def put_verified(store: EvidenceStore, directory: Path, prefix: str, name: str, *,
                 expect_lock: bool = False, absent: bool = False) -> dict[str, Any]:
    """Put one bundle file, stream it back and re-hash it: its entry in `UploadRecord.objects`.
    `absent`: the prefix was just listed and this key is not in it (see `put_file`)."""
    key = f"{prefix}/{name}"
    stored = store.put_file(key, directory / name, absent=absent)
    obj = {"key": key, "sha256": stored.sha256_hex, "bytes": stored.size, "version_id": stored.version_id,
           "lock_mode": stored.lock_mode, "retain_until": stored.retain_until}
    if not store.verify(key, str(stored.sha256_hex), version_id=stored.version_id):
        raise RetryableError(f"s3://{store.bucket}/{key} does not re-hash to {stored.sha256_hex}")
    if expect_lock and not stored.lock_mode:
        raise BadInputError(f"s3://{store.bucket}/{key} has no Object Lock retention")
    return obj


def upload_bundle(directory: Path, store: EvidenceStore, *, expect_lock: bool = False,
                  verified: dict[str, dict[str, Any]] | None = None) -> tuple[UploadRecord, bool]:
    """Upload, read back, verify, then mark. Returns (record, uploaded_now); an uploaded bundle is left alone.

    `verified`: files this run already put and re-verified (`EarlyUpload`), by name. One is taken
    as it is only when it is the very object the manifest now names (key, sha256, size, and locked
    when a lock is expected); any other file is uploaded and verified here."""
    with _locked(directory):
        done = read_upload(directory)
        if done is not None:
            return done, False
        problems = verify_local(directory, reread=False)
        if problems:
            # Never ship a bundle that no longer matches its own manifest.
            raise BadInputError(f"bundle {directory} does not match its manifest: {'; '.join(problems)}")
        manifest = load_manifest(directory)
        objects: dict[str, dict[str, Any]] = {}
        for r in collector_files(manifest):
            early = (verified or {}).get(str(r.file))
            if early is not None and early.get("key") == f"{manifest.s3_prefix}/{r.file}" \
                    and early.get("sha256") == r.sha256 and early.get("bytes") == r.bytes \
                    and (early.get("lock_mode") or not expect_lock):
                objects[str(r.file)] = early
        rest = [str(r.file) for r in collector_files(manifest) if r.file not in objects]

        def put(name: str) -> tuple[str, dict[str, Any]]:
            return name, put_verified(store, directory, manifest.s3_prefix, name, expect_lock=expect_lock)

        # A bundle is a dozen or more small objects: one after another they were most of a capture's
        # time in S3 round trips. The manifest still goes last, so a manifest in S3 means its files are.
        with ThreadPoolExecutor(max_workers=_UPLOADERS) as pool:
            objects.update(pool.map(put, rest))
        objects.update([put(MANIFEST)])
        record = UploadRecord(
            bucket=store.bucket, prefix=manifest.s3_prefix, verified_at=datetime.now(UTC),
            manifest_sha256=sha256_file(directory / MANIFEST)[0], objects=objects,
        )
        tmp = directory / f".{UPLOADED}.tmp"
        tmp.write_text(record.model_dump_json(indent=2) + "\n")
        tmp.replace(directory / UPLOADED)
        return record, True


def s3_prefix(base: str, created_at: datetime, incident_id: str, run_id: str) -> str:
    day = created_at.astimezone(UTC).strftime("%Y-%m-%d")
    return "/".join(p for p in (base.strip("/"), day, incident_id, run_id) if p)


def collector_files(manifest: Manifest) -> list[CollectorRecord]:
    return [r for r in manifest.collectors if r.file is not None]


def now() -> datetime:
    return datetime.now(UTC)


def verify_s3(store: EvidenceStore, manifest_bytes: bytes, prefix: str) -> tuple[Manifest, list[str]]:
    """Re-hash every object under `prefix` against the manifest fetched from it; returns the problems."""
    manifest = Manifest.model_validate_json(manifest_bytes)
    problems = []
    head = store.head(f"{prefix}/{MANIFEST}")
    if head.sha256_hex != hashlib.sha256(manifest_bytes).hexdigest():
        problems.append(f"{MANIFEST}: content does not match its recorded sha256 {head.sha256_hex}")
    for record in collector_files(manifest):
        key = f"{prefix}/{record.file}"
        if not store.exists(key):
            problems.append(f"{record.file}: no object s3://{store.bucket}/{key}")
        elif not store.verify(key, str(record.sha256)):
            problems.append(f"{record.file}: s3://{store.bucket}/{key} does not hash to {record.sha256}")
    expected = {f"{prefix}/{r.file}" for r in collector_files(manifest)} | {f"{prefix}/{MANIFEST}"}
    extra = sorted(o.key for o in store.list(f"{prefix}/") if o.key not in expected)
    problems += [f"unexpected object s3://{store.bucket}/{key} (not in the manifest)" for key in extra]
    return manifest, problems
