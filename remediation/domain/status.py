"""Status updates to the on-call channel: the texts, in seed 001's templates.

Seed 000: "status update every 30 min for SEV1/2 even when nothing changes". The respond flow
posts one at each state change and, for SEV1/SEV2, a periodic one while the incident is open
(remediation.flowkit.incident_loop); the webhook client is remediation.clients.status_webhook.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Severity", "initial_text", "resolved_text", "update_text"]

Severity = Literal["SEV1", "SEV2", "SEV3", "SEV4"]


def initial_text(severity: str, service: str, incident_id: str, impact: str, every_min: float | None) -> str:
    lines = [f"🚨 Incident Alert - {severity}", "", f"Service: {service}", f"Incident: {incident_id}",
             f"Impact: {impact}", "Status: Investigating", "ETA: unknown"]
    if every_min:
        lines += ["", f"Updates will follow every {every_min:g} minutes."]
    return "\n".join(lines)


def update_text(severity: str, service: str, incident_id: str, status: str, impact: str, progress: str,
                next_steps: str, every_min: float | None) -> str:
    lines = [f"📊 Incident Update - {severity}", "", f"Service: {service}", f"Incident: {incident_id}",
             f"Status: {status}", f"Impact: {impact}", f"Progress: {progress}", f"Next Steps: {next_steps}"]
    if every_min:
        lines += ["", f"Next update in {every_min:g} minutes."]
    return "\n".join(lines)


def resolved_text(severity: str, service: str, incident_id: str, duration: str, root_cause: str,
                  resolution: str, review: str) -> str:
    return "\n".join([f"✅ Incident Resolved - {severity}", "", f"Service: {service}", f"Incident: {incident_id}",
                      f"Duration: {duration}", f"Root Cause: {root_cause}", f"Resolution: {resolution}", "",
                      f"Post-incident review scheduled for {review}."])
