"""A hash chain over export records: change, drop, insert or reorder one and the chain says where.

Each record's hash covers its sequence number, kind, data and the previous record's hash. The
head (last hash and count) is stored apart from the records — beside the evidence in S3 — so
rewriting the export consistently also means rewriting the stored head.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["GENESIS", "chain", "head_of", "record_hash", "verify_chain"]

GENESIS = "0" * 64


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
