"""The deploy host's OpenSSH server on loopback, with its own host key and one client key."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

from sandbox.stack.processes import is_running, port_open, read_pid, stop, wait_until

__all__ = ["SshServer"]


class SshServer:
    def __init__(self, home: Path, port: int) -> None:
        self.dir = home / "ssh"
        self.port = port
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key = self.dir / "id_ed25519"
        self.authorized_keys = self.dir / "authorized_keys"
        self.known_hosts = self.dir / "known_hosts"
        self.config = self.dir / "sshd_config"
        self.pid_file = home / "run" / "sshd.pid"
        self.log_file = home / "logs" / "sshd.log"
        self.user = getpass.getuser()

    @staticmethod
    def binary() -> str:
        path = shutil.which("sshd") or "/usr/sbin/sshd"
        if not Path(path).exists():
            raise RuntimeError("sshd not found; install Debian's `openssh-server` (scripts/bootstrap does this)")
        return path

    def _keygen(self, path: Path, comment: str) -> None:
        if not path.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                check=True, capture_output=True,
            )

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self._keygen(self.host_key, "rp-sandbox-host")
        self._keygen(self.client_key, "rp-sandbox-runbooks")
        self.authorized_keys.write_text(Path(str(self.client_key) + ".pub").read_text())
        self.authorized_keys.chmod(0o600)
        host_pub = Path(str(self.host_key) + ".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.config.write_text(
            "\n".join([
                f"Port {self.port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {self.host_key}",
                f"PidFile {self.pid_file}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                f"AllowUsers {self.user}",
                # The state dir lives under /tmp, whose permissions StrictModes rejects.
                "StrictModes no",
                "UsePAM no",
                "PrintMotd no",
                "MaxStartups 50:30:100",
                "MaxSessions 50",
                # Debian's bash sources ~/.bashrc for every command sshd runs unless it believes it is
                # nested; the sandbox shares the machine's root account, whose rc files are the
                # developer's (pyenv init costs 0.3 s of CPU per command). A deploy host's shell would
                # not carry a workstation's rc, so neither does the sandbox's.
                "SetEnv SHLVL=1",
                "ClientAliveInterval 15",
                "LogLevel VERBOSE",
                "",
            ])
        )

    def running(self) -> bool:
        return is_running(self.pid_file) and port_open("127.0.0.1", self.port)

    def start(self) -> None:
        self.prepare()
        if self.running():
            return
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # sshd daemonises itself and writes PidFile; -E sends its log to our file.
        subprocess.run(
            [self.binary(), "-f", str(self.config), "-E", str(self.log_file)], check=True, capture_output=True
        )
        wait_until(self.running, timeout_s=15, what="sshd", log_file=self.log_file)

    def stop(self) -> bool:
        pid = read_pid(self.pid_file)
        if pid is None:
            return False
        # sshd is its own session leader after daemonising, so the group kill reaches only it
        # and its pre-auth children; established sessions exit when their client goes.
        return stop(self.pid_file)
