"""Early upload: files go up while other collectors run; the bundle's upload takes only what is provably
the same object, and does everything else itself."""

from __future__ import annotations

import time
from pathlib import Path

from remediation.errors import RetryableError
from remediation.evidence import bundle
from remediation.evidence.early_upload import EarlyUpload
from tests.unit.memory_store import MemoryStore
from tests.unit.test_bundle import make_bundle

FILES = ("logs-wallet.log", "pg-locks.json")


def _prefix(directory: Path) -> str:
    return bundle.load_manifest(directory).s3_prefix


def test_files_uploaded_early_are_not_uploaded_again_and_the_manifest_still_goes_last(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path)
    store = MemoryStore()
    opened: list[MemoryStore] = []

    def open_store() -> MemoryStore:  # resolving credentials may be API calls: once per bundle
        opened.append(store)
        return store

    early = EarlyUpload(directory, _prefix(directory), open_store)  # type: ignore[arg-type]
    for name in (*FILES, FILES[0]):  # offered twice: uploaded once
        early.offer(name)
    verified = early.finish(timeout_s=10)
    assert set(verified) == set(FILES) and (store.puts, store.read_backs) == (2, 2) and len(opened) == 1
    record, uploaded = bundle.upload_bundle(directory, store, verified=verified)  # type: ignore[arg-type]
    assert uploaded and (store.puts, store.read_backs) == (3, 3), "only the manifest was left to upload"
    assert {n: record.objects[n] for n in FILES} == verified
    written = {key.rsplit("/", 1)[1]: versions[-1][3] for key, versions in store.history.items()}
    assert written["manifest.json"] > max(written[n] for n in FILES)
    manifest, problems = bundle.verify_s3(store, store.objects[f"{record.prefix}/manifest.json"], record.prefix)  # type: ignore[arg-type]
    assert problems == [] and len(manifest.collectors) == 3


def test_an_early_object_that_is_not_the_manifests_file_is_uploaded_again(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path)
    store = MemoryStore()
    early = EarlyUpload(directory, _prefix(directory), lambda: store)
    for name in FILES:
        early.offer(name)
    verified = early.finish(timeout_s=10)
    stale = {**verified, "pg-locks.json": {**verified["pg-locks.json"], "sha256": "0" * 64}}
    wrong_key = {**stale, "logs-wallet.log": {**verified["logs-wallet.log"], "key": "elsewhere/logs-wallet.log"}}
    record, _ = bundle.upload_bundle(directory, store, verified=wrong_key)  # type: ignore[arg-type]
    # Both checked again, streamed back and re-hashed (`put_file` keeps an identical object rather than
    # writing it twice), and the manifest.
    assert (store.puts, store.read_backs) == (3, 2 + 3)
    assert record.objects["pg-locks.json"]["sha256"] == bundle.load_manifest(directory).collectors[1].sha256
    assert record.objects["logs-wallet.log"]["key"] == f"{record.prefix}/logs-wallet.log"


class _Down(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.tries = 0

    def list(self, prefix: str) -> list:  # type: ignore[override]
        self.tries += 1
        raise RetryableError("evidence store: could not connect")


def test_s3_down_costs_one_attempt_and_the_bundle_upload_does_every_file(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path)
    down = _Down()
    early = EarlyUpload(directory, _prefix(directory), lambda: down)
    began = time.monotonic()
    for name in FILES:
        early.offer(name)
        time.sleep(0.05)  # the second is offered after the first failed
    assert early.finish(timeout_s=10) == {}
    assert down.tries == 1 and time.monotonic() - began < 5
    store = MemoryStore()
    record, uploaded = bundle.upload_bundle(directory, store, verified={})  # type: ignore[arg-type]
    assert uploaded and store.puts == 3 and set(record.objects) == {*FILES, "manifest.json"}


def test_a_rerun_of_the_same_run_compares_instead_of_writing_a_second_version(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path)
    store = MemoryStore()
    first = EarlyUpload(directory, _prefix(directory), lambda: store)
    first.offer(FILES[0])
    first.finish(timeout_s=10)
    again = EarlyUpload(directory, _prefix(directory), lambda: store)  # the same prefix: its key is listed
    again.offer(FILES[0])
    verified = again.finish(timeout_s=10)
    assert store.puts == 1 and len(store.history[verified[FILES[0]]["key"]]) == 1
