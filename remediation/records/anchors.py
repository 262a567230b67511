"""Anchors: what was uploaded to S3, recorded outside the bucket when it was verified.

Anyone holding the evidence writer's S3 credentials can put a new version of a file *and* of its
manifest with matching `sha256` metadata; a bundle checked only against itself then reads OK.
The anchor is the comparison that does not trust the bucket: each object's version id and hash
and the manifest's (or export's) hash, kept in the target's database in an append-only table.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from remediation.clients.database import Database
from remediation.errors import ConflictError
from remediation.records.schema import ANCHORS, table_exists, with_schema

__all__ = ["Anchor", "AnchoredObject", "EvidenceAnchors"]


class AnchoredObject(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    sha256: str
    bytes: int
    #: None only where the bucket has no versioning (then a newer write cannot be told apart).
    version_id: str | None = None


class Anchor(BaseModel):
    model_config = ConfigDict(frozen=True)

    prefix: str
    bucket: str
    kind: Literal["bundle", "audit-export"]
    incident_id: str
    #: The manifest's SHA-256 (a bundle) or export.json's (an audit export).
    sha256: str
    #: File name -> where and what it was.
    objects: dict[str, AnchoredObject]
    chain_head: dict[str, Any] | None = None
    flow_run_id: str | None = None
    at: datetime | None = None

    def same_content(self, other: Anchor) -> bool:
        return (self.sha256, self.objects, self.chain_head) == (other.sha256, other.objects, other.chain_head)


class EvidenceAnchors:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, anchor: Anchor) -> Anchor:
        """Store the anchor; a retry with the same content is a no-op, different content is refused."""
        with with_schema(self.db) as tx:
            tx.execute(
                "INSERT INTO rp_evidence_anchors (prefix, bucket, kind, incident_id, sha256, objects, chain_head,"
                " flow_run_id) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s) ON CONFLICT (prefix) DO NOTHING",
                (anchor.prefix, anchor.bucket, anchor.kind, anchor.incident_id, anchor.sha256,
                 json.dumps({k: v.model_dump() for k, v in anchor.objects.items()}),
                 json.dumps(anchor.chain_head) if anchor.chain_head is not None else None, anchor.flow_run_id),
            )
            row = tx.fetch_one("SELECT * FROM rp_evidence_anchors WHERE prefix = %s", (anchor.prefix,))
        assert row is not None
        stored = _anchor(row)
        if not stored.same_content(anchor):
            raise ConflictError(f"s3://{anchor.bucket}/{anchor.prefix}/ was anchored at {stored.at} with other "
                                f"content (manifest sha256 {stored.sha256}); the first anchor stands")
        return stored

    def get(self, prefix: str) -> Anchor | None:
        with self.db.transaction() as tx:
            if not table_exists(tx, ANCHORS):
                return None
            row = tx.fetch_one("SELECT * FROM rp_evidence_anchors WHERE prefix = %s", (prefix.strip("/"),))
        return _anchor(row) if row else None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _anchor(row: dict[str, Any]) -> Anchor:
    return Anchor(prefix=row["prefix"], bucket=row["bucket"], kind=row["kind"], incident_id=row["incident_id"],
                  sha256=row["sha256"], objects=_json(row["objects"]), chain_head=_json(row["chain_head"]),
                  flow_run_id=row["flow_run_id"], at=row["at"])
