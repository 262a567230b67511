"""An EvidenceStore in memory with S3's versioning: every write is a new version, reads take the latest
unless a version is named. `corrupt` makes every read-back differ; `puts` counts writes, `read_backs`
the objects streamed back by `verify`."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from remediation.clients.evidence_store import ObjectSummary, ObjectVersion, StoredObject
from remediation.errors import NotFoundError


class MemoryStore:
    bucket = "test-bucket"

    def __init__(self) -> None:
        #: key -> versions, oldest first: (version id, bytes, sha256 metadata, written at)
        self.history: dict[str, list[tuple[str, bytes, str, datetime]]] = {}
        self.puts = 0
        self.read_backs = 0
        self.corrupt = False
        self._clock = datetime(2026, 11, 30, tzinfo=UTC)

    @property
    def objects(self) -> dict[str, bytes]:
        return {k: v[-1][1] for k, v in self.history.items()}

    def put_bytes(self, key: str, data: bytes, sha256_meta: str | None = None) -> StoredObject:
        """A new version, with `sha256_meta` as its metadata (default: the true hash) — as anyone with
        s3:PutObject on the prefix could write."""
        self.puts += 1
        self._clock += timedelta(seconds=1)
        versions = self.history.setdefault(key, [])
        vid = f"v{len(versions) + 1}-{key.rsplit('/', 1)[-1]}"
        sha = sha256_meta or hashlib.sha256(data).hexdigest()
        versions.append((vid, data, sha, self._clock))
        return StoredObject(key=key, sha256_hex=sha, size=len(data), version_id=vid)

    def put_file(self, key: str, path: Path, *, absent: bool = False) -> StoredObject:
        data = path.read_bytes()
        if not absent and key in self.history and self.history[key][-1][1] == data:
            return self.head(key)
        return self.put_bytes(key, data)

    def _get(self, key: str, version_id: str | None) -> tuple[str, bytes, str, datetime]:
        versions = self.history.get(key) or []
        found = [v for v in versions if version_id in (None, v[0])]
        if not found:
            raise NotFoundError(f"no s3://{self.bucket}/{key} version {version_id}")
        return found[-1]

    def verify(self, key: str, expected_sha256: str, version_id: str | None = None) -> bool:
        self.read_backs += 1
        data = self._get(key, version_id)[1] + (b"x" if self.corrupt else b"")
        return hashlib.sha256(data).hexdigest() == expected_sha256

    def head(self, key: str) -> StoredObject:
        vid, data, sha, _ = self._get(key, None)
        return StoredObject(key=key, sha256_hex=sha, size=len(data), version_id=vid)

    def exists(self, key: str) -> bool:
        return key in self.history

    def list(self, prefix: str) -> list[ObjectSummary]:
        return [ObjectSummary(key=k, size=len(v[-1][1]), last_modified=v[-1][3])
                for k, v in self.history.items() if k.startswith(prefix)]

    def read_bytes(self, key: str, max_bytes: int, version_id: str | None = None) -> bytes:
        return self._get(key, version_id)[1][:max_bytes]

    def versions(self, prefix: str) -> list[ObjectVersion]:
        return [ObjectVersion(key=k, version_id=vid, last_modified=at, size=len(data), is_latest=i == len(v) - 1)
                for k, v in sorted(self.history.items()) if k.startswith(prefix)
                for i, (vid, data, _, at) in reversed(list(enumerate(v)))]
