"""Read-only tasks on the deploy host, over SSH."""

from __future__ import annotations

import shlex
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from prefect import task
from pydantic import BaseModel

from remediation.clients.remote_host import ParamikoHost
from remediation.evidence.bundle import CollectorRecord, EvidenceFile
from remediation.target import connect
from remediation.target.evidence_profile import EvidenceProfile
from remediation.target.inventory import Target
from tasks.evidence import CollectorSpec, collect
from tasks.policy import READ_ONLY

__all__ = [
    "DeployRecord", "DeployedRevision", "capture_host_command", "capture_host_git", "close_evidence_hosts",
    "get_deployed_revision",
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


# --- evidence capture (capture-evidence): output streamed through redaction to the bundle ---------

#: Keep little of each stream in memory: evidence goes to disk line by line, not via CommandResult.
_EVIDENCE_OUTPUT_CAP = 64 * 1024


#: Channels one shared connection carries at once (OpenSSH's MaxSessions defaults to 10).
_CHANNELS_PER_HOST = 8


class _SharedHost:
    def __init__(self, host: ParamikoHost) -> None:
        self.host = host
        self.connecting = threading.Lock()
        self.channels = threading.BoundedSemaphore(_CHANNELS_PER_HOST)


_shared: dict[tuple[str, int, str, str, str], _SharedHost] = {}
_shared_lock = threading.Lock()


@contextmanager
def _evidence_host(target: Target, name: str) -> Iterator[ParamikoHost]:
    """The host's one SSH connection for this process's collectors, opened by the first to need it.

    A capture runs its host collectors concurrently; each used to pay its own handshake (key
    exchange and auth are CPU-heavy in paramiko). They now share one connection, one channel
    each. A connection found dead is reopened; `close_evidence_hosts()` ends them all.
    """
    cfg = target.hosts[name]
    key_path = cfg.key.resolve().get_secret_value()
    ident = (cfg.address, cfg.port, cfg.user, key_path, str(cfg.known_hosts))
    with _shared_lock:
        shared = _shared.get(ident)
        if shared is None:
            shared = _shared[ident] = _SharedHost(ParamikoHost(
                cfg.address, cfg.port, cfg.user, key_path=key_path, known_hosts_path=str(cfg.known_hosts),
                connect_timeout=cfg.connect_timeout_s, command_timeout=cfg.command_timeout_s,
                output_cap_bytes=_EVIDENCE_OUTPUT_CAP,
            ))
    with shared.channels:
        with shared.connecting:
            shared.host.connect()  # no-op while the connection is up
        yield shared.host


def close_evidence_hosts() -> None:
    """Close every shared evidence connection (end of a capture run)."""
    with _shared_lock:
        hosts = list(_shared.values())
        _shared.clear()
    for shared in hosts:
        shared.host.close()


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
        with _evidence_host(target, spec.host) as host:  # type: ignore[arg-type]
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
        with _evidence_host(target, spec.host) as host:  # type: ignore[arg-type]
            return _stream(host, spec.argv, out, spec.timeout_s)

    return collect(spec, out_dir, target, profile, body)
