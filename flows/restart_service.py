"""restart-service: seed 003 "Restart only after capturing logs … wait 30s for healthcheck before rotating
green" — evidence in S3 first, approval bound to the instances, one instance at a time, each healthy
before the next, verified."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State
from pydantic import Field

from flows.capture_evidence import evidence_first
from remediation.domain.restarts import RestartPlan, plan_restart, summary_markdown
from remediation.domain.text import md_inline
from remediation.errors import BadInputError
from remediation.flowkit.approve import Proposal, approve_until_stable
from remediation.flowkit.initiator import not_confirmed, verify_initiator
from remediation.flowkit.locks import target_lock
from remediation.flowkit.params import (
    ApprovalTimeout,
    DryRunRisky,
    IncidentId,
    Initiator,
    LockWait,
    TargetName,
    described,
)
from remediation.flowkit.run_context import tag_current_run
from remediation.flowkit.runbook import runbook_text
from remediation.target.evidence_profile import PROFILE_NAME
from remediation.target.inventory import load_target
from remediation.target.services import INSTANCE, SERVICE
from tasks.service import instance_log_tail, read_instances, restart_instance

RUNBOOK = "restart-service"
ServiceName = Annotated[str, Field(pattern=SERVICE, description=(
    "The service to restart, as the target's inventory names it under `services` (the sandbox: `wallet`, "
    "two instances; `gateway`, one)."), examples=["wallet"])]
Instances = Annotated[list[Annotated[str, Field(pattern=INSTANCE)]], Field(description=(
    "Only these instances (e.g. `wallet-2`). Empty (the default): every instance of the service, those that "
    "are down first."))]
AllowOutage = Annotated[bool, Field(description=(
    "Off (the default): a serving instance is restarted only while another one serves; a plan that would "
    "leave nothing serving is refused. On: accept that outage (a single-instance service needs this)."))]
HealthTimeout = Annotated[float, Field(ge=1, le=900, description=(
    "Seconds to wait for each restarted instance's health check (1-900). Empty: the inventory's "
    "`health_timeout_s` (seed 003: 30)."))]
EvidenceProfileName = Annotated[str, Field(pattern=PROFILE_NAME, description=(
    "The target's evidence profile captured (and stored in S3) before anything is restarted, e.g. `default`: "
    "health, deploys, the service logs, PostgreSQL, disk."))]


@flow(name=RUNBOOK, description=runbook_text(RUNBOOK), validate_parameters=True)
@described
def restart_service(
    incident_id: IncidentId,
    initiated_by: Initiator,
    service: ServiceName,
    target: TargetName = "sandbox",
    instances: Instances | None = None,
    allow_outage: AllowOutage = False,
    health_timeout_s: HealthTimeout | None = None,
    evidence_profile: EvidenceProfileName = "default",
    dry_run: DryRunRisky = True,
    approval_timeout_s: ApprovalTimeout | None = None,
    lock_wait_s: LockWait = 60,
) -> State:
    """Restart a service's instances one at a time after its evidence is stored: plan → evidence → approval →
    restart, wait healthy, next → verify."""
    log = get_run_logger()
    inv = load_target(target)
    if service not in inv.services:
        raise BadInputError(f"target {inv.name} has no service {service!r}; its services: {sorted(inv.services)}")
    if evidence_profile not in inv.evidence_profiles:
        raise BadInputError(f"evidence_profile {evidence_profile!r} is not one of {sorted(inv.evidence_profiles)}")
    spec = inv.services[service]
    wait_s = health_timeout_s or spec.health_timeout_s
    tag_current_run(incident_id, RUNBOOK, inv.name)

    def plan() -> Proposal[RestartPlan]:
        found = plan_restart(service, read_instances(inv, service), instances, allow_outage=allow_outage)
        return Proposal(found, found.view(incident_id, inv.name),
                        summary_markdown(incident_id, inv.name, found, wait_s, spec.healthy_for_s))

    proposal = plan()
    order = ", ".join(s.name for s in proposal.plan.steps)
    if dry_run:
        create_markdown_artifact(key=f"restart-plan-{incident_id.lower()}",
                                 description=f"restart-service dry run: would restart {order}",
                                 markdown=proposal.summary + "\n*dry run: nothing restarted*\n")
        return Completed(message=f"dry run: would restart {order}, one at a time",
                         data={"outcome": "dry-run", "would_restart": [s.name for s in proposal.plan.steps]})

    initiator = verify_initiator(inv, initiated_by, timeout_s=approval_timeout_s or inv.policy.approval_timeout_s)
    if initiator is None:
        return not_confirmed(initiated_by, "not restarted")
    # Seed 003: "Do NOT restart a service before capturing its logs": stored in S3 before it is even offered.
    evidence, before = evidence_first(incident_id, inv.name, evidence_profile, initiated_by)
    if evidence is None:
        return Failed(message=f"evidence could not be stored ({before.message}); nothing restarted",
                      data={"outcome": "no-evidence"})
    with target_lock(inv, f"service-{service}", wait_s=lock_wait_s):
        verdict = approve_until_stable(RUNBOOK, inv, proposal, plan, requested_by=initiated_by,
                                       timeout_s=approval_timeout_s)
        if (stop := verdict.stopped("not restarted")) is not None:
            return stop
        steps = verdict.proposal.plan.steps
        done: list[dict[str, Any]] = []
        for i, step in enumerate(steps):
            state = restart_instance(inv, service, step, wait_s, spec.healthy_for_s, return_state=True)
            if not state.is_completed():
                why = str(state.result(raise_on_failure=False) or state.message)
                untouched = [s.name for s in steps[i + 1:]]
                done.append({"instance": step.name, "outcome": "failed", "status_before": step.status,
                             "status_after": "", "health": {"healthy": False, "after_s": wait_s,
                                                            "last": why}})
                tail = instance_log_tail(inv, service, step.name)
                return _failed(incident_id, proposal.summary, done, untouched, tail, evidence, initiator, verdict,
                               f"{why}; " + (f"{', '.join(untouched)} not touched" if untouched
                                                      else "no instance left"))
            restarted = state.result()
            if restarted["status_before"] != step.status:  # this run's earlier attempt did it (a Retry)
                restarted = {**restarted, "outcome": "restarted-by-an-earlier-attempt"}
            done.append(restarted)
    order = ", ".join(s.name for s in steps)
    after = {s.name: s for s in read_instances(inv, service)}
    unhealthy = sorted(name for name, s in after.items() if not s.healthy)
    result = {"outcome": "applied", "restarted": done, "evidence_before": evidence,
              "after": {n: {"status": s.status, "health": s.health} for n, s in after.items()},
              "initiator": initiator.model_dump(mode="json"),
              "approval": verdict.approval.model_dump(mode="json") if verdict.approval else None}
    _artifact(incident_id, proposal.summary, done, evidence, f"after: {unhealthy or 'every instance healthy'}")
    log.info("restart-service %s on %s: %s", service, inv.name, [(d["instance"], d["outcome"]) for d in done])
    if unhealthy:
        return Failed(message=f"restarted {order} but {', '.join(unhealthy)} is not healthy now", data=result)
    earlier = [d["instance"] for d in done if d["outcome"] == "restarted-by-an-earlier-attempt"]
    meanwhile = [d["instance"] for d in done if d["outcome"] == "already-restarted"]
    note = (f" ({', '.join(earlier)} by an earlier attempt of this run: not again)" if earlier else "") + (
        f" ({', '.join(meanwhile)} restarted by someone else since the plan: not again)" if meanwhile else "")
    return Completed(message=f"restarted {order} one at a time, each healthy before the next{note}; {service} "
                             "verified", data=result)


def _artifact(incident_id: str, summary: str, done: list[dict[str, Any]], evidence: str, note: str) -> None:
    rows = "\n".join(f"| {md_inline(d['instance'])} | {d['outcome']} | {md_inline(d['status_after'])} | "
                     f"{'healthy' if d['health']['healthy'] else 'NOT healthy'} after {d['health']['after_s']} s |"
                     for d in done)
    create_markdown_artifact(
        key=f"restart-result-{incident_id.lower()}", description=f"restart-service result for {incident_id}",
        markdown=f"{summary}\n| instance | done | status now | health |\n|---|---|---|---|\n{rows}\n\n"
                 f"Evidence before the restart: {evidence}; {md_inline(note)}\n")


def _failed(incident_id: str, summary: str, done: list[dict[str, Any]], untouched: list[str], tail: str,
            evidence: str, initiator: Any, verdict: Any, message: str) -> State:
    _artifact(incident_id, summary, done, evidence, f"stopped: {message}")
    return Failed(message=message, data={
        "outcome": "unhealthy", "restarted": done, "untouched": untouched, "log_tail": tail,
        "evidence_before": evidence, "initiator": initiator.model_dump(mode="json"),
        "approval": verdict.approval.model_dump(mode="json") if verdict.approval else None})
