"""Early upload: each evidence file goes to S3 as soon as its collector has finished.

The file is put, streamed back and re-hashed while the slower collectors are still running. The
bundle's own upload (`upload_bundle`) then has little left to do: the manifest, and any file that was
not uploaded early. Before, a capture waited for its slowest collector and then uploaded and verified
all 17 objects.

Early upload is best effort, and nothing is stored about it but the objects themselves. It can fail:
S3 is down, a PUT is refused, the wait runs out. In every such case `upload_bundle` uploads the file
itself, with its retries and its error message. So early upload cannot lose a capture or fail one.
It makes one attempt per request (the store it is given should not retry), and after its first
failure it tries no more files: with S3 down, the capture does not wait for it. The manifest is still
uploaded last, after every file it names has been verified.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from remediation.clients.evidence_store import EvidenceStore
from remediation.evidence.bundle import put_verified

__all__ = ["EarlyUpload"]

log = logging.getLogger(__name__)

#: Objects in flight at once; botocore pools 10 connections per client, and the bundle's own upload
#: (after this) uses 8.
_WORKERS = 6


class EarlyUpload:
    """Upload a bundle's finished files in the background. `offer` a file once its collector has returned;
    `finish` waits for the uploads and returns the ones that were verified, for `upload_bundle(verified=…)`."""

    def __init__(self, directory: Path, prefix: str, store: Callable[[], EvidenceStore], *,
                 expect_lock: bool = False) -> None:
        self._directory, self._prefix, self._store, self._expect_lock = directory, prefix, store, expect_lock
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="early-upload")
        self._pending: dict[str, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._gave_up = threading.Event()
        self._listed: set[str] | None = None
        self._opened: EvidenceStore | None = None
        self._open_lock = threading.Lock()

    def offer(self, name: str) -> None:
        """Start uploading `name`, a finished file in the bundle. Each file is uploaded once; a name that was
        already offered is ignored."""
        with self._lock:
            if name not in self._pending:
                self._pending[name] = self._pool.submit(self._upload, name)

    def _upload(self, name: str) -> dict[str, Any]:
        if self._gave_up.is_set():
            raise _GaveUpError(name)
        try:
            store, existing = self._open()
            absent = f"{self._prefix}/{name}" not in existing
            return put_verified(store, self._directory, self._prefix, name, expect_lock=self._expect_lock,
                                absent=absent)
        except Exception:
            self._gave_up.set()
            raise

    def _open(self) -> tuple[EvidenceStore, set[str]]:
        # Once per bundle: the store (its credentials may be Prefect Secret blocks, an API call each),
        # and one LIST of the run's prefix. The prefix is new, so the LIST stands in for a HEAD per
        # file (S3 requests are most of an upload's cost); a re-run of the same flow run finds its
        # earlier keys here, and `put_file` then compares each one as usual.
        with self._open_lock:
            if self._opened is None or self._listed is None:
                store = self._store()
                self._listed = {o.key for o in store.list(f"{self._prefix}/")}
                self._opened = store
            return self._opened, self._listed

    def finish(self, timeout_s: float) -> dict[str, dict[str, Any]]:
        """Wait up to `timeout_s` for the offered files. Returns the verified ones; the bundle's upload does
        the others (a file still in flight here is uploaded once more, as an identical version)."""
        with self._lock:
            pending = dict(self._pending)
        wait(pending.values(), timeout=timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        verified: dict[str, dict[str, Any]] = {}
        for name, future in pending.items():
            if not future.done() or future.cancelled():
                continue
            exc = future.exception()
            if isinstance(exc, _GaveUpError):
                continue
            if exc is not None:
                log.debug("early upload of %s failed (the bundle's upload does it): %s", name, exc)
                continue
            verified[name] = future.result()
        return verified


class _GaveUpError(Exception):
    """Not tried: an earlier early upload of the same bundle failed."""
