"""The export as a self-contained markdown report an auditor can read without the Prefect UI."""

from __future__ import annotations

from typing import Any

from remediation.domain.text import md_inline

__all__ = ["render"]


def _cell(value: Any) -> str:
    return str(value if value is not None else "—").replace("|", "\\|").replace("\n", " ")[:300]


def render(export: dict[str, Any]) -> str:
    records = export["records"]
    runs = [r["data"] for r in records if r["kind"] == "flow-run"]
    out = [
        f"# Audit export: {export['incident_id']}",
        "",
        f"- target: `{export['target']}`",
        f"- generated: {export['generated_at']} (UTC)",
        f"- flow runs: {export['runs']}{' (truncated)' if export.get('truncated') else ''}; records: {len(records)}",
        f"- chain head: `{export['chain_head']['head']}` over {export['chain_head']['count']} records "
        "(stored beside the evidence as `chain-head.json`; `python -m remediation.cli audit verify` re-checks it)",
        "",
        "## Flow runs",
        "",
        "| started | flow | run | trigger | initiated by | final state |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        first = run["states"][0]["at"] if run["states"] else None
        out.append(f"| {_cell(first)} | {_cell(run['flow'])} | `{run['id'][:8]}` {_cell(run['name'])} | "
                   f"{_cell(run['trigger']['kind'])} | {_cell(run['trigger']['initiated_by'])} | "
                   f"{_cell(run['final']['name'])}: {md_inline(run['final']['message'])} |")
    approvals = [r["data"] for r in records if r["kind"] == "approval"]
    out += ["", "## Approvals", ""]
    out += [f"### `{a['key']}` (run `{a['flow_run_id'][:8]}`)\n\n{a['data']}\n" for a in approvals] or ["none", ""]
    changes = [r["data"] for r in records if r["kind"] == "change-log"]
    out += ["", "## Lever changes (the write-ahead change log)", "",
            "| intended | lever | resource | before → after | approvers | outcome | at | note |",
            "|---|---|---|---|---|---|---|---|"]
    out += [f"| {_cell(c['intended_at'])} | {_cell(c['lever'] + (' (undo)' if c['undo'] else ''))} | "
            f"{_cell(c['resource'])} | `{_cell(c['before'])}` → `{_cell(c['after'])}` | "
            f"{_cell(', '.join(c['approvers']))} | {_cell(c['outcome'] or 'NONE')} | {_cell(c['outcome_at'])} | "
            f"{md_inline(c['note'])} |" for c in changes] or ["| none | | | | | | | |"]
    out += ["", "## State changes", ""]
    for run in runs:
        out += [f"### {run['flow']} `{run['id'][:8]}`", "", "| at | state | message |", "|---|---|---|"]
        out += [f"| {_cell(s['at'])} | {_cell(s['name'])} | {md_inline(s['message'])} |" for s in run["states"]]
        out += ["", "Parameters (secrets masked): `" + _cell(run["parameters"]) + "`", ""]
    checks = [r["data"] for r in records if r["kind"] == "evidence-check"]
    out += ["## Evidence re-verified in S3", "", "| bundle | files | ok | problems |", "|---|---|---|---|"]
    out += [f"| {_cell(c['bundle'])} | {c['files']} | {c['ok']} | {_cell('; '.join(c['problems']))} |"
            for c in checks] or ["| none | | | |"]
    return "\n".join(out) + "\n"
