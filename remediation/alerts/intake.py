"""What happens to an authenticated, parsed alert group: route → name → start or record.

- firing and routed: one `capture-evidence` run per group and start (idempotency key),
  tagged `incident:<id>`, `runbook:capture-evidence`, `target:<name>`, `alert:<source>`,
  `severity:<sev>`; a newly created run is also recorded as a `remediation.alert.firing` event.
  The first notification is journaled, then started by the dispatcher; the answer waits for
  the run id only while nothing is queued ahead (`start_wait_s`), else it says `accepted`.
- resolved: recorded (log line + `remediation.alert.resolved` event), nothing started.
- no route: per `unmatched`, recorded as `remediation.alert.unrouted` (202) or refused (422).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from remediation.alerts.dispatch import StartDispatcher
from remediation.alerts.identity import GroupIdentity, group_fingerprint, identify
from remediation.alerts.journal import IntakeJournal, JournalEntry
from remediation.alerts.models import AlertGroup
from remediation.alerts.routing import ReceiverConfig, RouteAction
from remediation.alerts.starter import AlertRecord, CaptureRequest, RunStarter, StartedRun, StartError
from remediation.evidence.alert_context import AlertContext

__all__ = ["RUNBOOK", "AlertIntake", "Outcome", "Unroutable"]

RUNBOOK = "capture-evidence"
log = logging.getLogger("remediation.alerts")


class Unroutable(Exception):
    """No route matched and the config says `unmatched = "reject"`."""


@dataclass(frozen=True)
class Outcome:
    status: Literal["started", "accepted", "deduplicated", "resolved", "unrouted", "ignored"]
    incident_id: str | None
    flow_run_ids: list[str] = field(default_factory=list)
    deduplicated: bool = False
    target: str | None = None
    route: str | None = None
    severity: str | None = None
    detail: str = ""

    def body(self) -> dict[str, Any]:
        return asdict(self)


def capture_request(
    config: ReceiverConfig, group: AlertGroup, ident: GroupIdentity, action: RouteAction
) -> CaptureRequest:
    alert = AlertContext(
        source=group.source, fingerprint=ident.fingerprint, group_key=group.group_key,
        starts_at=group.starts_at, labels=group.labels, summary=group.summary,
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

    async def handle(self, group: AlertGroup) -> Outcome:
        episode = self.journal.episode_start(group_fingerprint(group), group.starts_at,
                                             resolved=group.status == "resolved") if group.episodic else None
        ident = identify(group, episode)
        routed = self.config.route(group)
        if group.status == "resolved":
            await self.starter.record(self._record("resolved", group, ident, routed))
            log.info("alert %s %s resolved: group %s recorded, nothing started", group.source, ident.incident_id,
                     ident.fingerprint)
            return self._outcome("resolved", ident, routed)
        if routed is None:
            if self.config.unmatched == "reject":
                raise Unroutable(f"no route matches labels {sorted(group.labels.items())} and there is no [default]")
            self._later(self._record("unrouted", group, ident, None))
            log.warning("alert %s %s unrouted: labels %s match no route; nothing started",
                        group.source, ident.incident_id, sorted(group.labels.items()))
            return Outcome(status="unrouted", incident_id=ident.incident_id, detail="no route matched; nothing started")
        name, action = routed
        entry = JournalEntry(capture_request(self.config, group, ident, action),
                             self._record("firing", group, ident, routed))
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
        flow_run_id: Any = None,
    ) -> AlertRecord:
        name, action = routed if routed is not None else (None, None)
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
                "group_key": group.group_key, "starts_at": group.starts_at.isoformat() if group.starts_at else None,
                "labels": group.labels, "summary": group.summary, "alert_ids": list(group.alert_ids),
                "route": name, "target": action.target if action else None,
                "severity": action.severity if action else None,
            },
            flow_run_id=flow_run_id,
        )

    def _later(self, record: AlertRecord) -> None:
        """Record in the background, batched: the sender's answer does not wait on an audit event,
        and a storm costs the Prefect server one events request per batch, not one per run."""
        self._buffer.append(record)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        while self._buffer:
            await asyncio.sleep(self.batch_delay_s)
            batch, self._buffer = self._buffer, []
            try:
                await self.starter.record(*batch)
            except Exception as exc:
                log.error("could not record %d alert event(s): %s", len(batch), exc)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for queued starts and buffered events (tests, graceful shutdown)."""
        await self.dispatcher.drain(timeout_s)
        if self._flusher is not None:
            await self._flusher
