"""A 100 MB log, and a 64 MB one without newlines, are collected over SSH, redacted and uploaded with
bounded memory (a subprocess's peak RSS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.stack.info import StackInfo
from tests.fixtures.large_log_probe import make_log, make_one_line_log, run

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


def test_a_log_without_newlines_streams_with_bounded_memory(stack: StackInfo, tmp_path: Path) -> None:
    # Waiting for the end of a line that does not come held all of it: a 200 MiB line peaked at 1.5 GB.
    logs, out = tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    out.mkdir()
    make_one_line_log(logs / "big.log", 64 * 1024 * 1024, "planted-pw-456")
    figures = run(logs, out, timeout_s=240)
    growth_mb = (figures["peak"] - figures["base"]) / 2**20
    assert figures["bytes"] >= 63 * 1024 * 1024 and figures["uploaded_sha"] == figures["sha"]
    assert figures["redactions"] >= 60, figures
    assert growth_mb < 80, f"peak RSS grew {growth_mb:.0f} MB over {figures}"
    with (out / "logs-big.log").open("rb") as fh:
        while chunk := fh.read(1 << 20):
            assert b"planted-pw-456" not in chunk
