"""What happens to an authenticated, parsed alert group: route → name → start or record.

- firing and routed: one `capture-evidence` run per group and start (idempotency key),
  tagged `incident:<id>`, `runbook:capture-evidence`, `target:<name>`, `alert:<source>`,
  `severity:<sev>`; a newly created run is also recorded as a `remediation.alert.firing` event.
  The first notification is journaled, then started by the dispatcher; the answer waits for
  the run id only while nothing is queued ahead (`start_wait_s`), else it says `accepted`.
- resolved: recorded (log line + `remediation.alert.resolved` event), nothing started.
- no route: per `unmatched`, recorded as `remediation.alert.unrouted` (202) or refused (422).
- bounds (`limits.py`): a group not admitted before must fit the start queue (else 503) and its
  source's and route's buckets (else 429), both counted as `remediation.alert.throttled` events;
  past its target's run cap it is answered 202 `capped` and recorded as `remediation.alert.capped`.
  Only a bounded, redacted subset of labels is stored (`stored`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from remediation.alerts.dispatch import StartDispatcher
from remediation.alerts.identity import GroupIdentity, group_fingerprint, identify
from remediation.alerts.journal import IntakeJournal, JournalEntry
from remediation.alerts.limits import Admission, Overflow, Refusal, kept_labels, redact_text
from remediation.alerts.models import AlertGroup
from remediation.alerts.routing import ReceiverConfig, RouteAction
from remediation.alerts.starter import AlertRecord, CaptureRequest, RunStarter, StartedRun, StartError
from remediation.evidence.alert_context import AlertContext

__all__ = ["RUNBOOK", "AlertIntake", "Outcome", "Throttled", "Unroutable"]

RUNBOOK = "capture-evidence"
log = logging.getLogger("remediation.alerts")


class Unroutable(Exception):
    """No route matched and the config says `unmatched = "reject"`."""


class Throttled(Exception):
    """A new group refused for now: 429 (a rate limit) or 503 (the start queue is full), + Retry-After."""

    def __init__(self, status: int, retry_after_s: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.retry_after_s = status, retry_after_s


@dataclass(frozen=True)
class Outcome:
    status: Literal["started", "accepted", "deduplicated", "resolved", "unrouted", "ignored", "capped"]
    incident_id: str | None
    flow_run_ids: list[str] = field(default_factory=list)
    deduplicated: bool = False
    target: str | None = None
    route: str | None = None
    severity: str | None = None
    detail: str = ""

    def body(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Stored:
    """What of a group may be stored (parameters, journal, events): bounded and redacted."""

    labels: dict[str, str]
    labels_left_out: int
    group_key: str
    summary: str


def stored(config: ReceiverConfig, group: AlertGroup, route: str | None) -> Stored:
    limits = config.limits
    labels, left_out = kept_labels(group.labels, config.route_labels(route) if route else [], limits)
    return Stored(labels, left_out, redact_text(group.group_key, 512), redact_text(group.summary, 500))


def capture_request(
    config: ReceiverConfig, group: AlertGroup, ident: GroupIdentity, action: RouteAction, kept: Stored,
) -> CaptureRequest:
    alert = AlertContext(
        source=group.source, fingerprint=ident.fingerprint, group_key=kept.group_key,
        starts_at=group.starts_at, labels=kept.labels, summary=kept.summary,
    )
    return CaptureRequest(
        deployment=config.deployment,
        idempotency_key=ident.idempotency_key,
        run_name=f"capture-{ident.incident_id}",
        parameters={
            "incident_id": ident.incident_id,
            "target": action.target,
            "profile": action.profile,
            "initiated_by": f"alert:{group.source}:{ident.short_fingerprint}",
            "alert": alert.model_dump(mode="json"),
            "dry_run": False,
        },
        tags=(
            f"incident:{ident.incident_id}", f"runbook:{RUNBOOK}", f"target:{action.target}",
            f"alert:{group.source}", f"severity:{action.severity}",
        ),
    )


class AlertIntake:
    def __init__(
        self, config: ReceiverConfig, starter: RunStarter, journal: IntakeJournal, *, batch_delay_s: float = 0.25,
        backoff_s: float = 0.5,
    ) -> None:
        self.config = config
        self.starter = starter
        self.journal = journal
        self.batch_delay_s = batch_delay_s
        self._buffer: list[AlertRecord] = []
        self._flusher: asyncio.Task[None] | None = None
        self.dispatcher = StartDispatcher(starter, journal, concurrency=config.start_concurrency, record=self._later,
                                          backoff_s=backoff_s)
        self.admission = Admission(config.limits)
        self.overflow = Overflow()
        #: Groups whose first notification is opening its episode on the journal's thread: a second
        #: notification of the group waits for it, then finds the start claimed and is a repeat
        #: (admitted and counted once).
        self._opening: dict[str, asyncio.Future[None]] = {}
        window = config.limits.runs_window_s
        seeded: dict[str, list[float]] = {}
        for target, age in journal.accepted_since(time.time() - window):
            seeded.setdefault(target, []).append(age)
        for target, ages in seeded.items():
            self.admission.seed(target, ages)

    def _admit_new(self, group: AlertGroup, ident: GroupIdentity, route: str | None) -> None:
        """A group not admitted before must fit the start queue and its source's and route's buckets."""
        if route is not None and self.dispatcher.backlog >= self.config.limits.max_queue:
            self._overflowed("queue-full", group, ident, route)
            raise Throttled(503, 5, f"the receiver's start queue is full ({self.config.limits.max_queue} groups "
                                    "waiting for Prefect); nothing was journaled or started, retry later")
        refusal = self.admission.rate(group.source, route, self.config.route_rate(route) if route else None)
        if refusal is not None:
            self._overflowed(refusal.reason, group, ident, route)
            raise Throttled(429, refusal.retry_after_s, refusal.detail)

    async def _open_episode(self, fingerprint: str, seen: dt.datetime) -> dt.datetime:
        """On the journal's thread (a write on the event loop would hold every request behind a
        commit's fsync). Released before the caller claims the start, with no await in between:
        the waiters resume only after the claim."""
        opening = self._opening[fingerprint] = asyncio.get_running_loop().create_future()
        try:
            started: dt.datetime = await self.dispatcher.in_io(self.journal.open_episode, fingerprint, seen)
            return started
        finally:
            del self._opening[fingerprint]
            opening.set_result(None)

    def _repeat(self, key: str) -> bool:
        return self.dispatcher.lookup(key) is not None or self.journal.admitted(key)

    async def handle(self, group: AlertGroup) -> Outcome:
        fingerprint = group_fingerprint(group)
        while (opening := self._opening.get(fingerprint)) is not None:
            await asyncio.shield(opening)
        episode = self.journal.current_episode(fingerprint) if group.episodic else None
        ident = identify(group, episode)
        routed = self.config.route(group)
        if group.status == "resolved":
            if not self._repeat(ident.idempotency_key):
                self._admit_new(group, ident, None)
            # Recorded before the episode closes: a failed record answers 503 and the retry is filed alike.
            await self.starter.record(self._record("resolved", group, ident, routed))
            if episode is not None:
                await self.dispatcher.in_io(self.journal.close_episode, fingerprint)
            log.info("alert %s %s resolved: group %s recorded, nothing started", group.source, ident.incident_id,
                     ident.fingerprint)
            return self._outcome("resolved", ident, routed)
        if routed is None:
            if self.config.unmatched == "reject":
                raise Unroutable(f"no route matches the alert's {len(group.labels)} labels and there is no [default]")
            self._admit_new(group, ident, None)
            kept = stored(self.config, group, None)
            self._later(self._record("unrouted", group, ident, None, kept))
            shown = ", ".join(f"{k}={v}" for k, v in kept.labels.items())
            more = f" (+{kept.labels_left_out} more)" if kept.labels_left_out else ""
            log.warning("alert %s %s unrouted: labels %s%s match no route; nothing started",
                        group.source, ident.incident_id, shown, more)
            return Outcome(status="unrouted", incident_id=ident.incident_id, detail="no route matched; nothing started")
        name, action = routed
        ticket = self.dispatcher.lookup(ident.idempotency_key)
        if ticket is None:
            if not self.journal.admitted(ident.idempotency_key):
                self._admit_new(group, ident, name)
                capped = self.admission.cap(action.target, ident.idempotency_key)
                if capped is not None:
                    return self._capped(group, ident, routed, capped)
                if group.episodic and episode is None and group.starts_at is not None:
                    ident = identify(group, await self._open_episode(fingerprint, group.starts_at))
            kept = stored(self.config, group, name)
            entry = JournalEntry(capture_request(self.config, group, ident, action, kept),
                                 self._record("firing", group, ident, routed, kept))
            ticket = await self.dispatcher.submit(entry, ident.incident_id)
        if ticket.run_id is not None:
            log.debug("alert %s %s firing again: run %s already exists", group.source, ident.incident_id,
                      ticket.run_id)
            return self._outcome("deduplicated", ident, routed, str(ticket.run_id))
        why = "a start is already under way for this group" if not ticket.first else "starts are queued ahead"
        if ticket.first and ticket.immediate and ticket.first_attempt is not None and self.config.start_wait_s > 0:
            try:
                got = await asyncio.wait_for(asyncio.shield(ticket.first_attempt), self.config.start_wait_s)
            except TimeoutError:
                got = None
            if isinstance(got, StartedRun):
                log.info("alert %s %s firing: capture run %s on %s (route %s, %s)", group.source, ident.incident_id,
                         got.flow_run_id, action.target, name, action.severity)
                return self._outcome("started" if got.created else "deduplicated", ident, routed, str(got.flow_run_id))
            if isinstance(got, StartError) and not got.retryable:
                raise got
            why = f"Prefect did not answer within {self.config.start_wait_s:g} s" if got is None else str(got)
        log.info("alert %s %s firing: accepted and journaled, run not created yet (%s)", group.source,
                 ident.incident_id, why)
        return Outcome(
            status="accepted", incident_id=ident.incident_id, deduplicated=not ticket.first, route=name,
            target=action.target, severity=action.severity,
            detail=f"journaled; the capture run is being created ({why}); find it by tag incident:{ident.incident_id}",
        )

    def _capped(
        self, group: AlertGroup, ident: GroupIdentity, routed: tuple[str, RouteAction], refusal: Refusal,
    ) -> Outcome:
        name, action = routed
        if self.admission.first_capped(ident.idempotency_key):
            record = self._record("capped", group, ident, routed, stored(self.config, group, name))
            record.payload.update({"reason": refusal.reason, "runs_per_target": self.config.limits.runs_per_target,
                                   "runs_window_s": self.config.limits.runs_window_s})
            self._later(record)
            log.warning("alert %s %s capped: %s", group.source, ident.incident_id, refusal.detail)
        return Outcome(status="capped", incident_id=ident.incident_id, route=name, target=action.target,
                       severity=action.severity, detail=refusal.detail)

    def _overflowed(self, reason: str, group: AlertGroup, ident: GroupIdentity, route: str | None) -> None:
        log.debug("alert %s %s refused (%s)", group.source, ident.incident_id, reason)
        self.overflow.add(reason, group.source, route, ident.incident_id)
        self._kick()

    def _outcome(
        self, status: Literal["started", "deduplicated", "resolved"], ident: GroupIdentity,
        routed: tuple[str, RouteAction] | None, run_id: str | None = None,
    ) -> Outcome:
        name, action = routed if routed is not None else (None, None)
        return Outcome(
            status=status, incident_id=ident.incident_id, flow_run_ids=[run_id] if run_id else [],
            deduplicated=status == "deduplicated", route=name,
            target=action.target if action else None, severity=action.severity if action else None,
        )

    def _record(
        self, what: str, group: AlertGroup, ident: GroupIdentity, routed: tuple[str, RouteAction] | None,
        kept: Stored | None = None,
    ) -> AlertRecord:
        name, action = routed if routed is not None else (None, None)
        kept = kept or stored(self.config, group, name)
        return AlertRecord(
            event=f"remediation.alert.{what}",
            resource_id=f"remediation.alert.{ident.fingerprint}",
            resource_labels={
                "prefect.resource.name": f"{group.source} alert group {ident.short_fingerprint}",
                "remediation.incident-id": ident.incident_id,
                "remediation.alert.source": group.source,
            },
            payload={
                "incident_id": ident.incident_id, "source": group.source, "status": group.status,
                "group_key": kept.group_key, "starts_at": group.starts_at.isoformat() if group.starts_at else None,
                "labels": kept.labels, "labels_left_out": kept.labels_left_out, "summary": kept.summary,
                "alert_ids": [a[:128] for a in group.alert_ids[:20]],
                "route": name, "target": action.target if action else None,
                "severity": action.severity if action else None,
            },
        )

    def _later(self, record: AlertRecord) -> None:
        """Record in the background, batched: the sender's answer does not wait on an audit event,
        and a storm costs the Prefect server one events request per batch, not one per run. Past
        `max_buffered_events` (Prefect slow, or a flood) a record is folded into a count instead."""
        if len(self._buffer) >= self.config.limits.max_buffered_events:
            labels = record.resource_labels
            self.overflow.add(f"unsent:{record.event}", labels.get("remediation.alert.source", "?"),
                              record.payload.get("route"), labels.get("remediation.incident-id", ""))
        else:
            self._buffer.append(record)
        self._kick()

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        while self._buffer or self.overflow:
            await asyncio.sleep(self.batch_delay_s)
            batch, self._buffer = self._buffer, []
            folded = self.overflow.take()
            if folded:
                log.warning("refused or folded since the last batch: %s",
                            ", ".join(f"{r.payload['reason']} {r.payload['source']}"
                                      f"{'/' + r.payload['route'] if r.payload['route'] else ''}: {r.payload['count']}"
                                      for r in folded))
            batch += folded
            try:
                await self.starter.record(*batch)
            except Exception as exc:
                log.error("could not record %d alert event(s): %s", len(batch), exc)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for queued starts and buffered events (tests, graceful shutdown)."""
        await self.dispatcher.drain(timeout_s)
        if self._flusher is not None:
            await self._flusher
