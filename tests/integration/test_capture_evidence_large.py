"""A 100 MB log, and a 64 MB one without newlines, are collected over SSH, redacted and uploaded with
bounded memory (a subprocess's peak RSS)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.stack.info import StackInfo
from tests.fixtures.large_log_probe import make_log, make_one_line_log, run

pytestmark = pytest.mark.integration


def _capture(tmp_path: Path, make: Callable[[Path, int, str], None], size: int, secret: str) -> dict[str, Any]:
    """Write the log with `make`, run the probe on it; its figures, once the bounds every size shares
    hold: memory growth under 80 MB, the upload's hash the file's, and the secret nowhere in the file."""
    logs, out = tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    out.mkdir()
    make(logs / "big.log", size, secret)
    figures = run(logs, out, timeout_s=240)
    growth_mb = (figures["peak"] - figures["base"]) / 2**20
    assert growth_mb < 80, f"peak RSS grew {growth_mb:.0f} MB over {figures}"
    assert figures["uploaded_sha"] == figures["sha"]
    with (out / "logs-big.log").open("rb") as fh:
        while chunk := fh.read(1 << 20):
            assert secret.encode() not in chunk
    return figures


def test_large_log_streams_with_bounded_memory(stack: StackInfo, tmp_path: Path) -> None:
    figures = _capture(tmp_path, make_log, 100 * 1024 * 1024, "planted-pw-123")
    assert figures["bytes"] >= 100 * 1024 * 1024 - 1024 * 1024
    assert figures["redactions"] > 50


def test_a_log_without_newlines_streams_with_bounded_memory(stack: StackInfo, tmp_path: Path) -> None:
    # Waiting for the end of a line that does not come held all of it: a 200 MiB line peaked at 1.5 GB.
    figures = _capture(tmp_path, make_one_line_log, 64 * 1024 * 1024, "planted-pw-456")
    assert figures["bytes"] >= 63 * 1024 * 1024
    assert figures["redactions"] >= 60, figures
