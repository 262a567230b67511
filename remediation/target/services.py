"""A target's restartable services: where they run, how each instance is restarted, asked and checked.

Commands are argument lists run on one of the target's hosts over SSH, never shell strings; `{instance}`
(and `{lines}` for logs) is substituted per argument. For example:

- compose:  restart = ["docker", "compose", "-f", "/opt/app/compose.yml", "restart", "{instance}"],
            status  = ["docker", "inspect", "-f", "{{.State.Pid}} {{.State.StartedAt}}", "{instance}"]
- systemd:  restart = ["systemctl", "restart", "{instance}"],
            status  = ["systemctl", "show", "-p", "MainPID,ExecMainStartTimestamp", "{instance}"]
- kubectl:  restart = ["kubectl", "-n", "prod", "delete", "pod", "{instance}"] (one pod at a time),
            status  = ["kubectl", "-n", "prod", "get", "pod", "{instance}", "-o",
                       "jsonpath={.metadata.uid} {.status.startTime}"]

`status` must print what changes when, and only when, the instance restarts (its pid and start
time): restart-service compares it with the plan's before every restart, so a retried step never
restarts an instance twice.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

__all__ = ["INSTANCE", "SERVICE", "ServiceInstance", "ServiceSpec", "expand"]

SERVICE = r"^[a-z][a-z0-9-]{0,62}$"
INSTANCE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,126}$"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
Argv = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceInstance(_Strict):
    name: str = Field(pattern=INSTANCE)
    #: Answers 2xx when the instance serves (GET from the worker), e.g. `/health` of that instance.
    health_url: HttpUrl


class ServiceSpec(_Strict):
    description: str = ""
    #: The inventory host the commands run on (`hosts.<name>`).
    host: str
    restart: Argv
    status: Argv
    #: The instance's last lines (evidence of why it is down), with `{lines}`; optional.
    logs: Argv | None = None
    #: Restarted one at a time in this order (blue/green): the next only once this one is healthy.
    instances: list[ServiceInstance] = Field(min_length=1)
    #: Seed 003: "wait 30s for healthcheck before rotating green".
    health_timeout_s: float = Field(default=30, gt=0, le=900)
    #: How long the health check must keep answering before the next instance is touched: a
    #: crashlooping process may answer once before it exits again.
    healthy_for_s: float = Field(default=3, ge=0, le=300)

    @field_validator("restart", "status", "logs")
    @classmethod
    def _placeholders(cls, v: list[str] | None) -> list[str] | None:
        for arg in v or []:
            unknown = set(_PLACEHOLDER.findall(arg)) - {"instance", "lines"}
            if unknown and "{{" not in arg:  # {{...}} is a Go template (docker inspect -f), not ours
                raise ValueError(f"unknown placeholder(s) {sorted(unknown)} in {arg!r}: only {{instance}}, {{lines}}")
        return v

    @model_validator(mode="after")
    def _unique(self) -> ServiceSpec:
        names = [i.name for i in self.instances]
        if len(set(names)) != len(names):
            raise ValueError(f"instance names repeat: {names}")
        return self


def expand(argv: list[str], instance: str, lines: int = 200) -> list[str]:
    """The command for one instance: placeholders replaced inside each argument, nothing split or joined."""
    values = {"instance": instance, "lines": str(lines)}
    return [arg if "{{" in arg else _PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in argv]
