"""A hash chain over export records: change, drop, insert or reorder one and the chain says where.

Each record's hash covers its sequence number, kind, data and the previous record's hash. The
head (last hash, count, and the hash of export.json's bytes) is stored apart from the records —
beside the evidence in S3, in the target's database, in the export run's result — and signed
with an HMAC key held by secret reference: rewriting the export consistently also means forging
a head that neither the database nor the key will vouch for.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

__all__ = ["GENESIS", "SIGNATURE", "chain", "check_signature", "head_of", "record_hash", "sign_head", "verify_chain"]

GENESIS = "0" * 64
SIGNATURE = "signature"
_ALG = "hmac-sha256"


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False).encode()


def record_hash(prev: str, seq: int, kind: str, data: Any) -> str:
    return hashlib.sha256(prev.encode() + _canonical({"seq": seq, "kind": kind, "data": data})).hexdigest()


def chain(items: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """(kind, data) pairs → records with seq, prev and hash, in order."""
    records, prev = [], GENESIS
    for seq, (kind, data) in enumerate(items):
        # Round-trip through JSON so the hash is of exactly what is written and read back.
        plain = json.loads(_canonical(data))
        digest = record_hash(prev, seq, kind, plain)
        records.append({"seq": seq, "kind": kind, "data": plain, "prev": prev, "hash": digest})
        prev = digest
    return records


def head_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"count": len(records), "head": records[-1]["hash"] if records else GENESIS}


def verify_chain(records: list[dict[str, Any]], head: dict[str, Any]) -> list[str]:
    """Problems found, first break first; an empty list means the records are the ones the head seals."""
    problems, prev = [], GENESIS
    for i, rec in enumerate(records):
        if rec.get("seq") != i:
            problems.append(f"record {i}: sequence number {rec.get('seq')!r} (records dropped, added or reordered)")
        if rec.get("prev") != prev:
            problems.append(f"record {i}: does not link to the record before it")
        expected = record_hash(prev, i, str(rec.get("kind")), rec.get("data"))
        if rec.get("hash") != expected:
            problems.append(f"record {i} ({rec.get('kind')}): content changed since export (hash mismatch)")
        prev = str(rec.get("hash"))
    stored = head_of(records)
    if head.get("count") != stored["count"]:
        problems.append(f"chain head says {head.get('count')} records, the export has {stored['count']}")
    if head.get("head") != stored["head"]:
        problems.append("the export's last hash is not the stored chain head")
    return problems


def _signed_part(head: dict[str, Any]) -> bytes:
    return _canonical({k: v for k, v in head.items() if k != SIGNATURE})


def sign_head(head: dict[str, Any], key: bytes, key_ref: str) -> dict[str, Any]:
    """The head with its signature: HMAC-SHA256 over every other field, canonically encoded."""
    value = hmac.new(key, _signed_part(head), hashlib.sha256).hexdigest()
    return {**head, SIGNATURE: {"alg": _ALG, "key": key_ref, "value": value}}


def check_signature(head: dict[str, Any], key: bytes | None) -> list[str]:
    """Problems with the head's signature; `key` None when the target configures no signing key."""
    signature = head.get(SIGNATURE)
    if key is None:
        return ["the chain head is signed, but this target has no audit.signing_key to check it"] if signature else []
    if not isinstance(signature, dict) or signature.get("alg") != _ALG:
        return ["the chain head is not signed (this target signs every head with its audit.signing_key)"]
    expected = hmac.new(key, _signed_part(head), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(str(signature.get("value")), expected):
        return ["the chain head's signature does not verify with the target's audit.signing_key "
                "(the head was rewritten, or signed with another key)"]
    return []
