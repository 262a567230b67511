"""Bookkeeping for the respond flow: run each step, decide whether the loop goes on, tell the channel.

A step's subflow answers with its final state and, in its data, an `outcome`: `skip` (the approver
skipped it, with a reason) lets the loop go on; `reject` or `timeout` ends it safely there,
with the system as that step found it; a failed step ends it unless the step is marked
`must_pass=False` (the round trip while a lever still blocks it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from prefect.states import State

from remediation.clients.status_webhook import StatusSender
from remediation.domain.escalation import due_steps, escalation_text
from remediation.domain.status import initial_text, resolved_text, update_text
from remediation.target.connect import contact_channel, status_channel
from remediation.target.inventory import Target

__all__ = ["PATTERNS", "Loop", "Pattern", "PeriodicUpdates", "Step"]

_STATUS_AFTER = {"contain": "Identified", "rollback": "Monitoring", "reconcile": "Monitoring", "recover": "Monitoring"}
_RISKY_ORDER = ("contain", "rollback", "reconcile", "recover")


@dataclass
class Step:
    name: str
    call: Callable[[], State]
    risky: bool = True
    must_pass: bool = True
    #: Skip without asking, for this reason (e.g. no lever chosen).
    skip_reason: str | None = None


@dataclass
class PeriodicUpdates:
    """Sends `make_text()` every `interval_s` until stopped; the first one after one interval."""

    interval_s: float
    make_text: Callable[[], str]
    sender: StatusSender
    sent: list[datetime] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="status-updates", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.sender.send(self.make_text()):
                self.sent.append(datetime.now(UTC))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _logger() -> Any:
    """The run's logger (into the UI) inside a run; the module's outside one."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("remediation.respond")


def _data(state: State) -> dict[str, Any]:
    try:
        data = state.result(raise_on_failure=False)
    except Exception as exc:  # a crashed subflow has no readable result; its message says why
        return {"error": f"{type(exc).__name__}: {exc}"}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Pattern:
    """Which risky steps a response loop has, and when it is all-clear."""

    risky: tuple[str, ...]
    clear: Callable[[dict[str, dict[str, Any]]], bool]
    #: Said when it is: what was proven.
    clear_text: str
    #: The steps whose messages say why it is not.
    deciding: tuple[str, ...]


def _seed000_clear(results: dict[str, dict[str, Any]]) -> bool:
    round_trip = results.get("recover", {}).get("round_trip")
    reconciled = results.get("reconcile", {})
    return (isinstance(round_trip, dict) and bool(round_trip.get("ok"))
            and reconciled.get("state") == "COMPLETED" and reconciled.get("outcome") in ("clean", "applied"))


def _restarted_and_verified(results: dict[str, dict[str, Any]]) -> bool:
    restarted, verified = results.get("restart-service", {}), results.get("verify-round-trip", {})
    return (restarted.get("state") == "COMPLETED" and restarted.get("outcome") == "applied"
            and verified.get("state") == "COMPLETED" and bool(verified.get("ok")))


PATTERNS = {
    # Seed 000: contain, roll back, reconcile, recover; all-clear on recover's round trip and clean books.
    "bad-deploy": Pattern(_RISKY_ORDER, _seed000_clear, "round trip passed and reconciliation clean",
                          ("recover", "reconcile")),
    # Seed 003 "API down": logs first, restart one instance at a time, then a real round trip.
    "api-down": Pattern(("restart-service",), _restarted_and_verified,
                        "instances restarted one at a time and a round trip passed",
                        ("restart-service", "verify-round-trip")),
}


class Loop:
    """`dry_run`: nothing leaves the run — no status update is posted (each is kept in `would_post`
    and logged) and the escalation ladder is not run: a dry run must not tell the channel, or page
    anyone, about an incident it is only rehearsing."""

    def __init__(self, target: Target, incident_id: str, severity: str, title: str, impact: str,
                 interval_s: float, pattern: str = "bad-deploy", *, dry_run: bool = False) -> None:
        self.pattern = PATTERNS[pattern]
        self.dry_run = dry_run
        self.would_post: list[str] = []
        self.target, self.incident_id, self.severity = target, incident_id, severity
        self.title, self.impact, self.interval_s = title, impact, interval_s
        self.rows: list[dict[str, Any]] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.stopped_at: str | None = None
        self.stop_reason = ""
        self.stopped_safely = False
        self.status = "Investigating"
        self.started = datetime.now(UTC)
        self._sender = status_channel(target)
        self._periodic: PeriodicUpdates | None = None
        self.updates_sent = 0
        service = target.notifications.service if target.notifications else target.description or target.name
        self.service = service
        #: The target's ladder for this severity (seed 001's matrix); each step taken once while open.
        self.ladder = target.escalation.ladder.get(severity, [])  # type: ignore[call-overload]
        self.escalated: list[dict[str, Any]] = []
        self._escalations = threading.Event()
        self._escalator: threading.Thread | None = None

    @property
    def _every_min(self) -> float | None:
        return self.interval_s / 60 if self.severity in ("SEV1", "SEV2") else None

    def _send(self, text: str) -> None:
        if self.dry_run:
            self.would_post.append(text)
            _logger().info("dry run: not posted to the status channel: %s", text.splitlines()[0] if text else "")
            return
        if self._sender.send(text):
            self.updates_sent += 1

    def _progress(self) -> str:
        return "; ".join(f"{r['step']}: {r['outcome']}" for r in self.rows) or "acknowledged"

    def _update(self) -> str:
        remaining = [s for s in self.pattern.risky if s not in self.results]
        return update_text(self.severity, self.service, self.incident_id, self.status, self.impact,
                           self._progress(), ", ".join(remaining) or "postmortem", self._every_min)

    def escalate_due(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Take the ladder's steps whose time has come: post to each role's contact, record it in the
        timeline (a row of the loop's table) and in `escalated`."""
        now = now or datetime.now(UTC)
        open_s = (now - self.started).total_seconds()
        taken = []
        for i, step in due_steps(self.ladder, open_s, {e["index"] for e in self.escalated}):
            contact = self.target.escalation.contacts[step.role]
            sent = contact_channel(contact).send(escalation_text(
                self.severity, self.service, self.incident_id, step.role, contact.name, open_s / 60, self.status,
                self.impact, self._progress()))
            entry = {"index": i, "role": step.role, "name": contact.name, "after_s": step.after_s,
                     "at": now.isoformat(), "posted": sent}
            self.escalated.append(entry)
            taken.append(entry)
            self.rows.append({"step": "escalate", "outcome": f"{step.role} ({contact.name})",
                              "message": f"open {open_s / 60:.0f} min; ladder step {i + 1} at {step.after_s:g} s; "
                                         + ("posted" if sent else "NOT delivered: the contact's webhook failed"),
                              "at": now.isoformat()})
            _logger().warning("%s open %.0f min: escalated to %s (%s)%s", self.incident_id, open_s / 60,
                              step.role, contact.name, "" if sent else " — not delivered")
        return taken

    def escalated_lines(self) -> list[str]:
        """For the postmortem's timeline: `<UTC time> escalated to <role> (<name>) …`."""
        def span(s: float) -> str:
            return f"{s / 60:g} min" if s >= 60 else f"{s:g} s"

        return [f"{e['at']} escalated to {e['role']} ({e['name']}) after {span(e['after_s'])} open"
                + ("" if e["posted"] else " — NOT delivered") for e in self.escalated]

    def _escalate_while_open(self) -> None:
        while not self._escalations.wait(1.0):
            try:
                self.escalate_due()
            except Exception as exc:  # a contact down must not end the response loop
                _logger().warning("escalation check failed: %s", type(exc).__name__)
            if len(self.escalated) == len(self.ladder):
                return

    def start(self, who: str) -> None:
        if self.ladder and not self.dry_run:
            self._escalator = threading.Thread(target=self._escalate_while_open, name="escalation", daemon=True)
            self._escalator.start()
        elif self.ladder:
            get_run_logger().info("dry run: escalation ladder not run (%s)", ", ".join(
                f"{s.role} after {s.after_s:g} s" for s in self.ladder))
        self._send(initial_text(self.severity, self.service, self.incident_id, self.impact, self._every_min))
        if self._every_min is not None and not self.dry_run:
            self._periodic = PeriodicUpdates(self.interval_s, self._update, self._sender)
            self._periodic.start()
        get_run_logger().info("status updates: %s", "none posted (dry run)" if self.dry_run else
                              f"every {self.interval_s:g} s and at each step" if self._every_min
                              else "at each step (SEV3/SEV4: no periodic updates)")

    def run(self, step: Step) -> bool:
        """Run one step; False when the loop must stop here."""
        log = get_run_logger()
        if step.skip_reason:
            return self._record(step, "skipped", step.skip_reason, go_on=True)
        log.info("step %s", step.name)
        state = step.call()
        data = _data(state)
        message = state.message or ""
        self.results[step.name] = {"state": state.type.value, "message": message, **data}
        outcome = str(data.get("outcome") or state.type.value.lower())
        approval = data.get("approval") if isinstance(data.get("approval"), dict) else None
        if outcome == "skip":
            why = f"skipped by {approval['approver']}: {approval['reason']}" if approval else message
            return self._record(step, "skipped", why, go_on=True)
        if outcome in ("reject", "timeout"):
            self.stopped_at, self.stopped_safely = step.name, True
            who = f" by {approval['approver']}" if approval and approval.get("approver") else ""
            self.stop_reason = f"{outcome}{who}" + (f" ({approval['reason']})" if approval else "")
            return self._record(step, outcome, message, go_on=False)
        if not state.is_completed():
            if step.must_pass:
                self.stopped_at, self.stop_reason = step.name, f"{step.name} failed: {message}"
                return self._record(step, "failed", message, go_on=False)
            return self._record(step, "failed (loop goes on)", message, go_on=True)
        self.status = _STATUS_AFTER.get(step.name, self.status)
        return self._record(step, outcome, message, go_on=True)

    def _record(self, step: Step, outcome: str, message: str, *, go_on: bool) -> bool:
        self.rows.append({"step": step.name, "outcome": outcome, "message": message[:500],
                          "at": datetime.now(UTC).isoformat()})
        get_run_logger().info("step %s: %s — %s", step.name, outcome, message[:300])
        self._send(self._update())
        return go_on

    def all_clear(self) -> bool:
        return self.stopped_at is None and self.pattern.clear(self.results)

    def outcome(self, dry_run: bool) -> str:
        """One line on how the loop ended, for the postmortem (which runs before this run is final)."""
        return " ".join(self._outcome(dry_run).split())[:600]

    def _outcome(self, dry_run: bool) -> str:
        if self.stopped_at is not None:
            how = "safely, with the system as that step found it" if self.stopped_safely else "— escalate"
            return f"loop ended at {self.stopped_at}: {self.stop_reason} {how}"[:600]
        if dry_run:
            return "dry run: every step shown, nothing changed"
        if self.all_clear():
            return f"all-clear: {self.pattern.clear_text}; " + self._progress()[:400]
        return ("loop done but NOT all-clear: " + self.why_not_clear())[:600]

    def why_not_clear(self) -> str:
        return "; ".join(f"{step}: {self.results.get(step, {}).get('message')}" for step in self.pattern.deciding)

    def finish(self) -> None:
        self._escalations.set()
        if self._escalator is not None:
            self._escalator.join(timeout=5)
        if self._periodic is not None:
            self._periodic.stop()
            self.updates_sent += len(self._periodic.sent)
        minutes = (datetime.now(UTC) - self.started).total_seconds() / 60
        if self.all_clear():
            rollback = self.results.get("rollback", {})
            plan = rollback.get("plan") if isinstance(rollback.get("plan"), dict) else None
            root = f"commit {plan['bad']['sha'][:12]} \"{plan['bad']['subject']}\"" if plan and rollback.get(
                "revert") else "see postmortem"
            self.status = "Resolved"
            self._send(resolved_text(self.severity, self.service, self.incident_id, f"{minutes:.0f} min", root,
                                     self._progress(), "the postmortem deadline (see the postmortem draft)"))
        else:
            self._send(self._update())

    def table(self) -> list[dict[str, Any]]:
        return list(self.rows)
