"""HAProxy in front of the Prefect API servers: what the UI, workers, flows and the CLI talk to.

Round robin over the healthy servers (`GET /api/health` every second); a server that refuses a
connection is out at once (two failed checks otherwise) and back after one good check. Long
timeouts for the event stream's websocket (`/api/events/out`), which the warm runners keep open.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sandbox.stack.processes import is_running, port_open, start_detached, stop, wait_until

__all__ = ["LoadBalancer"]

_CONFIG = """global
    maxconn 4096
defaults
    mode http
    option http-server-close
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-request 30s
    # A server killed mid-flight: a request that could not connect, or (GET/HEAD only) got no answer,
    # goes to the other server; a POST that may have been applied is left to the client's own retry
    # (Prefect's client retries 502/503).
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
frontend prefect
    bind 127.0.0.1:{port}
    default_backend prefect_api
backend prefect_api
    balance roundrobin
    http-request disable-l7-retry unless METH_GET || METH_HEAD
    option httpchk GET /api/health
    http-check expect status 200
    # Out after its first failed connection (not after two failed checks), back after one good check.
    default-server inter 1s fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down
{servers}
"""


class LoadBalancer:
    def __init__(self, home: Path, port: int, backends: list[int]) -> None:
        self.port, self.backends = port, backends
        self.config = home / "haproxy.cfg"
        self.pid_file = home / "run" / "haproxy.pid"
        self.log_file = home / "logs" / "haproxy.log"

    def running(self) -> bool:
        return is_running(self.pid_file) and port_open("127.0.0.1", self.port)

    def start(self) -> None:
        if self.running():
            return
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise RuntimeError("haproxy is not installed (Debian package haproxy; scripts/bootstrap)")
        servers = "\n".join(f"    server api{i} 127.0.0.1:{p} check" for i, p in enumerate(self.backends, 1))
        self.config.write_text(_CONFIG.format(port=self.port, servers=servers))
        # -db: stay in the foreground (our pid file, our process group); -W: master-worker.
        start_detached([binary, "-db", "-W", "-f", str(self.config)], pid_file=self.pid_file, log_file=self.log_file)
        wait_until(lambda: port_open("127.0.0.1", self.port), timeout_s=30, what="haproxy", log_file=self.log_file)

    def stop(self) -> bool:
        return stop(self.pid_file)
