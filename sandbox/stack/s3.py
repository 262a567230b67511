"""moto's S3 server on loopback, journaled to disk (`sandbox.s3_server`): the embedded evidence store."""

from __future__ import annotations

import sys
from pathlib import Path

import boto3
from botocore.config import Config

from sandbox.stack.processes import is_running, port_open, start_detached, stop, wait_until

__all__ = ["MotoS3"]


class MotoS3:
    def __init__(self, home: Path, port: int, region: str = "us-east-1") -> None:
        self.port = port
        self.region = region
        self.endpoint = f"http://127.0.0.1:{port}"
        self.pid_file = home / "run" / "moto.pid"
        #: Every accepted write, replayed at start: evidence outlives a restart or a kill -9.
        self.journal = home / "s3-journal"
        self.log_file = home / "logs" / "moto.log"

    def running(self) -> bool:
        return is_running(self.pid_file) and port_open("127.0.0.1", self.port)

    def start(self) -> None:
        if self.running():
            return
        start_detached(
            [sys.executable, "-m", "sandbox.s3_server", "--port", str(self.port), "--journal", str(self.journal)],
            pid_file=self.pid_file, log_file=self.log_file, cwd=Path(__file__).resolve().parents[2],
        )
        wait_until(lambda: port_open("127.0.0.1", self.port), timeout_s=120, what="moto S3", log_file=self.log_file)

    def stop(self) -> bool:
        return stop(self.pid_file)

    def ensure_bucket(self, bucket: str, access_key: str, secret_key: str, *, object_lock: bool = True) -> None:
        s3 = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )
        names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if bucket not in names:
            # Object Lock must be enabled at creation; targets that ask for retention need it.
            s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=object_lock)
