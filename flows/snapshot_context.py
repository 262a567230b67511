"""snapshot-context: seed 000 step 2, "Snapshot context", as a read-only flow."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from remediation.domain.text import md_inline
from remediation.flowkit.futures import settle_all
from remediation.flowkit.params import DryRunRead, IncidentId, Initiator, TargetName, described
from remediation.flowkit.run_context import tag_current_run
from remediation.flowkit.runbook import runbook_text
from remediation.target.inventory import load_target
from tasks.admin_api import get_lever_state
from tasks.gateway import check_health
from tasks.host import get_deployed_revision
from tasks.prometheus import get_error_rate

RUNBOOK = "snapshot-context"


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def snapshot_context(
    incident_id: IncidentId,
    target: TargetName = "sandbox",
    initiated_by: Initiator = "unknown",
    dry_run: DryRunRead = False,
) -> dict[str, Any]:
    """Read where the target stands: deployed commit and recent deploys, health, error rate, levers."""
    log = get_run_logger()
    inv = load_target(target)
    tag_current_run(incident_id, RUNBOOK, inv.name)
    host = inv.deploy_host
    ssh = f"ssh {host.user}@{host.address}:{host.port}"
    reads = {
        "deployed_revision": f"{ssh} git -C {host.checkout_dir} log -1; reflog -n 10",
        "health": f"GET {inv.gateway.url}health and /health/deep",
        "error_rate": f"GET {inv.prometheus.url}api/v1/query" if inv.prometheus else "no Prometheus configured",
        "levers": f"GET {inv.admin_api.url}api/v1/maintenance, global-vars/DEPOSIT_MAINTENANCE_STATUS, "
                  f"brand config for {', '.join(inv.brands)}; gateway provider ingress",
    }
    if dry_run:
        log.info("dry run: would read %d sources, change nothing", len(reads))
        create_markdown_artifact(
            key=_key(incident_id), markdown=_plan_markdown(incident_id, inv.name, reads),
            description=f"snapshot-context dry run for {incident_id}",
        )
        return {"dry_run": True, "incident_id": incident_id, "target": inv.name, "would_read": reads}

    futures = {
        "deployed_revision": get_deployed_revision.submit(inv),
        "health": check_health.submit(inv),
        "error_rate": get_error_rate.submit(inv),
        "levers": get_lever_state.submit(inv),
    }
    found, failed = settle_all(futures)
    for name, reason in failed.items():
        log.warning("%s could not be read: %s", name, reason)
    report = {
        "dry_run": False, "incident_id": incident_id, "target": inv.name, "environment": inv.environment,
        "initiated_by": initiated_by, "found": found, "failed": failed,
    }
    create_markdown_artifact(
        key=_key(incident_id), markdown=_report_markdown(report),
        description=f"snapshot-context for {incident_id} on {inv.name}",
    )
    log.info("snapshot of %s: %d sources read, %d failed", inv.name, len(found), len(failed))
    return report


def _key(incident_id: str) -> str:
    return f"snapshot-{incident_id.lower()}"


def _plan_markdown(incident_id: str, target: str, reads: dict[str, str]) -> str:
    rows = "\n".join(f"| {k} | `{v}` |" for k, v in reads.items())
    return f"# Snapshot context — {incident_id} on {target} (dry run)\n\n| source | would read |\n|---|---|\n{rows}\n"


def _report_markdown(report: dict[str, Any]) -> str:
    found, failed = report["found"], report["failed"]
    lines = [f"# Snapshot context — {report['incident_id']} on {report['target']}", ""]
    rev = found.get("deployed_revision")
    if rev:
        lines += [f"**Deployed**: `{rev['sha'][:12]}` {md_inline(rev['subject'])} ({md_inline(rev['author'])}, "
                  f"{rev['committed_at']})", ""]
        lines += ["| recent deploy | when | what |", "|---|---|---|"]
        lines += [f"| `{d['sha'][:12]}` | {d['at']} | {md_inline(d['what'])} |" for d in rev["recent_deploys"]]
        lines.append("")
    health = found.get("health")
    if health:
        lines.append(
            f"**Health**: `/health` {health['health']['http_status']}, "
            f"`/health/deep` {health['health_deep']['http_status']}"
        )
    if "error_rate" in found:
        lines.append(f"**Error rate**: {found['error_rate']}")
    levers = found.get("levers")
    if levers:
        freeze = (levers["maintenance"] or {}).get("is_active", "unreadable")
        blocked = (levers["provider_ingress"] or {}).get("blocked", "unreadable")
        lines += [
            "", f"**Platform freeze**: {freeze}",
            f"**DEPOSIT_MAINTENANCE_STATUS**: `{levers['deposit_maintenance_status']}` "
            f"(admin state read via {levers['read_via']})",
            f"**Provider ingress blocked**: {blocked}", "",
            "| brand | deposit_enabled | withdraw_enabled |", "|---|---|---|",
        ]
        for brand, pay in (levers["payment_policy"] or {}).items():
            lines.append(f"| {brand} | {pay.get('deposit_enabled')} | {pay.get('withdraw_enabled')} |")
        lines += [f"- could not read {k}: {v}" for k, v in levers["unreadable"].items()]
    if failed:
        lines += ["", "**Could not read**:"] + [f"- {k}: {v}" for k, v in failed.items()]
    return "\n".join(lines) + "\n"
