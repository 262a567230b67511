"""Read-only tasks on the deploy host, over SSH."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from pydantic import BaseModel

from remediation import connect
from remediation.inventory import Target
from remediation.policy import READ_ONLY

__all__ = ["DeployRecord", "DeployedRevision", "get_deployed_revision"]

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
    with connect.remote_host(target) as host:
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
