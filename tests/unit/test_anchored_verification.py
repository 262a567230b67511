"""Verification that does not trust the bucket: the anchor recorded at upload, and signed chain heads."""

from __future__ import annotations

import hashlib
from pathlib import Path

from remediation.audit.chain import chain, check_signature, head_of, sign_head
from remediation.evidence import bundle
from remediation.evidence.anchored import anchor_of_upload, verify_against_anchor, verify_bundle
from tests.unit.memory_store import MemoryStore
from tests.unit.test_bundle import make_bundle


def _uploaded(tmp_path: Path) -> tuple[MemoryStore, bundle.UploadRecord]:
    store = MemoryStore()
    record, _ = bundle.upload_bundle(make_bundle(tmp_path), store)  # type: ignore[arg-type]
    return store, record


def _rewrite_file_and_manifest(store: MemoryStore, prefix: str) -> None:
    """What anyone with the writer's s3:PutObject can do: new file, new manifest naming its hash, both
    with matching sha256 metadata."""
    forged = b"nothing to see here\n"
    store.put_bytes(f"{prefix}/pg-locks.json", forged)
    manifest = bundle.Manifest.model_validate_json(store.objects[f"{prefix}/manifest.json"])
    for record in manifest.collectors:
        if record.file == "pg-locks.json":
            record.sha256, record.bytes = hashlib.sha256(forged).hexdigest(), len(forged)
    store.put_bytes(f"{prefix}/manifest.json", manifest.model_dump_json(by_alias=True).encode())


def test_an_untouched_bundle_verifies_against_its_anchor(tmp_path: Path) -> None:
    store, record = _uploaded(tmp_path)
    anchor = anchor_of_upload(record, "INC-1", None)
    assert set(anchor.objects) == {"logs-wallet.log", "pg-locks.json", "manifest.json"}
    assert all(o.version_id for o in anchor.objects.values())
    manifest, problems = verify_against_anchor(store, anchor)  # type: ignore[arg-type]
    assert problems == [] and manifest.run_id == "run-1"


def test_a_file_and_its_manifest_rewritten_with_matching_metadata_fail_naming_both(tmp_path: Path) -> None:
    store, record = _uploaded(tmp_path)
    anchor = anchor_of_upload(record, "INC-1", None)
    _rewrite_file_and_manifest(store, record.prefix)
    # The hole this closes: checked against itself, the rewritten bundle is consistent.
    _, self_check = bundle.verify_s3(store, store.objects[f"{record.prefix}/manifest.json"], record.prefix)  # type: ignore[arg-type]
    assert self_check == []
    _, problems = verify_against_anchor(store, anchor)  # type: ignore[arg-type]
    named = {p.split(":", 1)[0] for p in problems}
    assert named == {"manifest.json", "pg-locks.json"}, problems
    assert all("a newer version v2-" in p and "over the anchored version v1-" in p for p in problems)


def test_an_object_added_under_the_prefix_is_named(tmp_path: Path) -> None:
    store, record = _uploaded(tmp_path)
    store.put_bytes(f"{record.prefix}/later.txt", b"?")
    _, problems = verify_against_anchor(store, anchor_of_upload(record, "INC-1", None))  # type: ignore[arg-type]
    assert problems == [f"unexpected object s3://test-bucket/{record.prefix}/later.txt (not in the anchor)"]


def test_without_an_anchor_the_bundle_is_checked_against_itself_and_says_so(tmp_path: Path) -> None:
    store, record = _uploaded(tmp_path)
    _, problems = verify_bundle(store, record.prefix, None)  # type: ignore[arg-type]
    assert len(problems) == 1 and problems[0].startswith("no anchor recorded for s3://test-bucket/")


def test_a_signed_head_verifies_and_a_rewritten_or_foreign_one_does_not() -> None:
    key = b"k" * 32
    head = {**head_of(chain([("flow-run", {"id": "a"})])), "incident_id": "INC-1", "export_sha256": "ab" * 32}
    signed = sign_head(head, key, "env:RP_KEY")
    assert signed["signature"]["key"] == "env:RP_KEY" and check_signature(signed, key) == []
    forged = {**signed, "count": 7}
    assert "does not verify" in check_signature(forged, key)[0]
    assert "does not verify" in check_signature(signed, b"another key")[0]
    assert "is not signed" in check_signature(head, key)[0]
    assert check_signature(head, None) == []
    assert "no audit.signing_key" in check_signature(signed, None)[0]
