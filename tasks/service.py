"""A service's instances for `restart-service`: read each one's status and health, restart one, wait for it.

The commands are the inventory's argument lists (`services.<name>`), run on its host over SSH with
the target's redaction; the health check is an HTTP GET from the worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger
from prefect.context import TaskRunContext

from remediation.clients.health import HttpxHealthCheck
from remediation.domain.restarts import InstanceState
from remediation.errors import PermanentError
from remediation.evidence.scrub import for_target
from remediation.target import connect
from remediation.target.inventory import Target
from remediation.target.services import ServiceSpec, expand
from tasks.policy import READ_ONLY, SIDE_EFFECT, task

__all__ = ["NotHealthyError", "instance_log_tail", "read_instances", "restart_instance"]

#: A health check that takes longer than this counts as no answer (a hung process accepts, never replies).
HEALTH_TIMEOUT_S = 2.0


def _status(host: Any, spec: ServiceSpec, instance: str) -> str:
    result = host.run(expand(spec.status, instance), timeout=30).check()
    return " ".join(result.stdout.split()) or "(no output)"


def _health(spec: ServiceSpec) -> dict[str, tuple[bool, str]]:
    check = HttpxHealthCheck(HEALTH_TIMEOUT_S)
    return {i.name: (seen.ok, seen.seen) for i in spec.instances for seen in [check.check(str(i.health_url))]}


@task(name="read-service-instances", **READ_ONLY)
def read_instances(target: Target, service: str) -> list[InstanceState]:
    """Every instance's status line on its host and its health check now, in the inventory's order."""
    spec = target.services[service]
    with connect.remote_host(target, spec.host, redactor=for_target(target)) as host:
        statuses = {i.name: _status(host, spec, i.name) for i in spec.instances}
    health = _health(spec)
    return [InstanceState(name=i.name, status=statuses[i.name], healthy=health[i.name][0], health=health[i.name][1])
            for i in spec.instances]


def _once_per_run(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """A Retry of the whole run does not restart again an instance this run already brought back healthy
    (only a Completed step is cached: one that did not come back is restarted again by a Retry)."""
    step: InstanceState = parameters["step"]
    return f"restart-service/{context.task_run.flow_run_id}/{parameters['service']}/{step.name}"


class NotHealthyError(PermanentError):
    """The instance did not answer its health check in time after its restart."""


@task(name="restart-instance", cache_key_fn=_once_per_run, cache_expiration=None,
      **{**SIDE_EFFECT, "retries": 1})
def restart_instance(target: Target, service: str, step: InstanceState, timeout_s: float, healthy_for_s: float
                     ) -> dict[str, Any]:
    """Restart one instance — unless its status line shows it restarted since the plan — and wait until its
    health check has answered for `healthy_for_s` in a row, at most `timeout_s`; NotHealthyError if not."""
    log = get_run_logger()
    spec = target.services[service]
    with connect.remote_host(target, spec.host, redactor=for_target(target)) as host:
        now = _status(host, spec, step.name)
        if now != step.status:
            log.info("%s restarted since the plan (%s → %s): not restarting it again", step.name, step.status, now)
            done: dict[str, Any] = {"instance": step.name, "outcome": "already-restarted",
                                    "status_before": step.status, "status_after": now, "command": None}
        else:
            result = host.run(expand(spec.restart, step.name), timeout=120)
            log.info("%s: `%s` exited %s in %.1f s", step.name, result.command, result.exit_code, result.duration_s)
            result.check()
            done = {"instance": step.name, "outcome": "restarted", "status_before": step.status,
                    "status_after": _status(host, spec, step.name), "command": result.command,
                    "duration_s": round(result.duration_s, 2)}
        url = str(next(i.health_url for i in spec.instances if i.name == step.name))
        health = _wait_healthy(url, step.name, timeout_s, healthy_for_s,
                               lambda: _status(host, spec, step.name), str(done["status_after"]))
    if not health["healthy"]:
        raise NotHealthyError(health["why"])
    return {**done, "health": health}


def _wait_healthy(url: str, instance: str, timeout_s: float, healthy_for_s: float, status: Callable[[], str],
                  started_as: str) -> dict[str, Any]:
    """Poll the health check every 0.5 s; every 2 s ask the host too: a status line that moved on from the
    one right after the restart means the process exited or restarted again (a crashloop), and there is
    no point waiting out the timeout for it."""
    log = get_run_logger()
    check = HttpxHealthCheck(HEALTH_TIMEOUT_S)
    started = time.monotonic()
    asked = started
    healthy_since: float | None = None
    was: bool | None = None
    while True:
        result = check.check(url)
        now = time.monotonic()
        if result.ok != was:
            log.info("%s health after %.1f s: %s", instance, now - started, result.seen)
        seen, was = result.seen, result.ok
        healthy_since = (healthy_since or now) if result.ok else None
        if healthy_since is not None and now - healthy_since >= healthy_for_s:
            return {"healthy": True, "after_s": round(now - started, 2), "last": seen}
        if now - started >= timeout_s:
            return {"healthy": False, "after_s": round(now - started, 2), "last": seen,
                    "why": f"{instance} did not answer its health check for {healthy_for_s:g} s within "
                           f"{timeout_s:g} s after its restart (last: {seen})"}
        if not result.ok and now - asked >= 2:
            asked = now
            if (moved := status()) != started_as:
                return {"healthy": False, "after_s": round(now - started, 2), "last": seen,
                        "why": f"{instance} exited or restarted again {now - started:.1f} s after its restart "
                               f"(status now: {moved}; health: {seen})"}
        time.sleep(0.5)


@task(name="instance-log-tail", **READ_ONLY)
def instance_log_tail(target: Target, service: str, instance: str, lines: int = 20) -> str:
    """The instance's last lines (redacted), for the record of why it did not come back."""
    spec = target.services[service]
    if spec.logs is None:
        return "(the inventory names no logs command for this service)"
    with connect.remote_host(target, spec.host, redactor=for_target(target)) as host:
        result = host.run(expand(spec.logs, instance, lines), timeout=30)
    return (result.stdout + result.stderr).strip()[-4000:]
