"""The runbook text of each flow, shown as its description in the Prefect UI."""

from __future__ import annotations

from pathlib import Path

__all__ = ["RUNBOOKS_DIR", "runbook_text"]

RUNBOOKS_DIR = Path(__file__).resolve().parent.parent / "runbooks"


def runbook_text(slug: str) -> str:
    return (RUNBOOKS_DIR / f"{slug}.md").read_text()
