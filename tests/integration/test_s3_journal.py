"""The sandbox S3 (moto + a write journal) keeps what it stored across a kill -9: same bytes, same version
ids, same modification times, a multipart upload and a key with a space included."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from sandbox.stack.core import PROJECT_DIR
from sandbox.stack.processes import port_open, wait_until

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[list[subprocess.Popen[bytes]], int, Path]]:
    port, procs = _free_port(), []
    yield procs, port, tmp_path / "journal"
    for proc in procs:
        proc.kill()
        proc.wait()


def _start(procs: list[subprocess.Popen[bytes]], port: int, journal: Path) -> None:
    procs.append(subprocess.Popen([sys.executable, "-m", "sandbox.s3_server", "--port", str(port), "--journal",
                                   str(journal)], cwd=PROJECT_DIR, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    wait_until(lambda: port_open("127.0.0.1", port), timeout_s=60, what="journaled S3")


def test_what_was_stored_survives_a_kill_with_its_version_ids(
    server: tuple[list[subprocess.Popen[bytes]], int, Path],
) -> None:
    procs, port, journal = server
    _start(procs, port, journal)
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id="rp-test", aws_secret_access_key="rp-test",
                      config=Config(retries={"max_attempts": 1}))
    s3.create_bucket(Bucket="rp-journal", ObjectLockEnabledForBucket=True)
    first = s3.put_object(Bucket="rp-journal", Key="inc/a b.json", Body=b"first")["VersionId"]
    second = s3.put_object(Bucket="rp-journal", Key="inc/a b.json", Body=b"second")["VersionId"]
    big = os.urandom(11 * 1024 * 1024)
    s3.upload_fileobj(io.BytesIO(big), "rp-journal", "inc/big.log",
                      Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
    big_version = s3.head_object(Bucket="rp-journal", Key="inc/big.log")["VersionId"]
    modified = s3.head_object(Bucket="rp-journal", Key="inc/a b.json")["LastModified"]

    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    assert not port_open("127.0.0.1", port)
    _start(procs, port, journal)

    assert s3.get_object(Bucket="rp-journal", Key="inc/a b.json", VersionId=first)["Body"].read() == b"first"
    latest = s3.get_object(Bucket="rp-journal", Key="inc/a b.json")
    assert latest["VersionId"] == second and latest["Body"].read() == b"second"
    assert latest["LastModified"] == modified
    assert s3.get_object(Bucket="rp-journal", Key="inc/big.log", VersionId=big_version)["Body"].read() == big
    versions = s3.list_object_versions(Bucket="rp-journal", Prefix="inc/")["Versions"]
    assert sorted(v["VersionId"] for v in versions) == sorted([first, second, big_version])
