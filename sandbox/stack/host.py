"""The deploy host: a `servers_v2` checkout whose origin is a local bare repo, and its rebuild script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sandbox.config import WALLET_REQUIRED_SETTING

__all__ = ["DeployHost", "NothingToCommit"]

TEMPLATE = Path(__file__).resolve().parent.parent / "release_template"
BRANCH = "main"


class NothingToCommit(RuntimeError):
    """The files pushed are already on the branch as given."""


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
        #: The host's service manager for restart-service (compose/systemd/kubectl on a real host).
        self.service_script = self.root / "bin" / "sandbox-service"
        #: The wallet's env file (compose `env_file`): the crashloop fault takes a setting out of it.
        self.wallet_env = self.root / "wallet.env"

    def exists(self) -> bool:
        return (self.remote / "HEAD").exists() and (self.checkout / ".git").exists()

    def create(self, *, force: bool = False) -> None:
        """A bare origin with a few days of history, and the host's clone of it."""
        self._write_wallet_env()
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
            "# a compose target runs `docker compose ... up -d --build` instead). The service manager's\n"
            "# own module: it starts in a third of the time the whole stack's CLI takes to import.\n"
            f"exec {sys.executable} -m sandbox.stack.service_control restart gateway --wait\n"
        )
        self.rebuild_script.chmod(0o755)
        # `status` is asked every 2 s while a restarted instance comes up: plain sh, no interpreter start-up.
        # It prints the same line as service_control.status_line (pid, start time to the clock tick).
        run = self.home / "run"
        self.service_script.write_text(
            "#!/bin/sh\n"
            "# restart|status|logs <instance>: what `docker compose restart <svc>` or `systemctl restart <unit>`\n"
            "# is on a real host, for the sandbox's processes.\n"
            f'if [ "$1" = status ] && [ -f "{run}/$2.pid" ] && [ -z "$3" ]; then\n'
            f'  name=$2; pidfile="{run}/$2.pid"; pid=$(cat "$pidfile" 2>/dev/null || true)\n'
            '  stat=$(cat "/proc/$pid/stat" 2>/dev/null || true)\n'
            '  if [ -n "$pid" ] && [ -n "$stat" ]; then\n'
            '    set -- "$2" $(echo "${stat##*)}")\n'
            '    if [ "$2" != Z ]; then\n'
            "      boot=$(awk '/^btime/ {print $2}' /proc/stat); hz=$(getconf CLK_TCK)\n"
            '      started=$(awk -v b="$boot" -v t="${21}" -v hz="$hz" \'BEGIN { printf "%.3f", b + t / hz }\')\n'
            '      # ours: the start recorded beside the pid file (processes.is_running); a pid file without\n'
            '      # one: started no later than the pid file was written (a reused pid is not the recorded one)\n'
            '      rec=$(cat "$pidfile.start" 2>/dev/null || true)\n'
            '      if [ "${rec%% *}" = "$pid" ]; then ours=$([ "$rec" = "$pid ${21}" ] && echo 1 || echo 0)\n'
            '      else ours=$(awk -v s="$started" -v m="$(stat -c %Y "$pidfile")" \'BEGIN { print (s <= m + 1) }\')\n'
            '      fi\n'
            '      if [ "$ours" = 1 ]; then\n'
            '        at=$(date -u -d "@$started" +%Y-%m-%dT%H:%M:%S.%3N+00:00)\n'
            '        echo "$name running pid=$pid started=$at"; exit 0\n'
            "      fi\n"
            "    fi\n"
            "  fi\n"
            '  echo "$name stopped"; exit 0\n'
            "fi\n"
            f"exec {sys.executable} -m sandbox.stack.service_control \"$@\"\n"
        )
        self.service_script.chmod(0o755)

    def _write_wallet_env(self, *, force: bool = False) -> None:
        if force or not self.wallet_env.exists():
            self.wallet_env.parent.mkdir(parents=True, exist_ok=True)
            self.wallet_env.write_text(
                f"# the wallet's settings on this host (compose env_file)\n{WALLET_REQUIRED_SETTING}=EUR\n")

    def break_wallet_env(self, broken: bool) -> None:
        """The crashloop fault: the wallet's required setting removed from its env file (or put back)."""
        if not broken:
            self._write_wallet_env(force=True)
            return
        lines = self.wallet_env.read_text().splitlines() if self.wallet_env.exists() else []
        kept = [line for line in lines if not line.startswith(WALLET_REQUIRED_SETTING)]
        self.wallet_env.write_text("".join(f"{line}\n" for line in kept))

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
            if not _git(["status", "--porcelain"], cwd=work):
                raise NothingToCommit(f"origin/{BRANCH} already has these files as given")
            _git(["commit", "-q", "-m", message], cwd=work, author=author, when=datetime.now(UTC))
            sha = _git(["rev-parse", "HEAD"], cwd=work)
            _git(["push", "-q", "origin", BRANCH], cwd=work)
        return sha

    def pull(self) -> str:
        """What the deploy pipeline does on the host before the rebuild."""
        _git(["pull", "-q", "--ff-only", "origin", BRANCH], cwd=self.checkout)
        return self.head()
