"""Which instances `restart-service` restarts, in what order, and when it must refuse.

Seed 003: "Do NOT restart a service before capturing its logs … Restart only after capturing logs …
wait 30s for healthcheck before rotating green". Instances are restarted one at a time; the next only
once the last is healthy. Instances that are down already go first: restarting them costs no capacity.
A healthy instance is restarted only while another one serves — unless the run says the outage is
accepted (a single-instance service always needs that). An instance is named by its status line (pid
and start time): a step whose instance restarted since the plan is not restarted again.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from remediation.domain.text import md_inline
from remediation.errors import BadInputError

__all__ = ["InstanceState", "RestartPlan", "plan_restart", "summary_markdown"]


class InstanceState(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    #: The host's status line for the instance (redacted): changes when, and only when, it restarts.
    status: str
    healthy: bool
    #: What the health check saw: "200 in 4 ms", "no answer in 2 s", "connection refused".
    health: str


class RestartPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    #: In the order they are restarted.
    steps: list[InstanceState]
    #: Instances of the service not asked for.
    left: list[InstanceState]
    #: Healthy instances whose restart leaves the service with nothing serving (allowed by the run).
    outage: list[str]

    def view(self, incident_id: str, target: str) -> dict[str, object]:
        """What the approval binds: which instances, in which order, as which processes — not their latency."""
        return {"incident_id": incident_id, "target": target, "service": self.service,
                "steps": [{"instance": s.name, "status": s.status} for s in self.steps], "outage": self.outage}


def plan_restart(service: str, states: list[InstanceState], only: list[str] | None, *,
                 allow_outage: bool) -> RestartPlan:
    """Order the instances asked for (all by default); refuse an outage nobody accepted."""
    names = [s.name for s in states]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise BadInputError(f"{service} has no instance {', '.join(map(repr, unknown))}; its instances: {names}")
    asked = [s for s in states if only is None or s.name in only]
    if not asked:
        raise BadInputError(f"no instance of {service} asked for")
    steps = [s for s in asked if not s.healthy] + [s for s in asked if s.healthy]
    outage: list[str] = []
    serving = {s.name for s in states if s.healthy}
    for step in steps:
        # Earlier steps are healthy again by the time this one starts (the flow stops otherwise).
        if step.healthy and not serving - {step.name}:
            outage.append(step.name)
        serving.add(step.name)
    if outage and not allow_outage:
        raise BadInputError(
            f"restarting {', '.join(outage)} leaves no healthy instance of {service} while it restarts "
            f"(healthy now: {sorted(s.name for s in states if s.healthy) or 'none'}); run with allow_outage "
            "to accept the outage, or restart the instances that are down first")
    return RestartPlan(service=service, steps=steps, left=[s for s in states if s not in asked], outage=outage)


def summary_markdown(incident_id: str, target: str, plan: RestartPlan, health_timeout_s: float,
                     healthy_for_s: float) -> str:
    lines = [f"### restart-service `{md_inline(plan.service)}` on `{md_inline(target)}` for {md_inline(incident_id)}",
             "", "One instance at a time, in this order; the next only after this one answers its health check "
             f"for {healthy_for_s:g} s (waiting at most {health_timeout_s:g} s). A failed one stops the run: "
             "the instances after it are not touched.", "",
             "| # | instance | now | health | status on the host |", "|---|---|---|---|---|"]
    for i, s in enumerate(plan.steps, 1):
        now = "serving" if s.healthy else "**down**"
        lines.append(f"| {i} | {md_inline(s.name)} | {now} | {md_inline(s.health)} | {md_inline(s.status)} |")
    for s in plan.left:
        lines.append(f"| – | {md_inline(s.name)} | not asked for | {md_inline(s.health)} | {md_inline(s.status)} |")
    if plan.outage:
        lines += ["", f"**Outage accepted**: nothing else serves while {', '.join(plan.outage)} restarts."]
    return "\n".join(lines) + "\n"
