"""RabbitMQ for the sandbox target: a private node on loopback, its own epmd, the management API.

Debian's `rabbitmq-server` package, run as this user from the stack home, never as the system
service: node `rp-sandbox@localhost`; AMQP, management (`/api/queues`, seed 003) and Erlang
distribution on 127.0.0.1 only; its own `epmd` on a private port (never the machine's 4369) that
the stack starts first and stops last, so `down` leaves no beam or epmd behind.

Users come from a definitions file imported at boot (password hashes only, mode 0600), so the
default `guest` is never created: `rp-admin` (administrator: the stack seeds queues with it) and
`rp-monitor` (tag `monitoring`, no messaging rights: the inventory's read-only evidence user).

Erlang boots slowly (10-15 s here): `start()` launches the node and returns; a thread waits for the
management API and seeds the queues while the stack starts everything else; `wait()` joins it.
Each start leaves exactly the `QUEUES` depths: the queues are purged, then filled.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
from pathlib import Path
from urllib.parse import quote

import httpx

from sandbox.stack.processes import is_running, port_open, read_pid, start_detached, stop, wait_until

__all__ = ["ADMIN_USER", "MONITOR_USER", "NODE", "QUEUES", "RabbitMqServer", "password_hash"]

NODE = "rp-sandbox@localhost"
ADMIN_USER = "rp-admin"
MONITOR_USER = "rp-monitor"
#: The platform's work queues and the depths each start leaves (what `/api/queues` then shows).
QUEUES: dict[str, int] = {
    "wallet.deposit-callbacks": 42,
    "wallet.withdraw-payouts": 17,
    "provider.settle-retries": 5,
    "notifications.email": 0,
}
#: Debian's layout; a `rabbitmq-server` on PATH elsewhere is the upstream script itself. Debian's
#: /usr/sbin one is a wrapper that switches to the system `rabbitmq` user: not that one.
_DEBIAN_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + sha256(salt + password)), 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _find(name: str, debian: Path | None = None) -> str:
    if debian is not None and debian.is_file():
        return str(debian)
    found = shutil.which(name)
    if found is None or found == "/usr/sbin/rabbitmq-server":
        raise RuntimeError(f"{name} is not installed (Debian package rabbitmq-server; scripts/bootstrap)")
    return found


class RabbitMqServer:
    def __init__(self, home: Path, *, port: int, management_port: int, dist_port: int, epmd_port: int,
                 admin_password: str, monitor_password: str) -> None:
        self.port, self.management_port, self.dist_port, self.epmd_port = port, management_port, dist_port, epmd_port
        self.admin_password, self.monitor_password = admin_password, monitor_password
        self.base = home / "rabbitmq"
        self.pid_file = home / "run" / "rabbitmq.pid"
        self.log_file = home / "logs" / "rabbitmq.log"
        self.epmd_pid_file = home / "run" / "rabbitmq-epmd.pid"
        self.epmd_log_file = home / "logs" / "rabbitmq-epmd.log"
        self.management_url = f"http://127.0.0.1:{management_port}"
        #: Set by `start()` when it launched the node: the queues are seeded once it answers.
        self._launched = False
        #: `start()`'s background wait-and-seed, and how it ended (seeded, or the error to raise).
        self._ready: threading.Thread | None = None
        self._outcome: bool | BaseException = False

    # --- processes -------------------------------------------------------------------------------
    def running(self) -> bool:
        return is_running(self.pid_file) and port_open("127.0.0.1", self.management_port)

    def epmd_running(self) -> bool:
        return is_running(self.epmd_pid_file)

    def start(self) -> bool:
        """Launch the node (and its epmd) unless running; returns at once. True if it launched."""
        if is_running(self.pid_file):
            return False
        script = _find("rabbitmq-server", _DEBIAN_SCRIPT)
        self._write_config()
        if not (self.epmd_running() and port_open("127.0.0.1", self.epmd_port)):
            stop(self.epmd_pid_file)
            start_detached([_find("epmd"), "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                           pid_file=self.epmd_pid_file, log_file=self.epmd_log_file)
            wait_until(lambda: port_open("127.0.0.1", self.epmd_port), timeout_s=15, what="rabbitmq epmd",
                       log_file=self.epmd_log_file)
        start_detached([script], pid_file=self.pid_file, log_file=self.log_file, env=self._env(), cwd=self.base)
        self._launched = True
        self._ready = threading.Thread(target=self._wait_in_background, name="rabbitmq-ready", daemon=True)
        self._ready.start()
        return True

    def _wait_in_background(self) -> None:
        try:
            self._outcome = self._wait_and_seed(120)
        except BaseException as exc:  # handed to whoever calls wait()
            self._outcome = exc

    def wait(self, timeout_s: float = 120) -> bool:
        """Block until the management API answers and the queues are seeded (by `start()`'s thread, or
        here when the node was already running and a queue is missing). True when they were seeded."""
        if self._ready is not None:
            self._ready.join()
            self._ready, outcome = None, self._outcome
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return self._wait_and_seed(timeout_s)

    def _wait_and_seed(self, timeout_s: float) -> bool:
        wait_until(self._answers, timeout_s=timeout_s, what="rabbitmq management API", log_file=self.log_file)
        if not self._launched and set(QUEUES) <= set(self.depths()):
            return False
        self.seed_queues()
        self._launched = False
        return True

    def begin_stop(self) -> None:
        """SIGTERM to the node's process group: its orderly shutdown (about 5 s) overlaps other stops."""
        pid = read_pid(self.pid_file)
        if pid is not None and is_running(self.pid_file):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)

    def stop(self) -> bool:
        """The node, then its epmd (nothing left registered with it); SIGKILL past the grace period."""
        stopped = stop(self.pid_file, grace_s=20)
        return stop(self.epmd_pid_file) or stopped

    # --- configuration ---------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        b = self.base
        return {
            # Not the caller's environment: a test or a runbook shell may hold the target's secrets.
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "HOME": str(b),  # the node's .erlang.cookie lives here, not in ~
            "RABBITMQ_NODENAME": NODE,
            "RABBITMQ_CONF_ENV_FILE": str(b / "rabbitmq-env.conf"),  # absent: not /etc/rabbitmq's
            "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(b / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
            "RABBITMQ_LOG_BASE": str(b / "log"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(b / "plugins-expand"),
            "RABBITMQ_PID_FILE": str(b / "node.pid"),
            "RABBITMQ_LOGS": "-",  # to stdout: the stack's log file
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # Idle schedulers sleep instead of spinning: the machine runs the whole stack.
            "RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD": "none",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _write_config(self) -> None:
        b = self.base
        for sub in ("mnesia", "log", "plugins-expand"):
            (b / sub).mkdir(parents=True, exist_ok=True)
        (b / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (b / "rabbitmq.conf").write_text("\n".join([
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            f"management.tcp.port = {self.management_port}",
            "management.tcp.ip = 127.0.0.1",
            f"load_definitions = {b / 'definitions.json'}",
            "collect_statistics_interval = 1000",  # queue depths in /api/queues within a second
            "log.console = true",
            "log.console.level = warning",
            "log.file = false",
            "",
        ]))
        definitions = {
            "users": [
                {"name": ADMIN_USER, "password_hash": password_hash(self.admin_password),
                 "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]},
                {"name": MONITOR_USER, "password_hash": password_hash(self.monitor_password),
                 "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["monitoring"]},
            ],
            "vhosts": [{"name": "/"}],
            "permissions": [
                {"user": ADMIN_USER, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
                {"user": MONITOR_USER, "vhost": "/", "configure": "^$", "write": "^$", "read": "^$"},
            ],
        }
        path = b / "definitions.json"
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(json.dumps(definitions, indent=2))

    # --- data ------------------------------------------------------------------------------------
    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.management_url, auth=(ADMIN_USER, self.admin_password), timeout=10)

    def _answers(self) -> bool:
        try:
            with self.admin() as http:
                return http.get("/api/overview").status_code == 200
        except httpx.HTTPError:
            return False

    def seed_queues(self) -> None:
        """Exactly `QUEUES`' depths: declare each (durable), purge it, publish persistent messages."""
        with self.admin() as http:
            for name, depth in QUEUES.items():
                path = f"/api/queues/%2F/{quote(name, safe='')}"
                http.put(path, json={"durable": True, "auto_delete": False, "arguments": {}}).raise_for_status()
                http.delete(f"{path}/contents").raise_for_status()
                for n in range(depth):
                    resp = http.post("/api/exchanges/%2F/amq.default/publish", json={
                        "properties": {"delivery_mode": 2}, "routing_key": name,
                        "payload": json.dumps({"seq": n, "queue": name}), "payload_encoding": "string"})
                    resp.raise_for_status()
                    if not resp.json().get("routed"):
                        raise RuntimeError(f"rabbitmq did not route a seed message to {name}")

    def depths(self) -> dict[str, int | None]:
        """Queue depths as the management API reports them now (None before its first statistics)."""
        with self.admin() as http:
            resp = http.get("/api/queues", params={"columns": "name,messages"})
            resp.raise_for_status()
            return {q["name"]: q.get("messages") for q in resp.json()}
