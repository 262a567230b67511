"""Prefect's result storage, as the S3 client behind it: built once, before the readers and writers."""

from __future__ import annotations

from typing import Any

__all__ = ["build_storage_client"]


def build_storage_client(storage: Any) -> None:
    """Build the S3 client a result storage block's reads and writes ask for, now. prefect-aws caches
    one per credentials object, but threads that miss its cache together each build one (~0.3 s of
    CPU apiece); a storage that is not prefect-aws's S3Bucket has nothing to build."""
    credentials = getattr(storage, "credentials", None)  # prefect-aws's S3Bucket (AWS S3, or the sandbox's)
    if credentials is not None and callable(getattr(credentials, "get_client", None)):
        credentials.get_client("s3")  # as S3Bucket._get_s3_client asks: the same cache key
