"""The warm runner notices when code a warm child imported changes, and only that code."""

from __future__ import annotations

import os
import time
from pathlib import Path

from remediation.runner.child import code_stamp, project_sources


def test_code_stamp_is_the_newest_mtime_and_a_deleted_file_counts_as_changed(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    for path, mtime in ((a, 1000), (b, 2000)):
        path.write_text("")
        os.utime(path, (mtime, mtime))
    assert code_stamp([str(a), str(b)]) == 2000
    b.unlink()
    assert code_stamp([str(a), str(b)]) >= time.time() - 5


def test_project_sources_are_the_checkouts_imported_modules_only() -> None:
    root = Path(__file__).resolve().parents[2]
    import remediation.runner.child  # noqa: F401  (imported: must be listed)

    sources = project_sources(str(root))
    assert str(root / "remediation" / "runner" / "child.py") in sources
    assert all(p.startswith(str(root)) and "/.venv/" not in p for p in sources)
