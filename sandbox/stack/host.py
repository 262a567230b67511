"""The deploy host: a `servers_v2` checkout whose origin is a local bare repo, and its rebuild script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = ["DeployHost"]

TEMPLATE = Path(__file__).resolve().parent.parent / "release_template"
BRANCH = "main"


def _git(args: list[str], cwd: Path | None = None, *, when: datetime | None = None,
         author: str = "Platform Backend <platform@example.test>") -> str:
    env = dict(os.environ)
    name, _, mail = author.partition(" <")
    env.update({
        "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": mail.rstrip(">"),
        "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": mail.rstrip(">"),
        "GIT_TERMINAL_PROMPT": "0",
    })
    if when is not None:
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S+0000")
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = stamp
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


class DeployHost:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.remote = home / "git" / "servers_v2.git"
        self.root = home / "host"
        self.checkout = self.root / "servers_v2"
        self.rebuild_script = self.root / "bin" / "sandbox-rebuild"

    def exists(self) -> bool:
        return (self.remote / "HEAD").exists() and (self.checkout / ".git").exists()

    def create(self, *, force: bool = False) -> None:
        """A bare origin with a few days of history, and the host's clone of it."""
        if self.exists() and not force:
            self._write_rebuild_script()
            return
        shutil.rmtree(self.remote, ignore_errors=True)
        shutil.rmtree(self.checkout, ignore_errors=True)
        self.remote.parent.mkdir(parents=True, exist_ok=True)
        _git(["init", "--bare", "-q", "-b", BRANCH, str(self.remote)])
        now = datetime.now(UTC)
        with tempfile.TemporaryDirectory(prefix="rp-seed-") as tmp:
            work = Path(tmp) / "servers_v2"
            _git(["clone", "-q", str(self.remote), str(work)])
            _git(["checkout", "-q", "-b", BRANCH], cwd=work)
            shutil.copytree(TEMPLATE, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            _git(["add", "-A"], cwd=work)
            _git(["commit", "-q", "-m", "servers_v2: initial import"], cwd=work, when=now - timedelta(days=5))
            readme = work / "README.md"
            readme.write_text(readme.read_text() + "\nDeploys: pull on the host, then run the rebuild.\n")
            _git(["commit", "-q", "-am", "docs: how the host deploys"], cwd=work, when=now - timedelta(days=2))
            _git(["push", "-q", "origin", BRANCH], cwd=work)
        self.checkout.parent.mkdir(parents=True, exist_ok=True)
        _git(["clone", "-q", "-b", BRANCH, str(self.remote), str(self.checkout)])
        self._write_rebuild_script()

    def _write_rebuild_script(self) -> None:
        # Generated, not committed: it names this machine's interpreter. The committed inventory
        # names only this script's fixed path, as a real inventory names a host's deploy command.
        self.rebuild_script.parent.mkdir(parents=True, exist_ok=True)
        self.rebuild_script.write_text(
            "#!/bin/sh\n"
            "# Rebuild = restart the gateway from this host's servers_v2 checkout (no Docker here;\n"
            "# a compose target runs `docker compose ... up -d --build` instead).\n"
            f"exec {sys.executable} -m sandbox.stack restart-gateway\n"
        )
        self.rebuild_script.chmod(0o755)

    def head(self) -> str:
        return _git(["rev-parse", "HEAD"], cwd=self.checkout)

    def push_commit(self, files: dict[str, str], message: str,
                    author: str = "Dev Eloper <dev@example.test>") -> str:
        """Commit `files` on top of origin/main from a scratch clone, as a developer would; return sha."""
        with tempfile.TemporaryDirectory(prefix="rp-dev-") as tmp:
            work = Path(tmp) / "servers_v2"
            _git(["clone", "-q", "-b", BRANCH, str(self.remote), str(work)])
            for rel, content in files.items():
                path = work / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
            _git(["add", "-A"], cwd=work)
            _git(["commit", "-q", "-m", message], cwd=work, author=author, when=datetime.now(UTC))
            sha = _git(["rev-parse", "HEAD"], cwd=work)
            _git(["push", "-q", "origin", BRANCH], cwd=work)
        return sha

    def pull(self) -> str:
        """What the deploy pipeline does on the host before the rebuild."""
        _git(["pull", "-q", "--ff-only", "origin", BRANCH], cwd=self.checkout)
        return self.head()
