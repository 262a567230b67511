"""The runbook text of each flow, shown as its description in the Prefect UI."""

from __future__ import annotations

from pathlib import Path

__all__ = ["RUNBOOKS_DIR", "runbook_text"]

RUNBOOKS_DIR = Path(__file__).resolve().parents[2] / "runbooks"


def runbook_text(flow_name: str) -> str:
    """`runbooks/<slug>.md`, where the slug is the flow module's name (`capture-evidence` → `capture_evidence`)."""
    return (RUNBOOKS_DIR / f"{flow_name.replace('-', '_')}.md").read_text()
