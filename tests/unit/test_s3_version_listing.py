"""The sandbox S3's ListObjectVersions answers as moto does, looking only at keys under the prefix."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.s3.models import FakeKey

from sandbox.s3_server import narrow_version_listing


@pytest.fixture
def s3() -> Any:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="rp-bucket")
        client.put_bucket_versioning(Bucket="rp-bucket", VersioningConfiguration={"Status": "Enabled"})
        yield client


def _listing(client: Any, prefix: str, page: int = 1000) -> list[tuple[str, bool, bool]]:
    found = []
    for reply in client.get_paginator("list_object_versions").paginate(
            Bucket="rp-bucket", Prefix=prefix, PaginationConfig={"PageSize": page}):
        found += [(v["Key"], v["IsLatest"], False) for v in reply.get("Versions", [])]
        found += [(m["Key"], m["IsLatest"], True) for m in reply.get("DeleteMarkers", [])]
    return sorted(found)


def test_same_answer_and_no_other_key_is_copied(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    s3.put_object(Bucket="rp-bucket", Key="inc/a/1", Body=b"one")
    s3.put_object(Bucket="rp-bucket", Key="inc/a/1", Body=b"one, again")
    s3.put_object(Bucket="rp-bucket", Key="inc/a/2", Body=b"two")
    s3.delete_object(Bucket="rp-bucket", Key="inc/a/2")
    s3.put_object(Bucket="rp-bucket", Key="inc/b/1", Body=b"x" * 100_000)
    before = {page: _listing(s3, "inc/a/", page) for page in (1, 2, 1000)}
    everything = _listing(s3, "")

    narrow_version_listing()
    narrow_version_listing()  # applying it twice changes nothing
    copied: list[str] = []
    getstate = FakeKey.__getstate__

    def recording(self: FakeKey) -> dict[str, Any]:
        copied.append(self.name)
        return getstate(self)

    monkeypatch.setattr(FakeKey, "__getstate__", recording)
    after = {page: _listing(s3, "inc/a/", page) for page in (1, 2, 1000)}

    assert after == before  # pages of one, two and all: the same versions and delete markers
    assert after[1000] == [("inc/a/1", False, False), ("inc/a/1", True, False), ("inc/a/2", False, False),
                           ("inc/a/2", True, True)]
    assert copied and not [name for name in copied if not name.startswith("inc/a/")]
    assert _listing(s3, "") == everything  # no prefix: moto's own listing of the whole bucket
