"""The warm runner notices new code in the checkout's packages, and only there."""

from __future__ import annotations

import os
from pathlib import Path

from remediation.warm_runner import code_stamp


def _touch(path: Path, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    os.utime(path, (mtime, mtime))


def test_code_stamp_follows_packages_and_ignores_data(tmp_path: Path) -> None:
    _touch(tmp_path / "main.py", 1000)
    _touch(tmp_path / "flows" / "__init__.py", 1000)
    _touch(tmp_path / "flows" / "sub" / "__init__.py", 1000)
    _touch(tmp_path / "evidence" / "INC-1" / "note.py", 9000)  # not a package: data, never imported
    _touch(tmp_path / ".venv" / "pkg" / "__init__.py", 9000)
    assert code_stamp(str(tmp_path)) == 1000
    _touch(tmp_path / "flows" / "sub" / "capture.py", 2000)
    assert code_stamp(str(tmp_path)) == 2000
