"""moto's S3 server with a write-ahead journal: what it stored survives a restart or a kill -9.

moto keeps everything in memory. This wrapper appends every write that moto accepted (PUT, POST,
DELETE answered 2xx) to a journal under the stack's home before the answer leaves, and on start
replays the journal into a fresh moto, in process, before it listens. Replayed objects keep the
version ids, multipart upload ids and modification times the clients were told the first time,
so a recorded version id (a manifest's, an audit chain head's) still names the same bytes.

One fix to moto itself (`narrow_version_listing`): its ListObjectVersions deep-copies every version of
every key in the bucket, bodies included, before it looks at the prefix, so listing one bundle's
versions cost seconds once the bucket held a few hundred MB (3.7 s for 47 versions; an audit export
lists five prefixes). The listing now sees only the keys under the asked prefix; what it answers is
unchanged.

    python -m sandbox.s3_server --port 15000 --journal /tmp/rp-sandbox/s3-journal
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

__all__ = ["JournaledS3", "main"]

_WRITES = {"PUT", "POST", "DELETE"}
_UPLOAD_ID = re.compile(rb"<UploadId>([^<]+)</UploadId>")
StartResponse = Callable[..., Any]


class _KeysUnder:
    """The part of a bucket's key store under one prefix, as moto's listing reads it."""

    def __init__(self, keys: Any, prefix: str) -> None:
        self._keys, self._prefix = keys, prefix

    def iterlists(self) -> Iterable[tuple[str, list[Any]]]:
        return [(name, versions) for name, versions in self._keys.iterlists() if name.startswith(self._prefix)]


class _BucketUnder:
    def __init__(self, bucket: Any, prefix: str) -> None:
        self._bucket, self.keys = bucket, _KeysUnder(bucket.keys, prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bucket, name)


class _BackendUnder:
    def __init__(self, backend: Any, prefix: str) -> None:
        self._backend, self._prefix = backend, prefix

    def get_bucket(self, name: str) -> _BucketUnder:
        return _BucketUnder(self._backend.get_bucket(name), self._prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def narrow_version_listing() -> None:
    """Make moto's ListObjectVersions look only at keys under the prefix (see the module docstring)."""
    from moto.s3.models import S3Backend

    listing = S3Backend.list_object_versions
    if getattr(listing, "narrowed", False):
        return

    def list_object_versions(self: Any, bucket_name: str, *args: Any, **kwargs: Any) -> Any:
        prefix = kwargs.get("prefix") or ""
        backend: Any = _BackendUnder(self, prefix) if prefix else self
        return listing(backend, bucket_name, *args, **kwargs)

    list_object_versions.narrowed = True  # type: ignore[attr-defined]
    S3Backend.list_object_versions = list_object_versions  # type: ignore[method-assign]


class JournaledS3:
    """A WSGI app: moto's, with each accepted write journaled and the journal replayed at start."""

    def __init__(self, journal_dir: Path) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        narrow_version_listing()
        self.app = DomainDispatcherApplication(create_backend_app)
        # Every request but moto's own API goes straight to the S3 app: moto's dispatcher works out
        # which of its ~150 services a request is for under one global lock, by scanning its modules
        # (a quarter of the server's CPU, and every request serialised behind it).
        self.s3 = create_backend_app("s3")
        self.dir = journal_dir
        self.bodies = journal_dir / "bodies"
        self.bodies.mkdir(parents=True, exist_ok=True)
        self.index = journal_dir / "journal.jsonl"
        self._lock = threading.Lock()
        self._seq = sum(1 for _ in self.index.open()) if self.index.exists() else 0

    # --- serving --------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api"):
            return self.app(environ, start_response)
        if method not in _WRITES:
            return self.s3(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        # The body is all there: moto may read the buffer as it is, not through werkzeug's
        # length-limited wrapper, which copied a large object once more in 64 KiB reads.
        environ["wsgi.input_terminated"] = True
        answer: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)
            return start_response(status, headers, exc_info)

        chunks = list(self.s3(environ, capture))
        if 200 <= answer.get("status", 500) < 300:
            self._append(environ, body, answer["headers"], b"".join(chunks))
        return chunks

    def _append(self, environ: dict[str, Any], body: bytes, headers: dict[str, str], answer: bytes) -> None:
        request_headers = {
            k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                request_headers[key.replace("_", "-").title()] = environ[key]
        upload = _UPLOAD_ID.search(answer) if environ.get("QUERY_STRING", "").startswith("uploads") else None
        with self._lock:
            self._seq += 1
            entry = {
                "seq": self._seq, "method": environ["REQUEST_METHOD"], "path": environ.get("RAW_URI")
                or environ.get("PATH_INFO", ""), "query": environ.get("QUERY_STRING", ""),
                "headers": request_headers, "at": dt.datetime.now(dt.UTC).isoformat(),
                "version_id": headers.get("x-amz-version-id"),
                "upload_id": upload.group(1).decode() if upload else None,
            }
            if body:
                (self.bodies / f"{self._seq}.bin").write_bytes(body)
            with self.index.open("a") as out:
                out.write(json.dumps(entry) + "\n")
                out.flush()

    # --- replay ---------------------------------------------------------------------------------
    def replay(self) -> int:
        """Feed the journal back through moto; returns how many writes it replayed."""
        from werkzeug.test import EnvironBuilder

        if not self.index.exists():
            return 0
        count = 0
        for line in self.index.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                break  # a line cut by a kill mid-write: everything before it was answered
            body_file = self.bodies / f"{entry['seq']}.bin"
            path = entry["path"].split("?", 1)[0]
            builder = EnvironBuilder(
                path=unquote(path), method=entry["method"], query_string=entry["query"],
                headers=entry["headers"], data=body_file.read_bytes() if body_file.exists() else b"",
            )
            environ = builder.get_environ()
            environ["RAW_URI"] = entry["path"]
            answer: dict[str, Any] = {}

            def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None,
                        answer: dict[str, Any] = answer) -> Any:
                answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)
                return lambda data: None

            out = b"".join(self.s3(environ, capture))
            count += 1
            _restore_ids(entry, answer.get("headers", {}), out)
        return count


def _restore_ids(entry: dict[str, Any], headers: dict[str, str], answer: bytes) -> None:
    """Give the replayed object the version id, upload id and time its first write had."""
    from moto.s3.models import s3_backends

    bucket_name, _, key_name = unquote(entry["path"].split("?", 1)[0]).lstrip("/").partition("/")
    buckets = [b for account in s3_backends.values() for backend in account.values()
               for name, b in backend.buckets.items() if name == bucket_name]
    if not buckets or not key_name:
        return
    bucket = buckets[0]
    new_upload = _UPLOAD_ID.search(answer)
    if entry.get("upload_id") and new_upload:
        upload = bucket.multiparts.pop(new_upload.group(1).decode())
        upload.id = entry["upload_id"]
        bucket.multiparts[upload.id] = upload
    old, new = entry.get("version_id"), headers.get("x-amz-version-id")
    if old and new and old != new:
        for version in bucket.keys.getlist(key_name, []):
            if getattr(version, "_version_id", None) == new:
                version._version_id = old
                version.last_modified = dt.datetime.fromisoformat(entry["at"]).replace(tzinfo=None)


def main(argv: list[str] | None = None) -> None:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--journal", type=Path, required=True)
    args = parser.parse_args(argv)
    app = JournaledS3(args.journal)
    began = time.monotonic()
    replayed = app.replay()
    print(f"s3: replayed {replayed} journaled writes in {time.monotonic() - began:.2f}s", file=sys.stderr,
          flush=True)
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
