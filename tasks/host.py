"""Tasks on the hosts, over SSH: what is deployed, evidence from the host, and a rebuild (seed 000 step 4).

Seed 000 step 4 on the host: `cd servers_v2` and rebuild (`docker compose -f docker-compose.yml
--env-file .env.compose.local up -d --build` for a compose target, the inventory's `rebuild` commands
in general). Commands are argument lists, quoted once by the client (`shlex.join`), never shell strings.
"""

from __future__ import annotations

import shlex
import time
from datetime import datetime
from typing import Any

from prefect import get_run_logger
from pydantic import BaseModel

from remediation.clients.remote_host import ParamikoHost, RemoteHost, build_command
from remediation.domain.rollback import REVERT_PLACEHOLDER, host_commands
from remediation.evidence.bundle import CollectorRecord, EvidenceFile
from remediation.evidence.collectors import CollectorSpec, collect, service_log_argv
from remediation.evidence.scrub import for_target
from remediation.target import connect
from remediation.target.evidence_profile import EvidenceProfile
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY, SIDE_EFFECT, task

__all__ = [
    "DeployRecord", "DeployedRevision", "capture_host_command", "capture_host_git", "deployed_head",
    "get_deployed_revision", "rebuild_on_host", "release_failure_evidence", "shown_rebuild_commands",
]

_SEP = "\x1f"


class DeployRecord(BaseModel):
    sha: str
    at: datetime | None
    what: str


class DeployedRevision(BaseModel):
    host: str
    checkout_dir: str
    sha: str
    author: str
    committed_at: datetime
    subject: str
    #: The checkout's reflog: each pull/reset on the host is a deploy.
    recent_deploys: list[DeployRecord]


def _parse_reflog(text: str) -> list[DeployRecord]:
    records = []
    for line in text.splitlines():
        sha, selector, subject = [*line.split(_SEP), "", ""][:3]
        # `%gd` with --date=iso-strict is `HEAD@{2026-11-23T10:00:00+00:00}`.
        stamp = selector[selector.find("{") + 1 : selector.rfind("}")] if "{" in selector else ""
        try:
            at = datetime.fromisoformat(stamp) if stamp else None
        except ValueError:
            at = None
        records.append(DeployRecord(sha=sha, at=at, what=subject))
    return records


@task(name="get-deployed-revision", **READ_ONLY)
def get_deployed_revision(target: Target, limit: int = 10) -> DeployedRevision:
    """Seed 000 step 2: current commit (`git log -1`) and recent deploys on the host."""
    host_cfg = target.deploy_host
    checkout = host_cfg.checkout_dir
    with connect.remote_host(target, redactor=for_target(target)) as host:
        head = host.run(
            ["git", "-C", checkout, "log", "-1", f"--format=%H{_SEP}%an{_SEP}%cI{_SEP}%s"]
        ).check()
        reflog = host.run(
            ["git", "-C", checkout, "reflog", "show", "-n", str(limit), "--date=iso-strict",
             f"--format=%H{_SEP}%gd{_SEP}%gs"]
        ).check()
    sha, author, committed, subject = head.stdout.strip().split(_SEP, 3)
    return DeployedRevision(
        host=f"{host_cfg.user}@{host_cfg.address}:{host_cfg.port}",
        checkout_dir=checkout,
        sha=sha,
        author=author,
        committed_at=datetime.fromisoformat(committed),
        subject=subject,
        recent_deploys=_parse_reflog(reflog.stdout),
    )


# --- evidence: output streamed through redaction to the bundle, over one shared connection per host ---


def _stream(host: ParamikoHost, argv: list[str], out: EvidenceFile, timeout: float) -> int:
    """Run argv, writing stdout and stderr (interleaved by whole lines, as a terminal shows them) to `out`."""
    sink_failed: list[BaseException] = []

    def lines(text: str) -> None:
        try:
            out.write(text)
        except BaseException as exc:
            # The client swallows callback errors to keep its command alive; remember ours.
            sink_failed.append(exc)
            raise

    result = host.run(argv, timeout=timeout, on_lines=lines)
    if sink_failed:
        raise sink_failed[0]
    return result.exit_code


@task(name="capture-host-git", **READ_ONLY)
def capture_host_git(target: Target, profile: EvidenceProfile, spec: CollectorSpec, out_dir: str) -> CollectorRecord:
    """`git log -1` and the checkout's reflog (recent deploys), raw, as the on-call would see them."""
    assert spec.host is not None
    checkout = target.hosts[spec.host].checkout_dir
    commands = [
        ["git", "-C", checkout, "log", "-1", "--format=fuller"],
        ["git", "-C", checkout, "reflog", "show", "-n", str(spec.params["limit"]), "--date=iso-strict"],
    ]

    def body(out: EvidenceFile) -> int:
        status = 0
        with connect.shared_remote_host(target, spec.host) as host:  # type: ignore[arg-type]
            for argv in commands:
                out.write(f"$ {shlex.join(argv)}\n")
                code = _stream(host, argv, out, spec.timeout_s)
                out.write(f"[exit {code}]\n\n")
                status = status or code
        return status

    return collect(spec, out_dir, target, profile, body)


@task(name="capture-host-command", **READ_ONLY)
def capture_host_command(
    target: Target, profile: EvidenceProfile, spec: CollectorSpec, out_dir: str
) -> CollectorRecord:
    """A read-only command over SSH (service logs, `df -P`, the profile's extra commands), streamed to disk."""
    assert spec.host is not None and spec.argv

    def body(out: EvidenceFile) -> int:
        with connect.shared_remote_host(target, spec.host) as host:  # type: ignore[arg-type]
            return _stream(host, spec.argv, out, spec.timeout_s)

    return collect(spec, out_dir, target, profile, body)


# --- deploying a revision: fast-forward and rebuild ---------------------------------------------

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
    cfg = target.deploy_host
    fetch, merge, *rebuild = host_commands(cfg.checkout_dir, cfg.rebuild, revert_sha)
    outputs: list[dict[str, Any]] = []
    started = time.monotonic()
    # The host redacts each command's output as one stream: a key printed over many lines goes whole.
    with connect.remote_host(target, redactor=for_target(target)) as host:
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
                log.info("[rebuild] %s", text)
                keep.append(text)
                del keep[:-_KEEP_LINES]

            result = host.run(argv, cwd=cfg.checkout_dir, on_output=line)
            outputs.append({"command": result.command, "exit_code": result.exit_code,
                            "duration_s": result.duration_s, "tail": tail})
            result.check()
    return {"host_head": head, "commands": outputs, "duration_s": round(time.monotonic() - started, 2)}


@task(name="release-failure-evidence", **READ_ONLY)
def release_failure_evidence(target: Target, service: str = "gateway", lines: int = 80) -> dict[str, Any]:
    """Why a release is unhealthy, for the failed run's record: the host's revision and the service's log tail."""
    cfg = target.deploy_host
    with connect.remote_host(target, redactor=for_target(target)) as host:
        head = deployed_head(host, cfg.checkout_dir)
        logs = host.run(service_log_argv(target, target.git.deploy_host, service, lines))
    return {"host_head": head, "service": service, "log_exit_code": logs.exit_code,
            "log_tail": (logs.stdout + logs.stderr)[-20_000:]}


def shown_rebuild_commands(target: Target, revert_sha: str = REVERT_PLACEHOLDER) -> list[str]:
    """The exact command lines the rebuild sends, quoted as they are sent (rebuild commands run in the checkout)."""
    cfg = target.deploy_host
    cmds = host_commands(cfg.checkout_dir, cfg.rebuild, revert_sha)
    return [build_command(argv, None if i < 2 else cfg.checkout_dir) for i, argv in enumerate(cmds)]
