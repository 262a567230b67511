"""A 100 MB log is collected over SSH, redacted and uploaded with bounded memory (a subprocess's peak RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter so its peak RSS (VmHWM) is the collector's alone, after imports.
SCRIPT = r"""
import json, sys, time
from pathlib import Path
from remediation.inventory import load_target
from tasks.host import capture_host_command
from tasks.evidence import plan_collectors
from remediation import connect
from remediation.clients.evidence_store import sha256_file

def rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024

log_dir, out_dir = sys.argv[1], sys.argv[2]
real = load_target("sandbox")
host = real.hosts["deploy"].model_copy(update={"log_dir": log_dir, "services": ["big"]})
prof = real.evidence_profiles["full-logs"]
target = real.model_copy(update={"hosts": {"deploy": host}})
spec = next(s for s in plan_collectors(target, prof) if s.name == "logs-big")
base = rss("VmRSS:")
t0 = time.monotonic()
record = capture_host_command.fn(target, prof, spec, out_dir)
t1 = time.monotonic()
stored = connect.evidence_store(target).put_file(f"bench/large/{record.sha256}.log", Path(out_dir) / record.file)
t2 = time.monotonic()
print(json.dumps({"base": base, "peak": rss("VmHWM:"), "bytes": record.bytes, "redactions": record.redactions,
                  "collect_s": t1 - t0, "upload_s": t2 - t1, "uploaded_sha": stored.sha256_hex,
                  "sha": record.sha256}))
"""


def make_log(path: Path, size: int, secret: str) -> None:
    line = "2026-11-23 10:00:00,000 INFO POST /api/v1/wallet/deposit 200 player=p-00042 amount=500 ms=3.2\n"
    block = line * 10_000 + f"2026-11-23 10:00:01,000 ERROR auth failed password={secret}\n"
    with path.open("w") as fh:
        written = 0
        while written < size:
            fh.write(block)
            written += len(block)


def test_large_log_streams_with_bounded_memory(stack: StackInfo, tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    out.mkdir()
    make_log(logs / "big.log", 100 * 1024 * 1024, "planted-pw-123")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(logs), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    growth_mb = (figures["peak"] - figures["base"]) / 2**20
    assert figures["bytes"] >= 100 * 1024 * 1024 - 1024 * 1024
    assert figures["redactions"] > 50 and figures["uploaded_sha"] == figures["sha"]
    assert growth_mb < 80, f"peak RSS grew {growth_mb:.0f} MB over {figures}"
    with (out / "logs-big.log").open("rb") as fh:
        while chunk := fh.read(1 << 20):
            assert b"planted-pw-123" not in chunk
