"""A 100 MB log is collected over SSH, redacted and uploaded with bounded memory (a subprocess's peak RSS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.stack.info import StackInfo
from tests.fixtures.large_log_probe import make_log, run

pytestmark = pytest.mark.integration
def test_large_log_streams_with_bounded_memory(stack: StackInfo, tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    out.mkdir()
    make_log(logs / "big.log", 100 * 1024 * 1024, "planted-pw-123")
    figures = run(logs, out, timeout_s=240)
    growth_mb = (figures["peak"] - figures["base"]) / 2**20
    assert figures["bytes"] >= 100 * 1024 * 1024 - 1024 * 1024
    assert figures["redactions"] > 50 and figures["uploaded_sha"] == figures["sha"]
    assert growth_mb < 80, f"peak RSS grew {growth_mb:.0f} MB over {figures}"
    with (out / "logs-big.log").open("rb") as fh:
        while chunk := fh.read(1 << 20):
            assert b"planted-pw-123" not in chunk
