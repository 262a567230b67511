"""Seed 000's postmortem template, filled from an incident's flow-run history (audit records).

Facts come only from what the runs recorded: timestamps of real state changes, approval
records, lever changes, the revert commit, verification and reconciliation results. What a
machine cannot know (impact figures, action items) is left as the template's prompts for humans.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from remediation.domain.text import md_inline

__all__ = ["business_days_after", "due_date", "render_postmortem", "timeline"]

#: Seed 000: "postmortem deadline: 5 business days for SEV1, 10 for SEV2".
DEADLINE_BUSINESS_DAYS = {"SEV1": 5, "SEV2": 10}


def business_days_after(start: date, days: int) -> date:
    d = start
    while days > 0:
        d += timedelta(days=1)
        if d.weekday() < 5:
            days -= 1
    return d


def due_date(severity: str, declared: date) -> date | None:
    days = DEADLINE_BUSINESS_DAYS.get(severity)
    return business_days_after(declared, days) if days else None


def _approvals(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for rec in records:
        if rec["kind"] != "approval":
            continue
        rows = [line.strip().strip("|").split("|") for line in str(rec["data"]["data"]).splitlines()[2:]]
        out.append({k.strip(): v.strip() for k, v, *_ in (r for r in rows if len(r) >= 2)})
    return out


def _runs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["data"] for r in records if r["kind"] == "flow-run"]


def _started(run: dict[str, Any]) -> str | None:
    running = [s["at"] for s in run["states"] if s["type"] == "RUNNING"]
    return running[0] if running else (run["states"][0]["at"] if run["states"] else None)


def _ended(run: dict[str, Any]) -> str | None:
    return run["states"][-1]["at"] if run["states"] else None


def _hhmm(stamp: str | None) -> str:
    return datetime.fromisoformat(stamp).strftime("%H:%M:%S") if stamp else "--:--"


def timeline(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(UTC timestamp, what happened), oldest first, from real state changes and records."""
    events: list[tuple[str, str]] = []
    for run in _runs(records):
        flow, result = run["flow"], run["result"] if isinstance(run["result"], dict) else {}
        who = run["parameters"].get("initiated_by") or "unknown"
        start, end = _started(run), _ended(run)
        name, message = run["final"]["name"], run["final"]["message"]
        # Run messages, who started a run and approvers' reasons come from outside: literal text here.
        final = md_inline(f"{name}: {message}" if message else str(name), limit=600)
        who = md_inline(who)
        done = run["final"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
        if flow == "capture-evidence":
            if str(who).startswith("alert:") and start:
                events.append((start, f"alert fired ({who}); evidence capture auto-started"))
            if end:
                where = f" ({md_inline(result['s3'])})" if result.get("s3") and str(result["s3"]) not in str(
                    message) else ""
                events.append((end, f"evidence captured — {final}{where}"))
        elif flow == "respond" and start:
            severity = md_inline(run["parameters"].get("severity", ""))
            events.append((start, f"incident declared {severity} and acknowledged by {who}"))
            if end and done:  # the postmortem usually runs inside the loop, before it ends
                events.append((end, f"response loop ended — {final}"))
        elif flow in ("contain", "recover", "rollback", "reconcile", "verify-round-trip", "snapshot-context") \
                and end and done:
            if flow == "rollback" and isinstance(result.get("revert"), dict):
                events.append((end, f"rollback: reverted `{md_inline(result['plan']['bad']['sha'][:12])}` with "
                                    f"`{md_inline(result['revert']['sha'][:12])}` — {final}"))
            else:
                events.append((end, f"{flow} — {final}"))
    for a in _approvals(records):
        if a.get("decided_at"):
            decided = f"{md_inline(a.get('decision'))}: {md_inline(a.get('step'))}"
            events.append((a["decided_at"], f"approval {decided} by {md_inline(a.get('approver') or 'nobody')} "
                                            f"({md_inline(a.get('reason'))})"))
    return sorted((e for e in events if e[0]), key=lambda e: e[0])


def _rollback(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    for run in _runs(records):
        result = run["result"] if isinstance(run["result"], dict) else {}
        if run["flow"] == "rollback" and isinstance(result.get("plan"), dict):
            return result
    return None


#: The target's deadline for a declaration time: (when, how it was reckoned), e.g. "48 hours after …".
DueRule = Callable[[datetime], tuple[datetime | None, str]]


def _seed_000_due(severity: str) -> DueRule:
    def due(declared: datetime) -> tuple[datetime | None, str]:
        day = due_date(severity, declared.date())
        return (datetime.combine(day, declared.timetz()) if day else None,
                f"{DEADLINE_BUSINESS_DAYS.get(severity, '—')} business days after {declared.date().isoformat()}, "
                "seed 000")
    return due


def render_postmortem(incident_id: str, severity: str, title: str, records: list[dict[str, Any]],
                      authors: list[str], outcome: str | None = None, due_rule: DueRule | None = None,
                      escalated: list[str] | None = None) -> str:
    """`due_rule`: the target's postmortem deadline (default seed 000's); `escalated`: who the response loop
    escalated to and when, one line each (they are part of the timeline)."""
    events = timeline(records)
    events = sorted(events + [(line.split(" ", 1)[0], md_inline(line.split(" ", 1)[1])) for line in escalated or []
                              if " " in line])
    runs = _runs(records)
    starts = [s for s in (_started(r) for r in runs) if s]
    first = min(starts) if starts else None
    declared_at = datetime.fromisoformat(first) if first else datetime.now(UTC)
    declared = declared_at.date()
    due_at, reckoned = (due_rule or _seed_000_due(severity))(declared_at)
    due = due_at.date() if due_at else None
    rollback = _rollback(records)
    respond = next((r for r in runs if r["flow"] == "respond"), None)
    alert = next((r for r in runs if str(r["parameters"].get("initiated_by", "")).startswith("alert:")), None)
    if rollback is not None:
        bad = rollback["plan"]["bad"]
        root = (f"Commit `{bad['sha'][:12]}` \"{md_inline(bad['subject'])}\" by {md_inline(bad['author'])} "
                f"({rollback['plan']['bad_age_hours']:.1f} h old when found), deployed on "
                f"{rollback['plan']['host']}. <the mechanism, for a human to complete>")
    else:
        root = "<the actual mechanism, not \"a bug\". Reference commit / config / external dependency.>"
    detection = (f"Alert `{md_inline(alert['parameters']['initiated_by'])}` started evidence capture at "
                 f"{_started(alert)} UTC."
                 if alert else "<no alert on record: a human noticed first — why did monitoring miss it?>")
    if outcome is None and respond is not None and respond["final"]["message"]:
        outcome = f"{respond['final']['name']}: {respond['final']['message']}"
    # The title and the outcome (approvers' reasons in it) are typed by people: literal text too.
    title, outcome = md_inline(title), (md_inline(outcome, limit=600) if outcome else outcome)
    resolution = outcome or "<what action ended the incident.>"
    lines = [
        f"# Postmortem: {severity} {title}", "",
        "## Date", declared.isoformat(), "",
        "## Authors", *[f"- {md_inline(a)}" for a in authors], "",
        "## Summary",
        f"{incident_id}: {title}. Outcome of the response loop — {outcome or 'see the timeline'}.", "",
        "## Timeline (UTC)",
        *[f"- {stamp[:10]} {_hhmm(stamp)} — {what}" for stamp, what in events], "",
        "## Impact",
        "- users affected: <fill in>", "- revenue / money at risk: <fill in>",
        f"- duration of degraded service: {_duration(first, events[-1][0] if events else None)}", "",
        "## Root Cause", root, "",
        "## Detection", detection, "",
        "## Resolution", resolution, "",
        "## Action Items (must have owners + due dates)",
        f"- [ ] @owner — prevent: <change so this class of failure can't recur> — due {due or '<date>'}",
        f"- [ ] @owner — detect: <monitor / alert that would have caught this earlier> — due {due or '<date>'}",
        f"- [ ] @owner — recover: <runbook / tooling that would have shortened MTTR> — due {due or '<date>'}", "",
        f"Postmortem due: {due_at.strftime('%Y-%m-%d %H:%M UTC') if due_at else 'no deadline for ' + severity} "
        f"({reckoned}).",
    ]
    return "\n".join(lines) + "\n"


def _duration(first: str | None, last: str | None) -> str:
    if not first or not last:
        return "<fill in>"
    seconds = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    return f"{seconds / 60:.1f} min from the first recorded run to the last recorded event"
