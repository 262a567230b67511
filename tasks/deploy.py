"""Deploying a revision on the deploy host over SSH, and waiting for the release to be healthy.

Seed 000 step 4 on the host: `cd servers_v2` and rebuild (`docker compose -f docker-compose.yml
--env-file .env.compose.local up -d --build` for a compose target, the inventory's `rebuild` commands
in general); seed 004: verify `/healthz` = 200.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task

from remediation.clients.remote_host import RemoteHost
from remediation.domain.rollback import host_commands
from remediation.errors import RetryableError
from remediation.evidence.redact import for_target
from remediation.target import connect
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY, SIDE_EFFECT

__all__ = ["deployed_head", "rebuild_on_host", "release_failure_evidence", "wait_for_health"]

#: Lines of each rebuild command's output kept in the task's result (all of it goes to the run's logs).
_KEEP_LINES = 40


def deployed_head(host: RemoteHost, checkout: str) -> str:
    return host.run(["git", "-C", checkout, "rev-parse", "HEAD"]).check().stdout.strip()


def _has(host: RemoteHost, checkout: str, sha: str) -> bool:
    # 0: HEAD contains sha; 1: it does not; 128: the host has not fetched it yet.
    return host.run(["git", "-C", checkout, "merge-base", "--is-ancestor", sha, "HEAD"]).exit_code == 0


@task(name="rebuild-on-host", **SIDE_EFFECT)
def rebuild_on_host(target: Target, revert_sha: str) -> dict[str, Any]:
    """Fast-forward the host's checkout to exactly `revert_sha`, then run the rebuild, output streamed live.

    The checkout is read before it is moved: a retry after a dropped connection finds the revert
    already checked out and does not pull again. The rebuild itself is run again on a retry (it is
    a restart from the checkout; running it twice is the safe side of not knowing whether it finished).
    """
    log = get_run_logger()
    redact = for_target(target)
    cfg = target.deploy_host
    fetch, merge, *rebuild = host_commands(target, revert_sha)
    outputs: list[dict[str, Any]] = []
    started = time.monotonic()
    with connect.remote_host(target) as host:
        if _has(host, cfg.checkout_dir, revert_sha):
            log.info("the host's checkout already contains %s: not pulling again", revert_sha[:12])
        else:
            host.run(fetch).check()
            host.run(merge).check()
        head = deployed_head(host, cfg.checkout_dir)
        log.info("host checkout at %s; rebuilding (%d command(s))", head[:12], len(rebuild))
        for argv in rebuild:
            tail: list[str] = []

            def line(text: str, keep: list[str] = tail) -> None:
                clean = redact.text(text)
                log.info("[rebuild] %s", clean)
                keep.append(clean)
                del keep[:-_KEEP_LINES]

            result = host.run(argv, cwd=cfg.checkout_dir, on_output=line)
            outputs.append({"command": redact.text(result.command), "exit_code": result.exit_code,
                            "duration_s": result.duration_s, "tail": tail})
            result.check()
    return {"host_head": head, "commands": outputs, "duration_s": round(time.monotonic() - started, 2)}


@task(name="wait-for-health", **{**READ_ONLY, "retries": 0})
def wait_for_health(target: Target, deadline_s: float, first_delay_s: float = 0.5,
                    max_delay_s: float = 5.0) -> dict[str, Any]:
    """Poll the gateway's `/health` with exponential backoff until 200 or the deadline; never raises
    for "not healthy" — the caller decides, with the last answer as evidence."""
    log = get_run_logger()
    started = time.monotonic()
    delay, attempts = first_delay_s, 0
    last: dict[str, Any] = {"http_status": None, "body": None, "error": None}
    with connect.gateway(target) as gw:
        while True:
            attempts += 1
            try:
                result = gw.health()
                last = {"http_status": result.http_status, "body": result.body, "error": None}
                if result.ok:
                    waited = round(time.monotonic() - started, 2)
                    log.info("/health answered 200 after %.1f s (%d attempt(s))", waited, attempts)
                    return {"ok": True, "attempts": attempts, "waited_s": waited, **last}
            except RetryableError as exc:  # down while it restarts
                last = {"http_status": None, "body": None, "error": str(exc)}
            remaining = deadline_s - (time.monotonic() - started)
            if remaining <= 0:
                break
            log.info("/health not yet ok (%s); next check in %.1f s", last["http_status"] or last["error"], delay)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, max_delay_s)
    waited = round(time.monotonic() - started, 2)
    log.error("/health still not ok after %.0f s: %s", waited, last)
    return {"ok": False, "attempts": attempts, "waited_s": waited, **last}


@task(name="release-failure-evidence", **READ_ONLY)
def release_failure_evidence(target: Target, service: str = "gateway", lines: int = 80) -> dict[str, Any]:
    """Why a release is unhealthy, for the failed run's record: the host's revision and the service's log tail."""
    from tasks.evidence import _log_argv as service_log_argv  # one place knows docker/journalctl/file

    redact = for_target(target)
    cfg = target.deploy_host
    with connect.remote_host(target) as host:
        head = deployed_head(host, cfg.checkout_dir)
        logs = host.run(service_log_argv(target, target.git.deploy_host, service, lines))
    return {"host_head": head, "service": service, "log_exit_code": logs.exit_code,
            "log_tail": redact.text((logs.stdout + logs.stderr)[-20_000:])}
